"""search/_gp_sampler.py: pending points, claims, large batches and bad trials in the storage."""

from __future__ import annotations

import math
import time

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from metabp.search import make_sampler
from metabp.search._gp_sampler import CLAIM

D = 6
NAMES = [f"x{i}" for i in range(D)]
DISTS = {k: FloatDistribution(0.0, 1.0) for k in NAMES}


def _f(x: torch.Tensor) -> float:
    return float(((x - 0.3) ** 2).sum())


def _study(n: int, seed: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler("botorch", bounds=[(0.0, 1.0)] * D, names=NAMES, n_initial=10, seed=seed)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.rand(D, generator=g, dtype=torch.float64)
        study.add_trial(optuna.trial.create_trial(params=dict(zip(NAMES, x.tolist(), strict=True)),
                                                  distributions=DISTS, value=_f(x)))
    return study


def _points(trials) -> torch.Tensor:
    return torch.tensor([[t.params[k] for k in NAMES] for t in trials], dtype=torch.float64)


@pytest.mark.slow
def test_32_pending_proposals_are_in_the_box_distinct_and_fast():
    study = _study(100)
    t0 = time.perf_counter()
    pending = [study.ask(DISTS) for _ in range(32)]  # 32 asks, no tells: each sees the others
    seconds = time.perf_counter() - t0
    x = _points(pending)
    assert ((x >= 0) & (x <= 1)).all()
    gaps = torch.cdist(x, x) + 10 * torch.eye(32, dtype=x.dtype)
    assert gaps.min() > 0.05  # spread out: about EXCLUSION (0.1) apart
    done = _points(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert torch.cdist(x, done).min() > 1e-6
    assert seconds < 120  # about 3 s on an idle 2-core machine; generous for a loaded one


def test_each_proposal_is_claimed_before_its_params_are_written():
    study = _study(12)
    trial = study.ask()  # no suggest yet: the sampler is not asked until the first suggest
    trial.suggest_float(NAMES[0], 0.0, 1.0)
    claim = study.get_trials()[-1].system_attrs[CLAIM]
    assert set(claim) == set(NAMES) and claim[NAMES[0]] == trial.params[NAMES[0]]


def test_a_claim_counts_as_pending():
    """A trial whose worker has claimed a point but not yet written it is pending for the next."""
    study = _study(12)
    first = study.ask()
    first.suggest_float(NAMES[0], 0.0, 1.0)  # claimed all six, wrote one: a worker in between
    second = study.ask(DISTS)
    claim = study.get_trials()[-2].system_attrs[CLAIM]
    assert max(abs(second.params[k] - claim[k]) for k in NAMES) > 1e-3


def test_blind_proposals_ignore_pending_points():
    study = _study(12)
    study.sampler.consider_pending = False
    a, b = study.ask(DISTS), study.ask(DISTS)  # same data, nothing seen pending: the same point
    assert a.params == pytest.approx(b.params, abs=1e-9)


@pytest.mark.parametrize("bad", ["nan_param", "inf_value", "neg_inf_value"])
def test_bad_trials_in_the_storage_give_a_point_in_the_box(bad):
    study = _study(12)
    trial = study.ask()
    storage = study._storage
    for k in NAMES:
        v = math.nan if bad == "nan_param" and k == NAMES[2] else 0.5
        storage.set_trial_param(trial._trial_id, k, v, DISTS[k])
    study.tell(trial, {"inf_value": math.inf, "neg_inf_value": -math.inf}.get(bad, 1.0))
    x = _points([study.ask(DISTS)])
    assert torch.isfinite(x).all() and ((x >= 0) & (x <= 1)).all()
