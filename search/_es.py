r"""Antithetic evolution strategies over ``omega``: a population per step, Adam on the estimate.

In unit-cube coordinates :math:`u` (each parameter's box mapped to ``[0, 1]``, ``log x`` for
log-scale parameters such as ``lr``), generation :math:`k` evaluates the ``population = 2n``
points :math:`u_k \pm \sigma \varepsilon_i` (``i = 1..n``, :math:`\varepsilon_i \sim
\mathcal{N}(0, I)`, clipped to the box) and estimates the gradient of the score :math:`f` by

.. math:: \hat\nabla f(u_k) = \frac{1}{n\sigma} \sum_{i=1}^{n} w_i\, \varepsilon_i, \qquad
          w_i = r(f(u_k + \sigma\varepsilon_i)) - r(f(u_k - \sigma\varepsilon_i)),

with centred ranks :math:`r \in [-\tfrac12, \tfrac12]` (fitness shaping: a diverged candidate's
penalty weighs no more than the second-worst; ``shaping="none"`` uses :math:`r(f) = f / 2`).
The mean then takes one Adam step of size ``step_size`` (Kingma & Ba 2015) and is clipped to the
box (Salimans et al., "Evolution Strategies as a Scalable Alternative to Reinforcement
Learning", 2017). The start :math:`u_0` is the best of ``n_initial`` scrambled Sobol points
(rounded up to whole populations, so every batch the study trains is one full population).

:class:`ESSampler` keeps no state in memory: every proposal replays the completed trials in the
storage (points are matched by value, so a point a dead worker's trial re-queues still counts),
so a study killed at any moment resumes from its last completed population.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study as OptunaStudy
from optuna.trial import FrozenTrial, TrialState

from metabp.exceptions import ConfigError

from ._schema import CONFIG as CONFIG_ATTR  # the study's configuration (StudyConfig.identity)
from ._schema import ES as ES_ATTR  # a trial's place: {"phase": "init" | "es" | "extra", ...}
from ._sobol import SobolSampler

#: Defaults of the study-file keys ``population``, ``sigma`` and ``step_size`` (unit-box units:
#: ``sigma = 0.1`` is a tenth of each parameter's range): four antithetic pairs per generation, so a
#: 64-trial budget with 8 Sobol points is seven Adam steps. Chosen among (population, sigma, step) =
#: (8, .1, .05), (8, .05, .05), (8, .1, .1), (8, .2, .1), (16, .1, .1), (8, .05, .02) on the quickstart
#: target with a 25-weight meta-network (40 epochs, seeds 0 and 1, 64 trials, sampler seeds 0-2).
POPULATION = 8
SIGMA = 0.1
STEP_SIZE = 0.1
DEFAULTS = {"population": POPULATION, "sigma": SIGMA, "step_size": STEP_SIZE}
#: Adam's moment decays and denominator guard.
BETAS = (0.9, 0.999)
EPS = 1e-8


def check_es(population: Any, sigma: Any, step_size: Any, at: str = "") -> tuple[int, float, float]:
    """``(population, sigma, step_size)`` validated: an even population >= 2, 0 < sigma, step <= 1."""
    if isinstance(population, bool) or not isinstance(population, int) or population < 2 \
            or population % 2 or population > 1024:
        raise ConfigError(f"[search] population = {population!r}{at}: must be an even integer in "
                          "[2, 1024] (antithetic pairs u + sigma*eps, u - sigma*eps)")
    for key, value in (("sigma", sigma), ("step_size", step_size)):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 < value <= 1:
            raise ConfigError(f"[search] {key} = {value!r}{at}: must be a number in (0, 1] "
                              "(a fraction of each parameter's range)")
    return population, float(sigma), float(step_size)


def centered_ranks(f: np.ndarray) -> np.ndarray:
    """Ranks of ``f`` mapped linearly to ``[-0.5, 0.5]`` (ties keep their order of appearance)."""
    ranks = np.empty(len(f))
    ranks[np.argsort(f, kind="stable")] = np.arange(len(f))
    return ranks / max(len(f) - 1, 1) - 0.5


def es_gradient(eps: np.ndarray, f_plus: np.ndarray, f_minus: np.ndarray, sigma: float, *,
                shaping: str = "rank") -> np.ndarray:
    r"""The antithetic estimate :math:`\frac{1}{n\sigma}\sum_i w_i \varepsilon_i` (module docstring).

    Args:
        eps: ``n x d`` directions. f_plus, f_minus: ``n`` scores at ``u + sigma eps`` and ``u - sigma eps``.
        sigma: the perturbation scale. shaping: ``"rank"`` (centred ranks) or ``"none"``.

    Returns:
        ``d`` estimate of the gradient of ``f`` (to be descended).
    """
    if shaping == "rank":
        r = centered_ranks(np.concatenate([f_plus, f_minus]))
        w = r[: len(f_plus)] - r[len(f_plus):]
    elif shaping == "none":
        w = (np.asarray(f_plus) - np.asarray(f_minus)) / 2
    else:
        raise ConfigError(f"shaping={shaping!r}: choose 'rank' or 'none'")
    return (w[:, None] * eps).sum(0) / (len(eps) * sigma)


@dataclass
class ESState:
    """The search's state before generation ``generation``: mean and Adam moments (unit box)."""

    mean: np.ndarray
    m: np.ndarray
    v: np.ndarray
    generation: int = 0

    def step(self, grad: np.ndarray, step_size: float) -> None:
        r"""One Adam step, then clip to the box:

        .. math:: u \leftarrow \mathrm{clip}_{[0,1]}(u - \alpha\,\hat m / (\sqrt{\hat v} + \epsilon))
        """
        b1, b2 = BETAS
        self.generation += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad**2
        m_hat = self.m / (1 - b1**self.generation)
        v_hat = self.v / (1 - b2**self.generation)
        self.mean = np.clip(self.mean - step_size * m_hat / (np.sqrt(v_hat) + EPS), 0.0, 1.0)


class ESSampler(BaseSampler):
    """Antithetic ES (module docstring) as an Optuna sampler; state replayed from the storage.

    Args:
        bounds: ``(lo, hi)`` per parameter, in the order of ``names``.
        names: parameter names.
        n_initial: Sobol points before the first generation (the best is the start).
        seed: seed of the Sobol scrambling and of each generation's directions.
        log: one bool per name (log-scale parameters move in ``log x``).
        population: points per generation, even (``population / 2`` antithetic pairs).
        sigma, step_size: perturbation scale and Adam step, fractions of each parameter's range.

    A setting left ``None`` is read from the study's stored configuration (study user attr
    ``metabp:config``, key ``es``, written by :class:`~metabp.search.Study` from the study file),
    else its default: the settings a study's state is replayed with live beside its trials.
    """

    def __init__(self, *, bounds: Sequence[tuple[float, float]], names: Sequence[str], n_initial: int,
                 seed: int = 0, log: Sequence[bool] | None = None, population: int | None = None,
                 sigma: float | None = None, step_size: float | None = None) -> None:
        self._given = {"population": population, "sigma": sigma, "step_size": step_size}
        self._set({})
        self.names = list(names)
        self.log = np.array(log if log is not None else [False] * len(names), dtype=bool)
        self.seed, self.n_initial = int(seed), int(n_initial)
        self._space = {n: FloatDistribution(b[0], b[1], log=bool(g))
                       for n, b, g in zip(names, bounds, self.log, strict=True)}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._sobol = SobolSampler(bounds=bounds, names=self.names, seed=self.seed, log=self.log.tolist())

    def _set(self, stored: dict[str, Any]) -> None:
        pick = {k: v if v is not None else stored.get(k, DEFAULTS[k]) for k, v in self._given.items()}
        self.population, self.sigma, self.step_size = check_es(
            pick["population"], pick["sigma"], pick["step_size"])

    def _settle(self, study: OptunaStudy) -> None:
        """Fill the settings left ``None`` from the study's stored configuration."""
        if None in self._given.values():
            self._set(study.user_attrs.get(CONFIG_ATTR, {}).get("es") or {})

    @property
    def num_initial(self) -> int:
        """Sobol points before the first generation: ``n_initial`` rounded up to whole populations."""
        return -(-self.n_initial // self.population) * self.population

    # --- coordinates --------------------------------------------------------------------------
    def to_x(self, u: np.ndarray) -> np.ndarray:
        """Unit-box point (clipped to the box) -> raw parameter values."""
        return self._sobol.to_x(np.clip(u, 0.0, 1.0))

    def to_u(self, x: np.ndarray) -> np.ndarray:
        """Raw parameter values -> unit-box point."""
        return self._sobol.to_u(x)

    def initial_points(self) -> list[np.ndarray]:
        """The ``num_initial`` scrambled Sobol points (raw units): the first points of
        :class:`SobolSampler` with this seed, which caches them across proposals."""
        return [self._sobol.point(i) for i in range(self.num_initial)]

    def _key(self, x: np.ndarray) -> tuple[int, ...]:
        """A point's identity: its unit-box coordinates to 1e-9 (storage round trips are exact)."""
        return tuple(int(v) for v in np.rint(self.to_u(np.asarray(x, dtype=float)) * 1e9))

    def directions(self, generation: int) -> np.ndarray:
        """Generation ``generation``'s ``population/2 x d`` directions (a function of the seed)."""
        rng = np.random.default_rng([self.seed, generation])
        return rng.standard_normal((self.population // 2, len(self.names)))

    def members(self, state: ESState) -> list[np.ndarray]:
        """The generation's points in raw units: ``+eps_0, -eps_0, +eps_1, ...``."""
        eps = self.directions(state.generation)
        return [self.to_x(state.mean + s * self.sigma * e) for e in eps for s in (1.0, -1.0)]

    # --- replay -------------------------------------------------------------------------------
    def replay(self, trials: Sequence[FrozenTrial]) -> tuple[str, list[np.ndarray], ESState | None]:
        """``(phase, points, state)``: the first phase (``"init"`` or ``"es"``) with a point that has
        no completed trial, that phase's points, and the ES state (``None`` during ``"init"``)."""
        values: dict[tuple[int, ...], float] = {}
        for t in sorted(trials, key=lambda t: t.number):
            if t.state == TrialState.COMPLETE and set(self.names) <= set(t.params):
                values.setdefault(self._key(np.array([t.params[n] for n in self.names])), float(t.value))
        init = self.initial_points()
        scores = [values.get(self._key(x)) for x in init]
        if any(s is None for s in scores):
            return "init", init, None
        d = len(self.names)
        state = ESState(self.to_u(init[int(np.argmin(scores))]), np.zeros(d), np.zeros(d))
        while True:
            points = self.members(state)
            f = [values.get(self._key(x)) for x in points]
            if any(v is None for v in f):
                return "es", points, state
            f = np.array(f)
            grad = es_gradient(self.directions(state.generation), f[0::2], f[1::2], self.sigma)
            state.step(grad, self.step_size)

    def mean_of(self, study: OptunaStudy) -> np.ndarray:
        """The current ES mean in raw units (the best Sobol point until the first generation)."""
        self._settle(study)
        phase, points, state = self.replay(study.get_trials(deepcopy=False))
        return points[0] if state is None else self.to_x(state.mean)

    # --- Optuna's sampler interface -----------------------------------------------------------
    def infer_relative_search_space(self, study: OptunaStudy, trial: FrozenTrial) -> dict:
        return dict(self._space)

    def sample_relative(self, study: OptunaStudy, trial: FrozenTrial, search_space: dict) -> dict:
        if trial.system_attrs.get("fixed_params"):  # a queued point: Optuna uses its fixed params
            return {}
        self._settle(study)
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        phase, points, state = self.replay(trials)
        live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        taken = {self._key(p) for p in (_point(t, self.names) for t in trials if t.state in live)
                 if p is not None}
        for j, x in enumerate(points):
            if self._key(x) not in taken:
                where = {"phase": phase, "member": j}
                if state is not None:
                    where["generation"] = state.generation
                study._storage.set_trial_system_attr(trial._trial_id, ES_ATTR, where)
                return {n: float(v) for n, v in zip(self.names, x, strict=True)}
        # every point of this phase is done or running elsewhere: one random point, marked as such
        study._storage.set_trial_system_attr(trial._trial_id, ES_ATTR, {"phase": "extra"})
        return {}

    def sample_independent(self, study: OptunaStudy, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def es_sampler(*, bounds: Sequence[tuple[float, float]], names: Sequence[str], n_initial: int, seed: int,
               acquisition: str = "logei", log: Sequence[bool] | None = None) -> ESSampler:
    """The ``"es"`` entry of ``SAMPLERS`` (settings from the study's stored configuration)."""
    return ESSampler(bounds=bounds, names=names, n_initial=n_initial, seed=seed, log=log)


def _point(t: FrozenTrial, names: Sequence[str]) -> np.ndarray | None:
    """A trial's point: its params, or the fixed params of a queued (WAITING) trial."""
    params = t.params if set(names) <= set(t.params) else (t.system_attrs.get("fixed_params") or {})
    if not set(names) <= set(params):
        return None
    return np.array([params[n] for n in names], dtype=float)


__all__ = ["ESSampler", "es_sampler", "ESState", "es_gradient", "centered_ranks", "check_es", "POPULATION",
           "SIGMA", "STEP_SIZE", "ES_ATTR"]
