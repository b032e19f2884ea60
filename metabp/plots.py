r"""Plots of b-functions, implicit learning rates and loss curves (matplotlib, headless).

Every function draws on a fresh :class:`matplotlib.figure.Figure` with the Agg canvas (no
``pyplot``, no display, no global backend switch), writes a PNG to ``path`` and returns a
:class:`Plotted`: the path and the numbers it drew, so a caller (or a test) can check them.

The implicit learning rate (paper eq. 4) drawn by :func:`plot_implicit_lr` is

.. math:: \beta(z) = \alpha \, \frac{g(z)}{\sigma'(z)}, \qquad \sigma'(z) \neq 0,

undefined (NaN, shaded) where :math:`\sigma'(z) = 0`. With plain SGD it is exact; Adam-like
optimizers (``metabp._implicit_lr.SCALE_INVARIANT``) divide a constant factor of ``g`` back out,
so there only the *shape* of :math:`\beta` over ``z`` acts, not its level.

Example:
    >>> import tempfile, metabp
    >>> out = plot_implicit_lr(metabp.Scaled(0.5), "relu", lr=0.1,
    ...                        path=tempfile.mktemp(suffix=".png"))
    >>> float(out.data["beta"][-1])
    0.05
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import ActivationLike, BFunction
from metabp._implicit_lr import SCALE_INVARIANT, implicit_lr
from metabp.exceptions import ConfigError

_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
          "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
          "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")  # matplotlib's tab20, for more than 10 curves
DPI = 110  # small PNGs (tens of kB) that still read on a laptop screen
Z_RANGE = (-4.0, 4.0)  # where pre-activations of a normally initialised layer mostly lie
Z_POINTS = 401


@dataclass
class Plotted:
    """A written figure: ``path`` of the PNG and ``data``, the arrays it drew, by name."""

    path: Path
    data: dict[str, np.ndarray] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers
def _figure(ncols: int = 1, *, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"path={str(path)!r}: plots are written as PNG; give a name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _grid(z: Tensor | Sequence[float] | None) -> Tensor:
    if z is None:
        return torch.linspace(*Z_RANGE, Z_POINTS, dtype=torch.float64)
    z = torch.as_tensor(z, dtype=torch.float64).flatten()
    if z.numel() < 2:
        raise ConfigError(f"z has {z.numel()} points; give at least 2 pre-activation values to plot")
    return z


def optimizer_note(optimizer: str | None) -> str:
    """One line saying how to read ``g`` under ``optimizer`` (scale-invariant or SGD-like)."""
    if optimizer is None:
        return "beta(z) = lr g/sigma' is exact for plain SGD"
    name = optimizer.lower()
    if name in SCALE_INVARIANT:
        return f"{name} is scale-invariant: a constant factor in g cancels, only the shape of beta acts"
    return f"{name} is SGD-like: g = c*sigma' is exactly lr*c, beta(z) is the step size"


def bfunction_curves(
    bfn: BFunction, activation: ActivationLike = "relu", *, lr: float = 1.0, z: Tensor | None = None
) -> dict[str, np.ndarray]:
    r"""The numbers behind :func:`plot_implicit_lr`: ``z``, ``g(z)``, ``sigma'(z)``, ``beta(z)``.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces.
        lr: the learning rate :math:`\alpha` in :math:`\beta = \alpha g / \sigma'`.
        z: pre-activations, a 1-D tensor of ``n`` points; default ``linspace(-4, 4, 401)``.

    Returns:
        ``{"z", "g", "dsigma", "beta"}``, each a float64 array of ``n`` values; ``beta`` is NaN
        where ``sigma'(z) = 0``.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr={lr!r}: the learning rate must be a positive finite number")
    act = get_activation(activation)
    z = _grid(z)
    return {
        "z": z.numpy(),
        "g": bfn(z, act).double().numpy(),
        "dsigma": act.derivative(z).double().numpy(),
        "beta": implicit_lr(bfn, act, lr=lr, z=z).double().numpy(),
    }


# ----------------------------------------------------------------------------- b-functions
def plot_bfunction(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "bfunction.png",
    *,
    z: Tensor | None = None,
    label: str | None = None,
    title: str | None = None,
) -> Plotted:
    """``g(z)`` beside the ``sigma'(z)`` it replaces, on one axis.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces (drawn dashed as ``sigma'``).
        path: PNG to write.
        z: pre-activations, 1-D; default ``linspace(-4, 4, 401)``.
        label: legend text for ``g``; default its ``repr``.
        title: figure title.

    Returns:
        :class:`Plotted` with data ``z``, ``g``, ``dsigma``.
    """
    act = get_activation(activation)
    data = bfunction_curves(bfn, act, z=z)
    data.pop("beta")
    fig, (ax,) = _figure()
    ax.plot(data["z"], data["g"], lw=2, label=label or f"g = {bfn!r}")
    ax.plot(data["z"], data["dsigma"], "k--", lw=1, label=f"{act.name}' (replaced)")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)", title=title or "b-function")
    ax.legend(fontsize=8)
    return Plotted(_save(fig, path), data)


def plot_bfunctions(
    bfns: Mapping[str, BFunction],
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "bfunctions.png",
    *,
    z: Tensor | None = None,
    title: str | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Plotted:
    """Several b-functions on one axis (paper Fig. 1a), labelled by the mapping's keys.

    ``styles`` maps a label to extra ``Axes.plot`` keywords (e.g. ``{"ls": "--"}``).

    Returns:
        :class:`Plotted` with data ``z`` and one array of ``g(z)`` per key.
    """
    if not bfns:
        raise ConfigError("bfns is empty; give at least one {label: b-function}")
    act = get_activation(activation)
    zz = _grid(z)
    data: dict[str, np.ndarray] = {"z": zz.numpy()}
    fig, (ax,) = _figure()
    for label, g in bfns.items():
        data[label] = g(zz, act).double().numpy()
        ax.plot(data["z"], data[label], label=label, **{"lw": 1.6, **(styles or {}).get(label, {})})
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)", title=title or f"b-functions in place of {act.name}'")
    ax.legend(fontsize=8)
    return Plotted(_save(fig, path), data)


def plot_implicit_lr(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    lr: float = 1.0,
    path: str | os.PathLike = "implicit_lr.png",
    *,
    z: Tensor | None = None,
    optimizer: str | None = None,
    title: str | None = None,
) -> Plotted:
    r"""Two panels: ``g(z)`` with ``sigma'(z)``, and the implicit learning rate ``beta(z)``.

    :math:`\beta(z) = \alpha\, g(z) / \sigma'(z)` is drawn where :math:`\sigma'(z) \neq 0`; where
    :math:`\sigma'(z) = 0` it does not exist and the region is shaded (red if ``g`` is nonzero
    there, i.e. ``g`` injects credit plain backprop would not). The plain learning rate
    :math:`\alpha` is drawn as a dotted line for reference.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces.
        lr: the optimizer's learning rate :math:`\alpha`.
        path: PNG to write.
        z: pre-activations, 1-D; default ``linspace(-4, 4, 401)``.
        optimizer: the optimizer's name, if known; the title then says whether it is
            scale-invariant (Adam-like) or SGD-like.
        title: figure title; default a description of ``bfn``.

    Returns:
        :class:`Plotted` with data ``z``, ``g``, ``dsigma``, ``beta``.
    """
    act = get_activation(activation)
    data = bfunction_curves(bfn, act, lr=lr, z=z)
    zz, g, d, beta = data["z"], data["g"], data["dsigma"], data["beta"]
    fig, (ax_g, ax_b) = _figure(2)
    ax_g.plot(zz, g, lw=2, label="g(z)")
    ax_g.plot(zz, d, "k--", lw=1, label=f"{act.name}'(z)")
    ax_g.axhline(0, color="0.8", lw=0.8)
    ax_g.set(xlabel="pre-activation z", ylabel="factor in the backward pass", title="b-function")
    ax_g.legend(fontsize=8)

    ax_b.plot(zz, beta, lw=2, color="C2", label=r"$\beta(z) = \alpha\, g/\sigma'$")
    ax_b.axhline(lr, color="k", ls=":", lw=1, label=f"lr = {lr:g}")
    undefined = d == 0
    if undefined.any():
        credit = undefined & (g != 0)
        ax_b.fill_between(zz, 0, 1, where=undefined, transform=ax_b.get_xaxis_transform(),
                          color="0.9", label="sigma' = 0: no beta")
        if credit.any():
            ax_b.fill_between(zz, 0, 1, where=credit, transform=ax_b.get_xaxis_transform(),
                              color="C3", alpha=0.15, label="g != 0 there: injected credit")
    ax_b.set(xlabel="pre-activation z", ylabel="implicit learning rate beta(z)",
             title="implicit learning rate")
    ax_b.legend(fontsize=8)
    fig.suptitle(title or f"{bfn!r}\n{optimizer_note(optimizer)}", fontsize=9)
    return Plotted(_save(fig, path), data)


def plot_bfunction_spread(
    bfns: Sequence[BFunction],
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "spread.png",
    *,
    z: Tensor | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Plotted:
    """The spread of several candidates' ``g(z)``: each curve thin, their median and 10-90% band.

    Use it for the top candidates of a study: a tight band says the search agrees on a shape.

    Returns:
        :class:`Plotted` with data ``z``, ``curves`` (``k x n``), ``median``, ``q10``, ``q90``.
    """
    if len(bfns) == 0:
        raise ConfigError("bfns is empty; give at least one b-function")
    act = get_activation(activation)
    zz = _grid(z)
    curves = np.stack([g(zz, act).double().numpy() for g in bfns])
    data = {"z": zz.numpy(), "curves": curves, "median": np.median(curves, 0),
            "q10": np.quantile(curves, 0.1, 0), "q90": np.quantile(curves, 0.9, 0)}
    fig, (ax,) = _figure()
    ax.fill_between(data["z"], data["q10"], data["q90"], color="C0", alpha=0.2, label="10-90%")
    for i, c in enumerate(curves):
        ax.plot(data["z"], c, color="C0", lw=0.6, alpha=0.5,
                label=(labels[i] if labels is not None and i < 3 else None))
    ax.plot(data["z"], data["median"], color="C0", lw=2, label="median")
    ax.plot(data["z"], act.derivative(zz).numpy(), "k--", lw=1, label=f"{act.name}'")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)", title=title or f"top {len(bfns)} candidates")
    ax.legend(fontsize=8)
    return Plotted(_save(fig, path), data)


# ----------------------------------------------------------------------------- curves
def _as_runs(curves: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """One curve or several (seeds) -> ``seeds x steps``, shorter runs padded with NaN."""
    arr = list(curves)
    if len(arr) and np.ndim(arr[0]) == 0:
        arr = [arr]
    n = max((len(c) for c in arr), default=0)
    out = np.full((len(arr), n), np.nan)
    for i, c in enumerate(arr):
        out[i, : len(c)] = np.asarray(c, dtype=float)
    return out


def plot_loss_curves(
    curves: Mapping[str, Sequence[float] | Sequence[Sequence[float]]],
    path: str | os.PathLike = "loss.png",
    *,
    xlabel: str = "step",
    ylabel: str = "training loss",
    title: str | None = None,
    logy: bool = False,
    styles: Mapping[str, dict] | None = None,
) -> Plotted:
    """Loss curves by label: the mean over seeds as a line, min to max over seeds as a band.

    Args:
        curves: label -> one curve (``steps`` values) or several (``seeds x steps``).
            Non-finite values (a diverged run) are drawn as gaps.
        path: PNG to write.
        xlabel, ylabel, title: axis text.
        logy: log scale on the loss axis.
        styles: label -> extra ``Axes.plot`` keywords (e.g. ``{"ls": "--"}``).

    Returns:
        :class:`Plotted` with data ``{label}/mean``, ``{label}/min``, ``{label}/max``
        (``steps`` values each).
    """
    if not curves:
        raise ConfigError("curves is empty; give at least one {label: loss curve}")
    fig, (ax,) = _figure(width=6.4, height=4.2)
    data: dict[str, np.ndarray] = {}
    palette = [f"C{i}" for i in range(10)] if len(curves) <= 10 else list(_TAB20)
    for i, (label, c) in enumerate(curves.items()):
        runs = _as_runs(c)
        runs[~np.isfinite(runs)] = np.nan
        with np.errstate(all="ignore"), _quiet():
            mean, lo, hi = np.nanmean(runs, 0), np.nanmin(runs, 0), np.nanmax(runs, 0)
        data[f"{label}/mean"], data[f"{label}/min"], data[f"{label}/max"] = mean, lo, hi
        x = np.arange(1, runs.shape[1] + 1)
        kw = {"color": palette[i % len(palette)], "lw": 1.5, **(styles or {}).get(label, {})}
        ax.plot(x, mean, label=label if runs.shape[0] == 1 else f"{label} (n={runs.shape[0]})", **kw)
        if runs.shape[0] > 1:
            ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.15, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title or "training loss", fontsize=9)
    ax.legend(fontsize=7, ncols=2 if len(curves) > 6 else 1)
    return Plotted(_save(fig, path), data)


def best_so_far(values: Sequence[float]) -> np.ndarray:
    """Running minimum of ``values`` in order, ignoring NaN (``n`` values in, ``n`` out)."""
    arr = np.asarray(values, dtype=float)
    arr = np.where(np.isfinite(arr), arr, np.inf)
    out = np.minimum.accumulate(arr) if arr.size else arr
    return np.where(np.isinf(out), np.nan, out)


def plot_search_trace(
    traces: Mapping[str, Sequence[float]],
    path: str | os.PathLike = "trace.png",
    *,
    reference: Mapping[str, float] | None = None,
    ylabel: str = "AULC (lower is better)",
    title: str | None = None,
) -> Plotted:
    """Best value so far against trial number, one line per search (e.g. GP-EI, random, TPE).

    Args:
        traces: label -> the objective of each trial, in trial order.
        path: PNG to write.
        reference: label -> a constant drawn as a horizontal line (e.g. plain backprop's AULC).

    Returns:
        :class:`Plotted` with data ``{label}`` (the running minimum) and ``{label}/values``.
    """
    if not traces:
        raise ConfigError("traces is empty; give at least one {label: trial values}")
    fig, (ax,) = _figure(width=6.0, height=4.0)
    data: dict[str, np.ndarray] = {}
    for i, (label, vals) in enumerate(traces.items()):
        vals = np.asarray(vals, dtype=float)
        data[f"{label}/values"], data[label] = vals, best_so_far(vals)
        x = np.arange(1, len(vals) + 1)
        ax.scatter(x, vals, s=8, color=f"C{i}", alpha=0.35)
        ax.step(x, data[label], where="post", color=f"C{i}", lw=2, label=f"{label}: best so far")
    for j, (label, v) in enumerate((reference or {}).items()):
        ax.axhline(v, color="k", ls=(":", "--", "-.")[j % 3], lw=1, label=label)
    finite = np.concatenate([v[np.isfinite(v)] for k, v in data.items() if k.endswith("/values")] or [[]])
    if finite.size:  # clip so divergence penalties do not squash the interesting range
        best, mid = float(np.min(finite)), float(np.median(finite))
        refs = [float(v) for v in (reference or {}).values() if math.isfinite(v)]
        top = max([mid + 2 * (mid - best), *refs]) if mid > best else max([best * 1.5, *refs])
        ax.set_ylim(best - 0.05 * (top - best + 1e-12), top + 0.05 * (top - best + 1e-12))
        if (finite > top).any():
            ax.text(0.99, 0.99, f"{int((finite > top).sum())} trial(s) above the top edge",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.4")
    ax.set(xlabel="trial", ylabel=ylabel, title=title or "search progress")
    ax.legend(fontsize=8)
    return Plotted(_save(fig, path), data)


def plot_alignment(
    cosines: Mapping[str, Sequence[float]],
    path: str | os.PathLike = "alignment.png",
    *,
    title: str | None = None,
) -> Plotted:
    """Cosine between the true backprop gradient and the applied one, per layer, over steps.

    Returns:
        :class:`Plotted` with data ``{layer}`` (``steps`` cosines).
    """
    if not cosines:
        raise ConfigError("cosines is empty; give at least one {layer: cosines over steps}")
    fig, (ax,) = _figure(width=6.0, height=4.0)
    data = {k: np.asarray(v, dtype=float) for k, v in cosines.items()}
    for k, v in data.items():
        ax.plot(np.arange(1, len(v) + 1), v, lw=1.5, label=k)
    ax.axhline(1, color="0.7", lw=0.8)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set(xlabel="step", ylabel="cos(true grad, applied grad)",
           title=title or "gradient alignment with backprop")
    ax.legend(fontsize=8)
    return Plotted(_save(fig, path), data)


class _quiet:
    """Silence numpy's 'Mean of empty slice' warnings for all-NaN columns (diverged runs)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


__all__ = [
    "Plotted", "bfunction_curves", "optimizer_note", "plot_bfunction", "plot_bfunctions",
    "plot_implicit_lr", "plot_bfunction_spread", "plot_loss_curves", "best_so_far",
    "plot_search_trace", "plot_alignment",
]
