"""Start designs indexed by trial number (``SobolSampler``, ``LatinSampler``), and the check of a
search space.

A parameter flagged in ``log`` is spread uniformly in ``log x`` between its bounds.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study as OptunaStudy
from optuna.trial import FrozenTrial

from metabp.exceptions import ConfigError

Bounds = Sequence[tuple[float, float]]


class _TrialIndexedDesign(BaseSampler):
    """A start design whose ``n``-th point goes to trial number ``n``: :meth:`point` (unit box) is
    the design; the box mapping and Optuna's sampler interface are shared here.

    Indexing by trial number (unique across workers) rather than by a counter means two workers
    never draw the same point, and the design is the same however many workers share a study.
    A parameter flagged in ``log`` is spread uniformly in ``log x`` between its bounds.

    Args:
        bounds: ``(lo, hi)`` per parameter, in the order of ``names``.
        names: parameter names.
        seed: the design's seed.
        log: one bool per name (default all False).
    """

    def __init__(
        self, *, bounds: Bounds, names: Sequence[str], seed: int = 0, log: Sequence[bool] | None = None
    ) -> None:
        log = check_space(bounds, names, log)
        lo = np.array([b[0] for b in bounds], dtype=float)
        hi = np.array([b[1] for b in bounds], dtype=float)
        self._log = np.array(log, dtype=bool)
        self._lo = np.where(self._log, np.log(np.where(self._log, lo, 1.0)), lo)
        self._hi = np.where(self._log, np.log(np.where(self._log, hi, 1.0)), hi)
        self._index = {n: i for i, n in enumerate(names)}
        self._seed = seed
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def unit_point(self, number: int) -> np.ndarray:
        """The ``number``-th point of the design in the unit box."""
        raise NotImplementedError

    def point(self, number: int) -> np.ndarray:
        """The ``number``-th point in raw units."""
        return self.to_x(self.unit_point(number))

    def to_x(self, u: np.ndarray) -> np.ndarray:
        """Unit-box point -> raw parameter values (``log x`` spread uniformly where flagged)."""
        x = self._lo + u * (self._hi - self._lo)
        return np.where(self._log, np.exp(x), x)

    def to_u(self, x: np.ndarray) -> np.ndarray:
        """Raw parameter values -> unit-box point (the inverse of :meth:`to_x`)."""
        x = np.where(self._log, np.log(np.where(self._log, x, 1.0)), x)
        return (x - self._lo) / (self._hi - self._lo)

    def infer_relative_search_space(self, study: OptunaStudy, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: OptunaStudy, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(
        self, study: OptunaStudy, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        i = self._index.get(param_name)
        if i is None or not isinstance(param_distribution, FloatDistribution):
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        value = float(self.point(trial.number)[i])
        return min(max(value, param_distribution.low), param_distribution.high)


class SobolSampler(_TrialIndexedDesign):
    """Scrambled Sobol points, the ``n``-th point for trial number ``n``: two workers never draw the
    same point, and the design is the same however many workers share a study. The start design of
    ``es``. A parameter flagged in ``log`` is spread uniformly in ``log x`` between its bounds.

    Args:
        bounds: ``(lo, hi)`` per parameter, in the order of ``names``.
        names: parameter names.
        seed: scrambling seed.
        log: one bool per name (default all False).
    """

    def __init__(
        self, *, bounds: Bounds, names: Sequence[str], seed: int = 0, log: Sequence[bool] | None = None
    ) -> None:
        from scipy.stats import qmc

        super().__init__(bounds=bounds, names=names, seed=seed, log=log)
        self._engine = qmc.Sobol(len(names), scramble=True, seed=seed)
        self._points = np.empty((0, len(names)))
        self._lock = threading.Lock()

    def unit_point(self, number: int) -> np.ndarray:
        """The ``number``-th Sobol point in the unit box."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # balance warnings for non-powers of two
            while len(self._points) <= number:
                self._points = np.vstack([self._points, self._engine.random(64)])
        return self._points[number]


class LatinSampler(_TrialIndexedDesign):
    """A Latin hypercube of ``n`` points (one in each ``1/n`` of every axis, McKay et al. 1979), the
    ``k``-th for trial number ``k``; trials past ``n`` get uniform points drawn from a generator
    seeded by ``(seed, number)``. Indexed by trial number as :class:`SobolSampler`.

    The ``botorch`` sampler's start design: on ``benchmarks/search_efficiency.py``'s functions its GP
    did as well from these as from the first Sobol points everywhere, and better on Hartmann-6,
    where Sobol starts led most seeds into its local optimum
    (``benchmarks/results/search_efficiency_ab_latin.md``).

    Args:
        n: points in the hypercube (the study's ``n_initial``). Others as :class:`SobolSampler`.
    """

    def __init__(self, *, n: int, bounds: Bounds, names: Sequence[str], seed: int = 0,
                 log: Sequence[bool] | None = None) -> None:
        from scipy.stats import qmc

        super().__init__(bounds=bounds, names=names, seed=seed, log=log)
        self._design = qmc.LatinHypercube(len(names), seed=seed).random(max(int(n), 1))

    def unit_point(self, number: int) -> np.ndarray:
        """The ``number``-th point in the unit box."""
        if number < len(self._design):
            return self._design[number]
        return np.random.default_rng([self._seed, number]).random(len(self._index))


def check_space(bounds: Bounds, names: Sequence[str], log: Sequence[bool] | None) -> list[bool]:
    """Validate ``bounds``/``names``/``log``; returns ``log`` as a list (all False by default)."""
    if len(bounds) != len(names):
        raise ConfigError(f"bounds has {len(bounds)} entries but names has {len(names)}; need one per name")
    for n, (lo, hi) in zip(names, bounds, strict=True):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"bounds[{n!r}]=({lo}, {hi}): need finite lo < hi")
    if log is None:
        return [False] * len(names)
    log = list(log) if isinstance(log, (list, tuple, np.ndarray)) else [log]
    if len(log) != len(names) or not all(isinstance(v, (bool, np.bool_)) for v in log):
        raise ConfigError(f"log={log!r}: need one bool per name ({len(names)} names)")
    for n, (lo, _), is_log in zip(names, bounds, log, strict=True):
        if is_log and lo <= 0:
            raise ConfigError(f"log=True for {n!r} with lower bound {lo}: a log-scale bound must be > 0")
    return [bool(v) for v in log]
