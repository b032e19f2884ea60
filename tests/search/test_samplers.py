"""make_sampler: argument checks, and every sampler with a log-scale parameter."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution

from metabp.exceptions import ConfigError
from metabp.search import SAMPLERS, LatinSampler, SobolSampler, make_sampler

BOUNDS = [(-1.0, 1.0), (1e-4, 1e-1)]
NAMES = ["w", "lr"]


@pytest.mark.parametrize("kw,match", [
    ({"name": "grid"}, r"sampler='grid'.*botorch, random"),
    ({"acquisition": "bogus"}, r"acquisition='bogus'.*logei, qlogei"),
    ({"n_initial": 0}, r"n_initial=0.*>= 1"),
    ({"seed": 1.5}, r"seed=1.5.*integer"),
    ({"log": [True]}, r"log=\[True\].*one bool per name \(2 names\)"),
    ({"log": [True, True]}, r"log=True for 'w' with lower bound -1.0.*> 0"),
    ({"names": ["w"]}, r"bounds has 2 entries but names has 1"),
    ({"bounds": [(1.0, 0.0), (1e-4, 1e-1)]}, r"bounds\['w'\]=\(1.0, 0.0\).*lo < hi"),
])
def test_bad_arguments_name_the_argument(kw, match):
    args = {"name": "botorch", "bounds": BOUNDS, "names": NAMES, "n_initial": 3, "seed": 0,
            "log": [False, True], **kw}
    with pytest.raises(ConfigError, match=match):
        make_sampler(args.pop("name"), **args)


def test_sobol_spreads_a_log_parameter_evenly_in_log_space():
    s = SobolSampler(bounds=BOUNDS, names=NAMES, seed=1, log=[False, True])
    pts = np.stack([s.point(n) for n in range(16)])
    assert ((pts[:, 1] >= 1e-4) & (pts[:, 1] <= 1e-1)).all()
    # 16 scrambled Sobol points put exactly one point in each sixteenth of every axis
    cells = np.floor((np.log(pts[:, 1]) - math.log(1e-4)) / (math.log(1e-1) - math.log(1e-4)) * 16)
    assert sorted(cells.tolist()) == list(range(16))
    cells_w = np.floor((pts[:, 0] + 1) / 2 * 16)
    assert sorted(cells_w.tolist()) == list(range(16))


def test_latin_start_is_one_point_per_stratum_of_every_axis_indexed_by_trial_number():
    s = LatinSampler(n=10, bounds=BOUNDS, names=NAMES, seed=3, log=[False, True])
    pts = np.stack([s.point(n) for n in range(10)])
    cells_w = np.floor((pts[:, 0] + 1) / 2 * 10)
    cells_lr = np.floor((np.log(pts[:, 1]) - math.log(1e-4)) / (math.log(1e-1) - math.log(1e-4)) * 10)
    assert sorted(cells_w.tolist()) == sorted(cells_lr.tolist()) == list(range(10))
    # another worker builds the same design, and asks in another order: trial n still gets point n
    other = LatinSampler(n=10, bounds=BOUNDS, names=NAMES, seed=3, log=[False, True])
    assert np.array_equal(np.stack([other.point(n) for n in reversed(range(10))])[::-1], pts)
    later = np.stack([s.point(n) for n in range(10, 20)])  # past the design: uniform, per trial number
    assert np.array_equal(later[3], other.point(13))
    assert ((later[:, 1] >= 1e-4) & (later[:, 1] <= 1e-1)).all()
    assert len({tuple(p) for p in np.concatenate([pts, later])}) == 20
    assert not np.array_equal(LatinSampler(n=10, bounds=BOUNDS, names=NAMES, seed=4).point(0), pts[0])


def test_botorch_starts_from_its_latin_hypercube():
    sampler = make_sampler("botorch", bounds=BOUNDS, names=NAMES, n_initial=5, seed=2, log=[False, True])
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return trial.suggest_float("w", -1.0, 1.0) ** 2

    study.optimize(objective, n_trials=5)
    design = LatinSampler(n=5, bounds=BOUNDS, names=NAMES, seed=2, log=[False, True])
    assert [t.params["w"] for t in study.trials] == [float(design.point(n)[0]) for n in range(5)]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_takes_a_log_parameter(name):
    sampler = make_sampler(name, bounds=BOUNDS, names=NAMES, n_initial=4, seed=0, log=[False, True])
    study = optuna.create_study(sampler=sampler)
    dists = {"w": FloatDistribution(-1.0, 1.0), "lr": FloatDistribution(1e-4, 1e-1, log=True)}

    def objective(trial):
        w, lr = trial.suggest_float("w", -1.0, 1.0), trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return (w - 0.2) ** 2 + (math.log10(lr) + 2.5) ** 2

    study.optimize(objective, n_trials=7)
    lrs = np.array([t.params["lr"] for t in study.trials])
    assert len(study.trials) == 7 and ((lrs >= 1e-4) & (lrs <= 1e-1)).all()
    assert all(t.distributions["lr"] == dists["lr"] for t in study.trials)


def test_the_study_files_sampler_names_are_the_samplers_that_exist():
    from metabp.search._config import SAMPLER_NAMES

    assert tuple(SAMPLER_NAMES) == tuple(SAMPLERS)
