r"""Statistics over seeds that the analysis tables print: mean ± std, paired differences.

Two methods trained on the same seeds share each seed's initial weights and data order, so their
difference is measured per seed (paired):

.. math:: d_s = a_s - b_s, \qquad \bar d = \frac1n \sum_s d_s, \qquad
          \mathrm{SE}(\bar d) = \frac{\mathrm{std}(d)}{\sqrt n},

with the sample standard deviation (``ddof=1``). ``z = \bar d / \mathrm{SE}`` says by how many
standard errors of the difference ``a`` beats (``z < 0``) or trails ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metabp.exceptions import ConfigError


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample std)`` of the finite ``values``; std 0 for one value, NaNs for none.

    Example:
        >>> mean_std([1.0, 3.0])
        (2.0, 1.4142135623730951)
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pm(stat: tuple[float, float], fmt: str = ".4f") -> str:
    """``(mean, std)`` as ``"mean ± std"`` in ``fmt``; ``"nan"`` when the mean is NaN.

    Example:
        >>> pm((2.0, 1.4142135623730951))
        '2.0000 ± 1.4142'
    """
    mean, std = stat
    return "nan" if math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt}}"


@dataclass(frozen=True)
class Paired:
    """The paired difference ``a - b`` over ``n`` seeds: its mean and standard error."""

    diff: float
    se: float
    n: int

    @property
    def z(self) -> float:
        """``diff / se`` (NaN when the standard error is 0 or undefined)."""
        return self.diff / self.se if self.se > 0 and math.isfinite(self.se) else math.nan


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Mean and standard error of ``a[s] - b[s]`` over the seeds ``s`` (same length, same order).

    Example:
        >>> p = paired([1.0, 2.0, 3.0], [1.5, 2.5, 3.0])
        >>> round(p.diff, 4), round(p.se, 4), p.n
        (-0.3333, 0.1667, 3)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ConfigError(f"paired difference needs two equally long, non-empty lists; got {a.size} "
                          f"and {b.size}")
    d = a - b
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    return Paired(float(d.mean()), se, int(d.size))


def in_words(p: Paired, a: str, b: str, *, what: str = "AULC") -> str:
    """One sentence: which of ``a`` and ``b`` has the lower ``what``, by how much and how many
    standard errors of the paired difference (lower is better)."""
    if p.diff == 0:
        return f"{a} and {b} score the same {what} on every one of the {p.n} seed(s)."
    winner, loser = (a, b) if p.diff < 0 else (b, a)
    if not math.isfinite(p.z):
        return (f"{winner} beats {loser} by {abs(p.diff):.4g} {what}; with {p.n} seed(s) there is no spread, "
                "so no standard error.")
    strength = "clear: more than 2 SE" if abs(p.z) > 2 else "within noise: under 2 SE"
    return (f"{winner} beats {loser} by {abs(p.diff):.4g} {what}, {abs(p.z):.1f} standard errors of the "
            f"paired difference (SE {p.se:.2g} over {p.n} seeds; {strength}).")
