"""sampler = "es": the antithetic estimate points downhill, the step is Adam, a generation is one
batch, and the state comes back from the storage after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from metabp.exceptions import ConfigError
from metabp.search import Study, get_storage
from metabp.search._es import ES_ATTR, ESSampler, ESState, centered_ranks, es_gradient

sys.path.insert(0, str(Path(__file__).parent))
from _worker import config, objective, slow_evaluator  # noqa: E402

WORKER = str(Path(__file__).parent / "_worker.py")
#: The population at which the cosine test is stated: 16 antithetic pairs in 10 dimensions.
POPULATION = 32


def _quadratic(d: int, rng: np.random.Generator):
    a = rng.uniform(0.5, 2.0, d)
    c = rng.uniform(0.0, 1.0, d)
    return (lambda u: float((a * (u - c) ** 2).sum())), (lambda u: 2 * a * (u - c))


@pytest.mark.parametrize("shaping", ["none", "rank"])
def test_the_es_gradient_points_along_the_true_gradient(shaping):
    d, sigma, cosines = 10, 0.05, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        f, grad = _quadratic(d, rng)
        u = rng.uniform(0.0, 1.0, d)
        eps = rng.standard_normal((POPULATION // 2, d))
        est = es_gradient(eps, np.array([f(u + sigma * e) for e in eps]),
                          np.array([f(u - sigma * e) for e in eps]), sigma, shaping=shaping)
        g = grad(u)
        cosines.append(est @ g / np.linalg.norm(est) / np.linalg.norm(g))
    assert min(cosines) > 0.5, cosines


def test_centered_ranks_and_bad_shaping():
    assert centered_ranks(np.array([3.0, 1.0, 2.0])).tolist() == [0.5, -0.5, 0.0]
    with pytest.raises(ConfigError, match="shaping='max'"):
        es_gradient(np.ones((1, 2)), np.ones(1), np.ones(1), 0.1, shaping="max")


def test_the_step_is_torch_adam_on_the_estimate():
    rng = np.random.default_rng(0)
    state = ESState(np.full(5, 0.5), np.zeros(5), np.zeros(5))
    p = torch.nn.Parameter(torch.full((5,), 0.5, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=0.01, eps=1e-8)
    for _ in range(4):
        g = rng.standard_normal(5)
        state.step(g, 0.01)
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(state.mean, p.detach().numpy(), rtol=0, atol=1e-15)
    assert state.generation == 4


@pytest.mark.parametrize("kw,match", [
    ({"population": 1}, r"population = 1: .*even integer in \[2, 1024\]"),
    ({"population": 5}, r"population = 5: .*even"),
    ({"sigma": 0.0}, r"sigma = 0.0: .*\(0, 1\]"),
    ({"sigma": -1.0}, r"sigma = -1.0: "),
    ({"step_size": float("inf")}, r"step_size = inf: "),
])
def test_bad_settings_are_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        ESSampler(bounds=[(-1.0, 1.0)] * 2, names=["a", "b"], n_initial=2, **kw)


def _run(n_trials: int, storage: str = "memory", calls: list | None = None, **es) -> Study:
    evaluate = slow_evaluator(0.0)

    def counted(gs, seeds, *, target=0, lr=None):
        if calls is not None and any(g is not None for g in gs):
            calls.append(len(gs))
        return evaluate(gs, seeds, target=target, lr=lr)

    study = Study(config("es", n_trials, "es").replace(**es), storage=storage, evaluate=counted)
    return study.optimize(progress=False, validate=False)


def _points(study: Study) -> list[tuple[float, ...]]:
    return sorted(tuple(t.params.values()) for t in study.completed())


def test_a_generation_is_one_batch_and_the_search_goes_downhill():
    calls: list[int] = []
    study = _run(8 + 8 * 10, calls=calls, step_size=0.05)  # a fine step: the optimum is near the start
    assert calls == [8 * 2] * 11  # a population x 2 seeds per call: the Sobol start, then 10 generations
    es = [t.system_attrs[ES_ATTR] for t in study.trials]
    assert [e["phase"] for e in es] == ["init"] * 8 + ["es"] * 80
    assert [e["generation"] for e in es[8:]] == [g for g in range(10) for _ in range(8)]
    start = min(study.trials[:8], key=lambda t: t.value)
    mean = torch.from_numpy(study.sampler.mean_of(study.optuna_study))
    assert objective(mean) < 0.25 * objective(study.omega_of(start))  # the mean went downhill


def test_es_settings_are_read_from_the_stored_study():
    cfg = config("es", 8, "es").replace(population=4, sigma=0.2, step_size=0.1)
    study = Study(cfg, storage="memory", evaluate=slow_evaluator(0.0))
    assert study.optuna_study.user_attrs["metabp:config"]["es"] == {"population": 4, "sigma": 0.2,
                                                                  "step_size": 0.1}
    study.optimize(progress=False, validate=False)
    assert (study.sampler.population, study.sampler.sigma, study.sampler.step_size) == (4, 0.2, 0.1)


def test_resume_after_kill_9_keeps_every_completed_population(tmp_path):
    url, n_trials = str(tmp_path / "s.journal"), 8 + 8 * 3
    proc = subprocess.Popen([sys.executable, WORKER, url, "es", str(n_trials), "1.0", "es"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage, deadline = get_storage(url), time.time() + 120
    while True:  # wait for the Sobol start and one generation done, the next one training
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "timeout"
        time.sleep(0.1)
        try:
            trials = optuna.load_study(study_name="es", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(done) >= 16 and any(t.state == TrialState.RUNNING and t.params for t in trials):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.params for t in done}
    study = Study(config("es", n_trials, "es"), storage=url, evaluate=slow_evaluator(0.0))
    study.optimize(progress=False, validate=False)
    after = {t.number: t.params for t in study.completed()}
    assert all(after[n] == p for n, p in before.items())  # nothing completed was lost or redone
    # a trial the killed worker asked for but had not yet claimed stays RUNNING and holds a slot
    orphans = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(after) == n_trials - len(orphans) and len(orphans) <= 1
    never_killed = _points(_run(n_trials))
    assert set(_points(study)) <= set(never_killed)  # the same points as a run never killed
    assert len(orphans) == 1 or _points(study) == never_killed


def test_rank_shaping_ignores_how_bad_a_diverged_member_is():
    rng = np.random.default_rng(1)
    eps, fp, fm = rng.standard_normal((4, 3)), rng.uniform(size=4), rng.uniform(size=4)
    worst = fp.copy()
    worst[np.argmax(fp)] = 1e6  # a penalty AULC: still just the worst rank
    np.testing.assert_array_equal(es_gradient(eps, fp, fm, 0.1), es_gradient(eps, worst, fm, 0.1))
    shaped = es_gradient(eps, np.exp(fp), np.exp(fm), 0.1)  # any increasing map of the scores
    np.testing.assert_array_equal(es_gradient(eps, fp, fm, 0.1), shaped)
