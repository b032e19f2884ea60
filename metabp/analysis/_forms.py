r"""Named simple forms fitted to a b-function ``g``: what a found ``g`` is, in a few numbers.

Every fit is least squares on a uniform grid ``z_1 .. z_n`` over ``[-zmax, zmax]`` (the
pre-activations a layer sees), and every form is a b-function of the core's public kinds, so it
saves as a ``.bfn`` and trains like any other:

* scaled derivative, :math:`c\,\sigma'(z)` with :math:`c = \sum g\sigma' / \sum \sigma'^2`
  (``Scaled(c)``);
* leaky backward, :math:`s\,(1[z > 0] + c\,1[z \le 0])` (ReLU-like activations only): the mean
  of ``g`` on each side of 0;
* ``k``-level step, :math:`L_m` on :math:`(t_m, t_{m+1}]`: the thresholds minimising the squared
  error, each level the mean of ``g`` between them (exhaustive over grid midpoints);
* piecewise-linear with ``K`` knots, flat outside ``[-zmax, zmax]``: knots chosen greedily from
  a 0.1 grid, slopes by least squares.

Steps are ``MetaNet(act="tanh")`` with one unit per threshold,
:math:`\tfrac{d_m}{2}(\tanh(W(z - t_m)) + 1)` with :data:`STEEP` ``W``, a step up to the table's
resolution; piecewise-linear is ``MetaNet(act="relu")`` with one unit per knot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metabp import BFunction, MetaNet, PerSite, Scaled, get_activation

STEEP = 1e4  # slope W of a step's tanh unit: its transition (~2/W) is below one table cell
GRID = 1601  # grid points on [-zmax, zmax] (odd: z = 0 is on it)
MIN_SEGMENT = GRID // 100  # grid points a step's level spans at least
RELU_LIKE = ("relu",)  # activations whose derivative is a step at 0 (leaky backward is defined)


@dataclass
class Form:
    """A named simple form fitted to ``g``.

    Attributes:
        name: e.g. ``"3-level step"``.
        params: the fitted numbers (``c``; ``thresholds`` and ``levels``; ``knots`` and ``values``).
        bfn: the form as a b-function (saves as a ``.bfn``); for a form set over sites, the
            ``PerSite`` of each site's form.
        rms: root-mean-square of ``form - g`` on the grid.
        rel: ``rms`` over the root-mean-square of ``g`` (0: exact).
    """

    name: str
    params: dict[str, Any]
    bfn: BFunction | PerSite
    rms: float = 0.0
    rel: float = 0.0
    text: str = field(default="")


def grid(zmax: float) -> torch.Tensor:
    """The fitting grid: :data:`GRID` points on ``[-zmax, zmax]``, float64, with ``z = 0`` exactly."""
    half = GRID // 2
    return torch.arange(-half, half + 1, dtype=torch.float64) * (zmax / half)


def values(bfn: BFunction, z: torch.Tensor, activation: str) -> np.ndarray:
    """``g(z)`` as float64 numpy."""
    return bfn(z, activation).detach().double().numpy()


def _finish(form: Form, g: np.ndarray, z: torch.Tensor, activation: str) -> Form:
    """Measure ``form``'s error from its b-function's own values (what training uses)."""
    diff = values(form.bfn, z, activation) - g
    form.rms = float(np.sqrt(np.mean(diff**2)))
    scale = float(np.sqrt(np.mean(g**2)))
    form.rel = form.rms / scale if scale > 0 else (0.0 if form.rms == 0 else float("inf"))
    return form


def fit_scaled(g: np.ndarray, z: torch.Tensor, activation: str) -> Form:
    r"""``c * sigma'`` with the least-squares ``c``."""
    d = get_activation(activation).derivative(z).double().numpy()
    c = float(np.dot(g, d) / np.dot(d, d))
    return _finish(Form("scaled derivative", {"c": c}, Scaled(c), text=f"c = {c:.4g}"), g, z, activation)


def step_bfn(thresholds: list[float], levels: list[float]) -> MetaNet:
    """A ``k``-level step as a tanh ``MetaNet``: ``levels[0]`` below ``thresholds[0]``, ... ."""
    jumps = np.diff(levels)
    w1 = [STEEP] * len(thresholds)
    b1 = [-STEEP * t for t in thresholds]
    w2 = [d / 2 for d in jumps]
    b2 = levels[0] + float(np.sum(jumps)) / 2
    return MetaNet(len(thresholds), "tanh", omega=[*w1, *b1, *w2, b2])


def fit_leaky(g: np.ndarray, z: torch.Tensor, activation: str) -> Form | None:
    """``s * (1[z > 0] + c 1[z <= 0])``; None unless ``activation`` is ReLU-like or ``s = 0``."""
    if get_activation(activation).name not in RELU_LIKE:
        return None
    right = z.numpy() > 0
    s, low = float(g[right].mean()), float(g[~right].mean())
    if s == 0:
        return None
    c = low / s
    form = Form("leaky backward", {"c": c, "scale": s}, step_bfn([0.0], [low, s]),
                text=f"c = {c:.4g}, scale {s:.4g}")
    return _finish(form, g, z, activation)


def _sse(s1: np.ndarray, s2: np.ndarray, i: Any, j: Any) -> Any:
    """Squared error of the mean on the segment ``[i, j)`` from prefix sums (broadcasts)."""
    n = j - i
    total = s1[j] - s1[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, s2[j] - s2[i] - total**2 / np.maximum(n, 1), np.inf)


def fit_steps(g: np.ndarray, z: torch.Tensor, activation: str, k: int) -> Form:
    """The best ``k``-level step (``k`` = 2 or 3): thresholds at grid midpoints, levels the means."""
    n = g.size
    s1 = np.concatenate([[0.0], np.cumsum(g)])
    s2 = np.concatenate([[0.0], np.cumsum(g * g)])
    idx = np.arange(MIN_SEGMENT, n - MIN_SEGMENT + 1)
    if k == 2:
        cost = _sse(s1, s2, 0, idx) + _sse(s1, s2, idx, n)
        cuts = [int(idx[np.argmin(cost)])]
    elif k == 3:
        i, j = idx[:, None], idx[None, :]
        total = _sse(s1, s2, 0, i) + _sse(s1, s2, i, j) + _sse(s1, s2, j, n)
        cost = np.where(j - i >= MIN_SEGMENT, total, np.inf)
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        cuts = [int(idx[a]), int(idx[b])]
    else:
        raise ValueError(f"k={k}: steps are fitted with 2 or 3 levels")
    zz = z.numpy()
    bounds = [0, *cuts, n]
    levels = [float(g[lo:hi].mean()) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    thresholds = [float((zz[c - 1] + zz[c]) / 2) for c in cuts]
    text = ", ".join(f"{v:.4g}" for v in levels) + " at z = " + ", ".join(f"{t:.3g}" for t in thresholds)
    form = Form(f"{k}-level step", {"thresholds": thresholds, "levels": levels},
                step_bfn(thresholds, levels), text=text)
    return _finish(form, g, z, activation)


def _basis(z: np.ndarray, zmax: float, knots: list[float]) -> np.ndarray:
    return np.stack([np.ones_like(z), np.maximum(z + zmax, 0)] + [np.maximum(z - t, 0) for t in knots], 1)


def fit_piecewise_linear(g: np.ndarray, z: torch.Tensor, activation: str, knots: int = 3) -> Form:
    """Continuous piecewise-linear with ``knots`` inner knots (greedy), flat beyond the grid."""
    zz = z.numpy()
    zmax = float(zz[-1])
    candidates = [float(t) for t in np.round(np.arange(-zmax + 0.1, zmax - 0.05, 0.1), 10)]
    chosen: list[float] = []
    for _ in range(knots):
        def sse(t: float) -> float:
            basis = _basis(zz, zmax, sorted([*chosen, t]))
            coef, *_ = np.linalg.lstsq(basis, g, rcond=None)
            return float(np.sum((basis @ coef - g) ** 2))
        chosen.append(min((t for t in candidates if t not in chosen), key=sse))
    chosen.sort()
    coef, *_ = np.linalg.lstsq(_basis(zz, zmax, chosen), g, rcond=None)
    slopes = [float(c) for c in coef[1:]]
    starts = [-zmax, *chosen, zmax]
    w2 = [*slopes, -sum(slopes)]  # the last unit flattens g beyond zmax
    omega = [1.0] * len(starts) + [-t for t in starts] + w2 + [float(coef[0])]
    bfn = MetaNet(len(starts), "relu", omega=omega)
    at = [float(v) for v in values(bfn, torch.tensor(starts, dtype=torch.float64), activation)]
    text = "; ".join(f"({t:.2g}, {v:.3g})" for t, v in zip(starts, at, strict=True))
    form = Form(f"piecewise-linear ({knots} knots)", {"knots": starts, "values": at}, bfn, text=text)
    return _finish(form, g, z, activation)


def fit_forms(bfn: BFunction, activation: str, *, zmax: float = 4.0, knots: int = 3) -> list[Form]:
    """Every named form fitted to ``bfn`` on ``[-zmax, zmax]``, most faithful last."""
    z = grid(zmax)
    g = values(bfn, z, activation)
    forms = [fit_scaled(g, z, activation), fit_leaky(g, z, activation), fit_steps(g, z, activation, 2),
             fit_steps(g, z, activation, 3), fit_piecewise_linear(g, z, activation, knots)]
    return [f for f in forms if f is not None]
