"""Held-out validation: the top candidates and the controls on held-out seeds, resumable; export by it."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.trial import TrialState
from test_study import HELD, Quadratic, cfg

import metabp
from metabp.exceptions import ConfigError
from metabp.search import CandidatesOnly, Evaluation, Study, TargetEntry, get_storage, tune_grid
from metabp.search._validate import log_grid


def test_validation_at_the_end_and_export_by_heldout_score(tmp_path, capsys):
    ev = Quadratic()
    c = cfg(n_trials=10, seeds=(0, 1), lr_bounds=(1e-2, 10.0), validate_seeds=(100, 101, 102),
            validate_top_k=4, sampler="tpe")
    study = Study(c, storage=str(tmp_path / "v.journal"), evaluate=ev)
    study.optimize(progress=True)
    top = sorted(study.completed(), key=lambda t: t.value)[:4]
    for t in study.completed():
        held = t.user_attrs.get("heldout_aulc")
        assert (held is not None) == (t in top)
    for t in top:
        held = t.user_attrs["heldout_aulc"]
        g, lr = study.omega_of(t), t.params["lr"]
        want = [float(((g - HELD) ** 2).sum()) + 0.1 * k + math.log10(lr) ** 2 for k in range(3)]
        assert held["seeds"] == [100, 101, 102] and held["values"] == pytest.approx(want)
        assert held["mean"] == pytest.approx(sum(want) / 3)
        assert held["std"] == pytest.approx(torch.tensor(want, dtype=torch.float64).std().item())
    controls = study.heldout_controls
    assert controls["backprop"]["values"] == pytest.approx([1.0, 1.1, 1.2])
    tuned = controls["tuned_lr"]
    assert 1e-2 <= tuned["lr"] <= 10.0 and tuned["seeds"] == [100, 101, 102]
    assert tuned["mean"] == pytest.approx(1.1 + math.log10(tuned["lr"]) ** 2)
    sub = optuna.load_study(study_name="t:tuned_lr", storage=study.storage)
    assert len(sub.get_trials(states=(TrialState.COMPLETE,))) == 10  # the same budget as the search
    err = capsys.readouterr().err
    assert "held-out seeds [100, 101, 102]" in err and "backprop, tuned lr" in err

    best_held = min(top, key=lambda t: t.user_attrs["heldout_aulc"]["mean"])
    assert study.best_heldout_trial().number == best_held.number
    g = metabp.load(study.export(tmp_path / "best.bfn"))
    assert g.meta["trial"] == best_held.number and g.meta["chosen_by"] == "heldout_aulc"
    assert g.meta["heldout_aulc"]["mean"] == best_held.user_attrs["heldout_aulc"]["mean"]
    assert g.meta["seeds"] == [100, 101, 102] and g.meta["aulc"] == best_held.value
    n_calls = len(ev.calls)
    study.validate(progress=False)  # everything stored: nothing trains again
    assert len(ev.calls) == n_calls


def test_export_falls_back_to_the_search_score(tmp_path):
    study = Study(cfg(sampler="random"), storage="memory", evaluate=Quadratic())
    with pytest.raises(ConfigError, match="no completed trial"):
        study.best_bfn()
    study.optimize(progress=False)
    best = study.best_trial
    g = metabp.load(study.export(tmp_path / "best.bfn"))
    assert torch.equal(g.omega, study.omega_of(best)) and g.meta["chosen_by"] == "search score"
    assert g.meta["study"] == "t" and g.meta["trial"] == best.number and g.meta["aulc"] == best.value
    assert "heldout_aulc" not in g.meta
    with pytest.raises(ConfigError, match="no .*held-out seeds"):
        study.validate(progress=False)


class Interrupted(Exception):
    pass


def test_validation_resumes_what_a_killed_run_left(tmp_path):
    """A run that dies while validating keeps what it stored; the next trains only the rest."""
    url = str(tmp_path / "r.journal")
    c = cfg(n_trials=6, seeds=(0, 1), lr_bounds=(1e-2, 10.0), validate_seeds=(100, 101), validate_top_k=3,
            sampler="random")
    Study(c, storage=url, evaluate=Quadratic()).optimize(progress=False, validate=False)

    class DiesInTopK(Quadratic):  # the controls train, then the top-k batch dies
        def __call__(self, gs, seeds, *, target=0, lr=None):
            if any(g is not None for g in gs):
                raise Interrupted
            return super().__call__(gs, seeds, target=target, lr=lr)

    with pytest.raises(Interrupted):
        Study(c, storage=url, evaluate=DiesInTopK()).validate(progress=False)
    again = Quadratic()
    study = Study(c, storage=url, evaluate=again)
    assert set(study.heldout_controls) == {"backprop", "tuned_lr"}  # kept
    study.optimize(progress=False)  # as `metabp search --resume`: complete, so it validates
    assert [call[1] for call in again.calls] == [(100, 101) * 3]  # only the top 3, in one call
    assert sum("heldout_aulc" in t.user_attrs for t in study.completed()) == 3


def test_tuned_lr_resumes_its_sub_study(tmp_path):
    url = str(tmp_path / "l.journal")
    c = cfg(n_trials=5, lr_bounds=(1e-2, 10.0), validate_seeds=(100,), validate_top_k=1, sampler="random")
    Study(c, storage=url, evaluate=Quadratic()).optimize(progress=False, validate=False)

    class DiesAfterTwo(Quadratic):
        def __call__(self, gs, seeds, *, target=0, lr=None):
            if lr is not None and gs[0] is None and sum(c[3] is not None for c in self.calls) >= 2:
                raise Interrupted
            return super().__call__(gs, seeds, target=target, lr=lr)

    with pytest.raises(Interrupted):
        Study(c, storage=url, evaluate=DiesAfterTwo()).validate(progress=False)
    sub = optuna.load_study(study_name="t:tuned_lr", storage=get_storage(url))
    assert [t.state for t in sub.trials] == [TrialState.COMPLETE] * 2  # stored as measured
    ev = Quadratic()
    Study(c, storage=url, evaluate=ev).validate(progress=False)
    tuning = [call for call in ev.calls if call[3] is not None and call[1] == (0,)]
    assert len(tuning) == 3  # 5 trials in all: 2 kept
    states = [t.state for t in optuna.load_study(study_name="t:tuned_lr", storage=get_storage(url)).trials]
    assert states == [TrialState.COMPLETE] * 5


def test_batched_lr_tuning_spends_exactly_its_budget_and_resumes_after_a_kill(tmp_path):
    """q = 4: the tuning trains q lrs x seeds per call; n_trials lrs in all, each once, also across
    a kill; the tuned lr is the best of them."""
    url = str(tmp_path / "b.journal")
    c = cfg(n_trials=10, seeds=(0, 1), lr_bounds=(1e-2, 10.0), validate_seeds=(100,), validate_top_k=1,
            acquisition="qlogei", q=4, n_initial=4)
    Study(c, storage=url, evaluate=Quadratic()).optimize(progress=False, validate=False)

    class DiesOnTheSecondChunk(Quadratic):
        def __call__(self, gs, seeds, *, target=0, lr=None):
            if lr is not None and gs[0] is None and seeds[0] == 0 and any(
                    c[3] is not None and c[1][0] == 0 for c in self.calls):
                raise Interrupted
            return super().__call__(gs, seeds, target=target, lr=lr)

    killed = DiesOnTheSecondChunk()
    with pytest.raises(Interrupted):
        Study(c, storage=url, evaluate=killed).validate(progress=False)
    ev = Quadratic()
    study = Study(c, storage=url, evaluate=ev)
    study.validate(progress=False)
    chunks = [call for call in killed.calls + ev.calls if call[3] is not None and call[1][0] == 0]
    assert [n for n, *_ in chunks] == [8, 2, 8, 2]  # 5 grid lrs, 5 refined: chunks of 4 lrs x 2 seeds
    lrs = [a for *_, lr in chunks for a in lr[::2]]
    assert len(lrs) == len(set(lrs)) == 10 and all(1e-2 <= a <= 10.0 for a in lrs)
    sub = optuna.load_study(study_name="t:tuned_lr", storage=get_storage(url))
    assert sorted(t.params["lr"] for t in sub.trials) == sorted(lrs)
    tuned = study.heldout_controls["tuned_lr"]["lr"]
    assert tuned == min(lrs, key=lambda a: math.log10(a) ** 2)  # Quadratic: best at lr = 1


def test_tune_grid_budget_refinement_and_stored_points():
    calls = []

    def measure(xs):
        calls.append(list(xs))
        return [(math.log10(x) + 2.2) ** 2 for x in xs]

    best, value, hist = tune_grid(measure, low=1e-4, high=1.0, budget=9, batch=3)
    assert [len(c) for c in calls] == [3, 2, 3, 1] and len(hist) == 9 == len({x for x, _ in hist})
    assert hist[:5] == [(x, pytest.approx((math.log10(x) + 2.2) ** 2)) for x in log_grid(1e-4, 1.0, 5)]
    assert all(1e-3 < x < 1e-1 for x, _ in hist[5:])  # around the grid's best, 1e-2
    assert value == min(v for _, v in hist) and abs(math.log10(best) + 2.2) < 0.2
    calls.clear()
    again = tune_grid(measure, low=1e-4, high=1.0, budget=9, batch=3, done=dict(hist[:6]))
    assert again == (best, value, hist) and [len(c) for c in calls] == [3]
    assert tune_grid(measure, low=0.5, high=2.0, budget=1, batch=4)[0] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="need 0 < low < high"):
        tune_grid(measure, low=1.0, high=0.1, budget=2, batch=1)
    with pytest.raises(ConfigError, match="budget=0"):
        tune_grid(measure, low=0.1, high=1.0, budget=0, batch=1)


def test_several_targets_validate_as_ratios():
    targets = (TargetEntry("gaussians-mlp3", (), "act2"), TargetEntry("digits-mlp"))
    c = cfg(seeds=(0,), targets=targets, validate_seeds=(100, 101), validate_top_k=1, sampler="random")
    study = Study(c, storage="memory", evaluate=Quadratic())
    study.optimize(progress=False)
    best = study.best_heldout_trial()
    held = best.user_attrs["heldout_aulc"]
    d = float(((study.omega_of(best) - HELD) ** 2).sum())
    want = [(d + 0.1 * k) / (1 + 0.1 * k) for k in range(2)]  # target 1 doubles both: the same ratio
    assert held["values"] == pytest.approx(want)
    assert study.heldout_controls["backprop"]["values"] == [1.0, 1.0]
    assert study.heldout_controls["backprop"]["per_target"]["digits-mlp"] == pytest.approx([2.0, 2.2])


def test_a_seed_free_objective_cannot_validate():
    study = Study(cfg(validate_seeds=(100,), sampler="random"), storage="memory",
                  evaluate=CandidatesOnly(lambda gs: [Evaluation(aulc=1.0) for _ in gs]))
    study.optimize(progress=False, validate=False)
    with pytest.raises(ConfigError, match="trains plain backprop"):
        study.validate(progress=False)
    assert math.isfinite(study.best_trial.value) and torch.is_tensor(study.omega_of(study.best_trial))


def test_heldout_verdict_line_and_bfn_meta(tmp_path):
    targets = (TargetEntry("gaussians-mlp3", (), "act2"), TargetEntry("digits-mlp"))
    c = cfg(seeds=(0,), targets=targets, validate_seeds=(100, 101, 102), validate_top_k=2, sampler="random")
    study = Study(c, storage="memory", evaluate=Quadratic())
    assert study.heldout_verdict() is None
    study.optimize(progress=False)
    best = study.best_heldout_trial()
    held, bp = best.user_attrs["heldout_aulc"], study.heldout_controls["backprop"]
    line = study.heldout_verdict()
    head = f"held-out verdict: g (trial {best.number}) {held['mean']:.5g} vs backprop 1 on 3 seeds: "
    assert line.startswith(head)
    d = [a - b for a, b in zip(held["values"], bp["values"], strict=True)]
    assert (f"g (trial {best.number}) wins" if sum(d) < 0 else "backprop wins") in line and "\n" not in line
    g = study.bfn_of(best)  # several targets: the score is a ratio, so no "aulc"
    assert "aulc" not in g.meta and g.meta["score"] == best.value and g.meta["study_file"] is None
    one = Study(cfg(sampler="random", path=str(tmp_path / "sub" / "s.toml")), storage="memory",
                evaluate=Quadratic()).optimize(progress=False)
    meta = one.bfn_of(one.best_trial).meta
    assert meta["aulc"] == meta["score"] == one.best_trial.value and meta["study_file"] == "s.toml"


def test_compare_tunes_each_baseline_in_batches_with_exactly_its_budget(monkeypatch):
    """metabp.analysis.tune_methods: budget lrs per method, batch lrs x seeds copies per call."""
    import metabp.targets
    from metabp.analysis import tune_methods
    from metabp.targets import get_target

    calls = []

    def fake_train_many(spec, bfns, where=None, seed=0, *, lr=None, **kw):
        calls.append((spec.optimizer, list(seed), list(lr)))
        return [Evaluation(aulc=math.log10(a) ** 2 + 0.01 * s) for s, a in zip(seed, lr, strict=True)]

    monkeypatch.setattr(metabp.targets, "train_many", fake_train_many)
    rows = tune_methods(get_target("gaussians-mlp3"), optimizers=["sgd"], budget=5, seeds=[0, 1], batch=2)
    assert [(o, len(s)) for o, s, _ in calls] == [("adam", 4), ("adam", 2), ("adam", 4)] + [
        ("sgd", 4), ("sgd", 2), ("sgd", 4)]  # grid of 3 lrs, then 2 refined: chunks of 2 lrs x 2 seeds
    assert all(s == [0, 1] * (len(s) // 2) and lr[::2] == lr[1::2] for _, s, lr in calls)
    for row, job in zip(rows, (calls[:3], calls[3:]), strict=True):
        lrs = [a for *_, lr in job for a in lr[::2]]
        assert len(set(lrs)) == 5 and row.tuning_runs == 5
        assert row.spec.lr == min(lrs, key=lambda a: math.log10(a) ** 2)
