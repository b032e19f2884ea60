"""What every plot in :mod:`metabp.plots` shares: the figure, the PNG, the z grid, the notes.

Figures are fresh :class:`matplotlib.figure.Figure` objects on the Agg canvas (no ``pyplot``, no
display, no global backend switch). Titles are wrapped to the figure's width so they are never
cut off.
"""

from __future__ import annotations

import math
import os
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import ActivationLike, BFunction
from metabp._implicit_lr import SCALE_INVARIANT, SCALE_NOTE, implicit_lr
from metabp.exceptions import ConfigError

TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
         "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
         "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")  # matplotlib's tab20, for more than 10 curves
DPI = 110  # small PNGs (tens of kB) that still read on a laptop screen
Z_RANGE = (-4.0, 4.0)  # where pre-activations of a normally initialised layer mostly lie
Z_POINTS = 401
CHARS_PER_INCH = 13  # title characters per inch of figure width at font size 9
SGD_LIKE = frozenset({"sgd", "momentum", "nesterov"})  # a constant factor in g is a learning rate


@dataclass
class Plotted:
    """A written figure: ``path`` of the PNG and ``data``, the arrays it drew, by name."""

    path: Path
    data: dict[str, np.ndarray] = field(default_factory=dict)


def figure(ncols: int = 1, *, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    """A constrained-layout figure with ``ncols`` axes side by side."""
    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def wrap(text: str, width_in: float, fontsize: float = 9) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(20, int(width_in * CHARS_PER_INCH * 9 / fontsize))
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())


def set_title(ax, text: str, *, fontsize: float = 9) -> None:
    """An axes title wrapped to the axes' width."""
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(wrap(text, width, fontsize), fontsize=fontsize)


def suptitle(fig: Figure, text: str, *, fontsize: float = 9) -> None:
    """A figure title wrapped to the figure's width."""
    fig.suptitle(wrap(text, fig.get_figwidth(), fontsize), fontsize=fontsize)


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"path={str(path)!r}: plots are written as PNG; give a name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def grid(z: Tensor | Sequence[float] | None) -> Tensor:
    """``z`` as a float64 1-D tensor; default ``linspace(-4, 4, 401)``."""
    if z is None:
        return torch.linspace(*Z_RANGE, Z_POINTS, dtype=torch.float64)
    z = torch.as_tensor(z, dtype=torch.float64).flatten()
    if z.numel() < 2:
        raise ConfigError(f"z has {z.numel()} points; give at least 2 pre-activation values to plot")
    return z


def as_runs(curves: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """One curve or several (seeds) -> ``seeds x steps``, shorter runs padded with NaN."""
    arr = list(curves)
    if len(arr) and np.ndim(arr[0]) == 0:
        arr = [arr]
    n = max((len(c) for c in arr), default=0)
    out = np.full((len(arr), n), np.nan)
    for i, c in enumerate(arr):
        out[i, : len(c)] = np.asarray(c, dtype=float)
    return out


@contextmanager
def quiet() -> Iterator[None]:
    """Silence numpy's 'Mean of empty slice' warnings for all-NaN columns (diverged runs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def optimizer_note(optimizer: str | None) -> str:
    """One line saying how to read ``g`` under ``optimizer`` (scale-invariant or SGD-like).

    Example:
        >>> print(optimizer_note("sgd"))
        sgd is SGD-like: g = c*sigma' is exactly lr*c, so beta(z) is the step size
    """
    if optimizer is None:
        return f"optimizer not given: {SCALE_NOTE.removesuffix('.')}"
    name = optimizer.lower() if isinstance(optimizer, str) else optimizer
    if name not in SCALE_INVARIANT | SGD_LIKE:
        raise ConfigError(f"optimizer={optimizer!r} is not known; choose one of "
                          f"{', '.join(sorted(SGD_LIKE | SCALE_INVARIANT))}")
    if name in SCALE_INVARIANT:
        return (f"{name} is scale-invariant (Adam-like): a constant factor in g cancels; "
                "only the shape of beta(z) over z acts")
    return f"{name} is SGD-like: g = c*sigma' is exactly lr*c, so beta(z) is the step size"


def bfunction_curves(
    bfn: BFunction, activation: ActivationLike = "relu", *, lr: float = 1.0, z: Tensor | None = None
) -> dict[str, np.ndarray]:
    r"""The numbers behind :func:`metabp.plots.plot_implicit_lr`: ``z``, ``g(z)``, ``sigma'(z)``, ``beta(z)``.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces.
        lr: the learning rate in :math:`\beta = \mathrm{lr}\, g / \sigma'`.
        z: pre-activations, a 1-D tensor of ``n`` points; default ``linspace(-4, 4, 401)``.

    Returns:
        ``{"z", "g", "dsigma", "beta"}``, each a float64 array of ``n`` values; ``beta`` is NaN
        where ``sigma'(z) = 0``.
    """
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr={lr!r}: the learning rate must be a positive finite number")
    act = get_activation(activation)
    z = grid(z)
    return {
        "z": z.numpy(),
        "g": bfn(z, act).double().numpy(),
        "dsigma": act.derivative(z).double().numpy(),
        "beta": implicit_lr(bfn, act, lr=lr, z=z).double().numpy(),
    }
