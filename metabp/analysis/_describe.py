"""What a b-function ``g`` looks like, in words: limits, levels, zeros, monotonicity, box edges.

Read on the fitting grid of :mod:`metabp.analysis._forms` (``[-zmax, zmax]``); the limits are
``g`` at ``z = -1e4`` and ``1e4``. ``sigma' = 0`` is where the activation ``g`` replaces passes
no credit back (``z <= 0`` for ReLU): what ``g`` is there is what it adds to backprop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from metabp import BFunction, MetaNet, get_activation
from metabp.analysis._forms import fit_steps, grid, values

FAR = 1e4  # |z| at which the limits of g are read
FLAT = 1e-9  # |g(z_i+1) - g(z_i)| below this (times max |g| + 1) counts as flat


@dataclass
class Description:
    """``g`` in numbers; :meth:`lines` says it in words."""

    zmax: float
    limits: tuple[float, float]
    span: tuple[float, float]
    zero_crossings: list[float]
    zero_on: list[tuple[float, float]]
    monotone: str
    turns: list[float]
    dead: tuple[float, float, float, float, float] | None  # mean, min, max of g where sigma' = 0; z range
    levels: tuple[list[float], list[float]] = ((), ())  # the best 3-level step: levels, thresholds
    edges: list[str] = field(default_factory=list)
    box: tuple[float, float] | None = None

    def _levels(self) -> str:
        (a, b, c), (s, t) = self.levels
        return (f"Levels (the best 3-level step): {a:.4g} below z = {s:.3g}, {b:.4g} up to z = {t:.3g}, "
                f"{c:.4g} above.")

    def lines(self) -> list[str]:
        zs = f"z in [-{self.zmax:g}, {self.zmax:g}]"
        out = [f"g(-inf) = {self.limits[0]:.4g}, g(+inf) = {self.limits[1]:.4g}; on {zs} g runs from "
               f"{self.span[0]:.4g} to {self.span[1]:.4g}.",
               self._levels(),
               "Zero crossings: " + (", ".join(f"z = {z:.3g}" for z in self.zero_crossings) or "none") + "."
               + "".join(f" g = 0 on [{a:.3g}, {b:.3g}]." for a, b in self.zero_on),
               f"Monotonicity: {self.monotone}"
               + (f" (turns at z = {', '.join(f'{t:.3g}' for t in self.turns)})." if self.turns else ".")]
        if self.dead is None:
            out.append(f"sigma' is nowhere 0 on {zs}.")
        else:
            mean, lo, hi, a, b = self.dead
            out.append(f"Where sigma' = 0 (z in [{a:.3g}, {b:.3g}]): g = {mean:.4g} on average "
                       f"(from {lo:.4g} to {hi:.4g}); backprop passes 0 there.")
        if self.box is None:
            out.append("Search box unknown (no study): box edges not checked.")
        else:
            on = ", ".join(self.edges) or "none"
            out.append(f"Weights on the edge of the box [{self.box[0]:g}, {self.box[1]:g}]: {on}.")
        return out


def omega_names(hidden: int) -> list[str]:
    """``w1_1 .. w1_H, b1_1 .. b1_H, w2_1 .. w2_H, b2``: omega's entries by name."""
    return [f"{p}_{k}" for p in ("w1", "b1", "w2") for k in range(1, hidden + 1)] + ["b2"]


def on_edge(bfn: BFunction, box: tuple[float, float] | None) -> list[str]:
    """Names (``w1_1 = -5``) of the meta-network weights within 1e-6 of the box's ends."""
    if box is None or not isinstance(bfn, MetaNet):
        return []
    lo, hi = box
    tol = 1e-6 * (hi - lo)
    names = omega_names(bfn.hidden)
    return [f"{n} = {w:g}" for n, w in zip(names, bfn.omega.tolist(), strict=True)
            if abs(w - lo) <= tol or abs(w - hi) <= tol]


def _zeros(z: np.ndarray, g: np.ndarray, flat: float) -> tuple[list[float], list[tuple[float, float]]]:
    zero = np.abs(g) <= flat
    crossings = []
    nz = np.flatnonzero(~zero)
    for a, b in zip(nz[:-1], nz[1:], strict=True):
        if np.sign(g[a]) != np.sign(g[b]):
            crossings.append(float(z[a] - g[a] * (z[b] - z[a]) / (g[b] - g[a])) if b == a + 1
                             else float((z[a + 1] + z[b - 1]) / 2))
    runs, start = [], None
    for i, flag in enumerate([*zero, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= 2:
                runs.append((float(z[start]), float(z[i - 1])))
            start = None
    return crossings, runs


def _monotone(z: np.ndarray, g: np.ndarray, flat: float) -> tuple[str, list[float]]:
    d = np.diff(g)
    sign = np.where(d > flat, 1, np.where(d < -flat, -1, 0))
    moving = np.flatnonzero(sign)
    if moving.size == 0:
        return "constant", []
    turns = [float(z[b]) for a, b in zip(moving[:-1], moving[1:], strict=True) if sign[a] != sign[b]]
    if not turns:
        return ("non-decreasing" if sign[moving[0]] > 0 else "non-increasing"), []
    return f"not monotone, {len(turns)} change(s) of direction", turns


def describe(bfn: BFunction, activation: str, *, zmax: float = 4.0,
             box: tuple[float, float] | None = None) -> Description:
    """Describe ``bfn`` replacing ``activation``'s derivative on ``[-zmax, zmax]``."""
    z = grid(zmax)
    g = values(bfn, z, activation)
    far = values(bfn, torch.tensor([-FAR, FAR], dtype=torch.float64), activation)
    flat = FLAT * (float(np.abs(g).max()) + 1)
    zz = z.numpy()
    crossings, zero_on = _zeros(zz, g, flat)
    monotone, turns = _monotone(zz, g, flat)
    dead_mask = get_activation(activation).derivative(z).double().numpy() == 0
    dead = None
    if dead_mask.any():
        gd, zd = g[dead_mask], zz[dead_mask]
        dead = (float(gd.mean()), float(gd.min()), float(gd.max()), float(zd.min()), float(zd.max()))
    step = fit_steps(g, z, activation, 3).params
    return Description(zmax, (float(far[0]), float(far[1])), (float(g.min()), float(g.max())), crossings,
                       zero_on, monotone, turns, dead, (step["levels"], step["thresholds"]),
                       on_edge(bfn, box), box)
