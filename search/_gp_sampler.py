"""metabp's GP sampler: the trial glue around the engine (``_botorch.py``).

An ``optuna.samplers.BaseSampler``. Per proposal (the ``sample_relative`` of a trial):

1. fewer than ``n_startup_trials`` completed + running trials: the independent sampler (a start
   design indexed by trial number) draws the point;
2. otherwise, under the study's :func:`proposal_lock`, the completed trials are the data and the
   points of every other live trial are pending: RUNNING trials' params, or the proposal they
   claimed before writing params (system attr ``metabp:proposal``), and WAITING trials' queued
   params. The engine proposes; the point is claimed on this trial before the lock is released.

So concurrent workers propose one after another, each seeing the others' points, and no two of
them start the same point. Parameters are the study's float distributions (``log x`` for
log-scale ones); any other distribution goes to the independent sampler.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ._botorch import Proposer
from ._schema import PROPOSAL as CLAIM
from ._storage import proposal_lock


class EngineSampler(BaseSampler):
    """GP + LogEI proposals from :class:`Proposer`, pending-aware and collision-free across workers.

    Args:
        proposer: the engine (fit cache, settings, acquisition).
        independent_sampler: draws the first ``n_startup_trials`` points and any non-float parameter.
        n_startup_trials: completed + running trials before the GP proposes.
        consider_pending: ``False`` ignores other trials' points (each proposal from the completed
            trials alone; the "blind" reference of ``benchmarks/parallel_workers.py``).
    """

    def __init__(self, *, proposer: Proposer, independent_sampler: BaseSampler, n_startup_trials: int,
                 consider_pending: bool = True) -> None:
        self.proposer = proposer
        self.consider_pending = consider_pending
        self.independent_sampler = independent_sampler
        self.n_startup_trials = n_startup_trials
        self._space = optuna.search_space.IntersectionSearchSpace()

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {k: v for k, v in self._space.calculate(study).items()
                if isinstance(v, FloatDistribution) and v.step is None}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        live = (TrialState.COMPLETE, TrialState.RUNNING)
        if len([t for t in study.get_trials(deepcopy=False, states=live)
                if t.number != trial.number]) < self.n_startup_trials:
            return {}
        with proposal_lock(study._storage, study.study_name):  # noqa: SLF001 (Optuna's samplers do the same)
            trials = study.get_trials(deepcopy=False)
            x, y, pending = _data(trials, trial.number, search_space, study.direction)
            lo, hi = _box(search_space)
            pending = pending if self.consider_pending else None
            cand = self.proposer(x, y, torch.stack([lo, hi]), pending).reshape(-1)
            params = _untransform(cand, search_space)
            study._storage.set_trial_system_attr(trial._trial_id, CLAIM, params)  # noqa: SLF001
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.independent_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.independent_sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self.independent_sampler.after_trial(study, trial, state, values)


def _box(space: dict[str, BaseDistribution]) -> tuple[torch.Tensor, torch.Tensor]:
    lo = [math.log(d.low) if d.log else d.low for d in space.values()]
    hi = [math.log(d.high) if d.log else d.high for d in space.values()]
    return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)


def _transform(params: dict[str, Any], space: dict[str, BaseDistribution]) -> list[float] | None:
    """The point in the engine's coordinates (``log x`` for log-scale), ``None`` if incomplete."""
    if not all(k in params for k in space):
        return None
    out = []
    for k, d in space.items():
        v = float(params[k])
        out.append((math.log(v) if v > 0 else -math.inf) if d.log else v)
    return out


def _untransform(cand: torch.Tensor, space: dict[str, BaseDistribution]) -> dict[str, float]:
    out = {}
    for v, (k, d) in zip(cand.tolist(), space.items(), strict=True):
        v = math.exp(v) if d.log else v
        out[k] = min(max(v, d.low), d.high)
    return out


def _data(trials: list[FrozenTrial], number: int, space: dict[str, BaseDistribution],
          direction: StudyDirection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(x n x d, values to maximise n x 1, pending m x d or None)`` from the study's trials."""
    sign = -1.0 if direction == StudyDirection.MINIMIZE else 1.0
    xs, ys, pending = [], [], []
    for t in trials:
        if t.number == number:
            continue
        if t.state == TrialState.COMPLETE and t.value is not None:
            p = _transform(t.params, space)
            if p is not None:
                xs.append(p)
                ys.append(sign * float(t.value))
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            source = t.params if t.state == TrialState.RUNNING else t.system_attrs.get("fixed_params", {})
            p = _transform(source, space) or _transform(t.system_attrs.get(CLAIM) or {}, space)
            if p is not None:
                pending.append(p)
    d = len(space)
    x = torch.tensor(xs, dtype=torch.float64).reshape(-1, d)
    y = torch.tensor(ys, dtype=torch.float64).reshape(-1, 1)
    return x, y, (torch.tensor(pending, dtype=torch.float64) if pending else None)
