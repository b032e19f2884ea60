"""Study: trials, per-seed scores, lr in the box, several targets, validation, export, real runs."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from optuna.trial import TrialState

import metabp
from metabp._cli import main
from metabp.exceptions import ConfigError
from metabp.search import CandidatesOnly, Evaluation, Study, StudyConfig

TARGET = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)
HELD = torch.tensor([-0.5, 0.5, 0.0, 1.0], dtype=torch.float64)  # held-out seeds (>= 100) prefer this


def cfg(**kw) -> StudyConfig:
    base = dict(name="t", target="gaussians-mlp3", bounds=((-2.0, 2.0),) * 4, n_initial=3, n_trials=6)
    return StudyConfig(**{**base, **kw})


class Quadratic:
    """Cheap evaluator with the full signature. Copy ``k``: ``|omega - TARGET|^2 + 0.1 seed`` (held-out
    seeds >= 100: ``HELD`` in place of ``TARGET``), times ``2`` on target 1, plus ``(log10 lr_k)^2``
    when copy ``k`` has an lr; backprop (``None``) scores ``1 + 0.1 seed``. ``omega_0 > diverge_above``
    diverges (penalty ``1e3``); ``omega_1 > nan_above`` returns a NaN AULC. ``calls``: one
    ``(copies, seeds, target, lr)`` per call."""

    def __init__(self, diverge_above: float = math.inf, nan_above: float = math.inf):
        self.calls: list[tuple[int, tuple[int, ...], int, float | None]] = []
        self.diverge_above, self.nan_above = diverge_above, nan_above

    def __call__(self, gs, seeds, *, target=0, lr=None):
        self.calls.append((len(gs), tuple(seeds), target, None if lr is None else tuple(lr)))
        lrs = [None] * len(gs) if lr is None else list(lr)
        return [self.one(g, s, target, a) for g, s, a in zip(gs, seeds, lrs, strict=True)]

    def one(self, g, seed, target, lr):
        extra = 0.1 * (seed % 100) + (0.0 if lr is None else math.log10(lr) ** 2)
        if g is None:
            v = 1.0 + extra
        elif g.omega[0] > self.diverge_above:
            return Evaluation(aulc=1e3, step_losses=[1.0, float("inf")], diverged=True, seconds=0.01)
        elif g.omega[1] > self.nan_above:
            return Evaluation(aulc=float("nan"), step_losses=[float("nan")], seconds=0.01)
        else:
            v = float(((g.omega - (HELD if seed >= 100 else TARGET)) ** 2).sum()) + extra
        v *= 1 + target
        return Evaluation(aulc=v, step_losses=[v, v / 2], epoch_losses=[v], test_accuracy=0.5, seconds=0.01)


def test_runs_to_budget_and_records_everything(capsys):
    ev = Quadratic()
    study = Study(cfg(seeds=(0, 1, 2)), storage="memory", evaluate=ev)
    study.optimize(progress=True)
    done = study.completed()
    assert len(done) == 6
    assert ev.calls[0] == (3, (0, 1, 2), 0, None)  # backprop on the search seeds, once
    assert [c[:2] for c in ev.calls[1:]] == [(3, (0, 1, 2))] * 6  # one call per candidate: 3 seeds
    t = done[0]
    assert sorted(t.params) == ["omega_0", "omega_1", "omega_2", "omega_3"]
    assert set(t.user_attrs) >= {"per_seed", "step_losses", "diverged", "seconds"}
    base = float(((study.omega_of(t) - TARGET) ** 2).sum())
    per_seed = t.user_attrs["per_seed"]
    assert [r["seed"] for r in per_seed] == [0, 1, 2]
    assert [r["aulc"] for r in per_seed] == pytest.approx([base, base + 0.1, base + 0.2])
    assert [r["backprop_aulc"] for r in per_seed] == pytest.approx([1.0, 1.1, 1.2])
    assert t.value == pytest.approx(base + 0.1)  # the mean over seeds
    assert study.backprop["mean"] == pytest.approx(1.1) and study.backprop["seeds"] == [0, 1, 2]
    err = capsys.readouterr().err
    assert "6/6" in err and "backprop 1.1" in err  # progress bar: g beside backprop
    assert "training" in err and "proposing" in err  # the time split
    split = study.last_time_split
    assert split["trials"] == 6 and split["proposing"] > 0 and split["training"] == pytest.approx(0.18)
    study.optimize(progress=True)  # at budget: nothing more, and it says so
    assert len(study.trials) == 6
    err = capsys.readouterr().err
    assert "complete, 6/6 trials" in err and "0 trials in" not in err


def test_a_seed_free_objective_is_declared_not_sniffed():
    def objective(gs):
        return [Evaluation(aulc=float(g.omega.abs().sum())) for g in gs]

    study = Study(cfg(sampler="random"), storage="memory", evaluate=CandidatesOnly(objective))
    study.optimize(progress=False)
    assert len(study.completed()) == 6 and study.backprop is None and not study.can_train_backprop
    assert Study(cfg(sampler="random"), storage="memory", evaluate=Quadratic()).can_train_backprop


def test_n_trials_caps_one_call_and_resume_continues(tmp_path):
    url = str(tmp_path / "s.journal")
    Study(cfg(sampler="tpe"), storage=url, evaluate=Quadratic()).optimize(2, progress=False)
    study = Study(cfg(sampler="tpe"), storage=url, evaluate=Quadratic())
    assert len(study.completed()) == 2
    study.optimize(progress=False)
    assert len(study.completed()) == 6


def test_diverged_candidates_are_labelled(capsys):
    ev = Quadratic(diverge_above=0.0)
    study = Study(cfg(n_trials=10, n_initial=4, sampler="tpe"), storage="memory", evaluate=ev)
    study.optuna_study.enqueue_trial({"omega_0": 1.0, "omega_1": 0.0, "omega_2": 0.0, "omega_3": 0.0})
    study.optimize(progress=True)
    done = study.completed()
    assert len(done) == 10 and all(math.isfinite(t.value) for t in done)
    diverged = [t for t in done if t.user_attrs["diverged"]]
    assert diverged and all(t.value >= 1e3 for t in diverged)
    assert None in diverged[0].user_attrs["step_losses"]  # non-finite losses stored as null
    assert "best 1000 (diverged)" in capsys.readouterr().err  # the first best-so-far, labelled
    assert not study.best_trial.user_attrs["diverged"]


def test_a_nan_score_fails_the_trial_with_a_named_error():
    study = Study(cfg(), storage="memory", evaluate=Quadratic(nan_above=-10.0))
    with pytest.raises(RuntimeError, match="non-finite AULC for copy 0 .*finite penalty"):
        study.optimize(progress=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "non-finite" in study.trials[0].system_attrs["metabp:error"]


def test_qlogei_batches_train_together():
    ev = Quadratic()
    study = Study(cfg(acquisition="qlogei", q=3, n_trials=8, seeds=(0, 1)), storage="memory", evaluate=ev)
    study.optimize(progress=False)
    assert [c[0] for c in ev.calls] == [2, 6, 6, 4]  # backprop x 2 seeds, then candidates x seeds
    assert ev.calls[1][1] == (0, 1, 0, 1, 0, 1)
    assert len(study.completed()) == 8
    assert len({tuple(t.params.values()) for t in study.completed()}) == 8


def test_lr_joins_the_box_on_a_log_scale():
    ev = Quadratic()
    study = Study(cfg(lr_bounds=(1e-3, 1.0), n_trials=8), storage="memory", evaluate=ev)  # botorch
    study.optimize(progress=False)
    t = study.completed()[0]
    assert study.config.param_names[-1] == "lr"
    dist = t.distributions["lr"]
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log
    assert (dist.low, dist.high) == (1e-3, 1.0)
    lrs = [c[3] for c in ev.calls[1:]]
    assert lrs == [pytest.approx((t.params["lr"],)) for t in study.completed()]  # one seed
    assert study.lr_of(t) == t.params["lr"] and study.bfn_of(t).meta["lr"] == t.params["lr"]


def test_lr_searched_with_q_candidates_trains_once_per_batch_per_target():
    """Whatever the candidates' lrs, a batch of q candidates x seeds is one trainer call per target."""
    from metabp.search import TargetEntry

    ev = Quadratic()
    targets = (TargetEntry("gaussians-mlp3", (), "act2"), TargetEntry("digits-mlp"))
    c = cfg(acquisition="qlogei", q=4, n_trials=8, n_initial=4, seeds=(0, 1), lr_bounds=(1e-3, 1.0),
            targets=targets)
    study = Study(c, storage="memory", evaluate=ev)
    study.optimize(progress=False)
    search = [call for call in ev.calls if call[3] is not None]
    assert [(n, target) for n, _, target, _ in search] == [(8, 0), (8, 1)] * 2  # 2 batches x 2 targets
    done = study.completed()
    assert len({t.params["lr"] for t in done[:4]}) == 4  # the start batch: four lrs in one call
    for b, batch in enumerate((done[:4], done[4:])):
        want = tuple(t.params["lr"] for t in batch for _ in (0, 1))
        assert search[2 * b][3] == pytest.approx(want)  # each candidate's own lr, twice (2 seeds)
        assert search[2 * b][1] == (0, 1) * 4
    for t in done:  # each candidate scored at its own lr
        d = float(((study.omega_of(t) - TARGET) ** 2).sum()) + math.log10(t.params["lr"]) ** 2
        want = [((d + 0.1 * k) * 1 / (1 + 0.1 * k) + (d + 0.1 * k) * 2 / (2 + 0.2 * k)) / 2 for k in (0, 1)]
        assert t.value == pytest.approx(sum(want) / 2)


def test_several_targets_score_the_mean_ratio_to_backprop():
    ev = Quadratic()
    targets = (("gaussians-mlp3", (), "act2"), ("digits-mlp", (), None))
    from metabp.search import TargetEntry

    c = cfg(seeds=(0, 1), sampler="random", targets=tuple(TargetEntry(*t) for t in targets))
    study = Study(c, storage="memory", evaluate=ev)
    study.optimize(progress=False)
    assert study.backprop["per_target"] == {"gaussians-mlp3": pytest.approx([1.0, 1.1]),
                                            "digits-mlp": pytest.approx([2.0, 2.2])}
    assert study.backprop["mean"] == 1.0
    t = study.completed()[0]
    rows = t.user_attrs["per_seed"]
    assert [(r["target"], r["seed"]) for r in rows] == [("gaussians-mlp3", 0), ("gaussians-mlp3", 1),
                                                       ("digits-mlp", 0), ("digits-mlp", 1)]
    ratios = [r["aulc"] / r["backprop_aulc"] for r in rows]
    assert t.value == pytest.approx(sum(ratios) / 4)


def test_study_file_must_match_stored_study(tmp_path):
    url = str(tmp_path / "s.journal")
    Study(cfg(), storage=url, evaluate=Quadratic())
    with pytest.raises(ConfigError, match="created with bounds"):
        Study(cfg(bounds=((-1.0, 1.0),) * 4), storage=url)
    with pytest.raises(ConfigError, match="created with seeds"):
        Study(cfg(seeds=(0, 1)), storage=url)
    tuple_override = cfg(name="h", overrides=(("hidden", (8, 8)),))  # stored as a JSON list: still equal
    Study(tuple_override, storage=url, evaluate=Quadratic())
    Study(tuple_override, storage=url, evaluate=Quadratic())


def test_evaluator_error_fails_the_trial_and_propagates():
    def broken(gs, seeds, *, target=0, lr=None):
        if any(g is not None for g in gs):
            raise RuntimeError("out of memory")
        return [Evaluation(aulc=1.0) for _ in gs]

    study = Study(cfg(), storage="memory", evaluate=broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        study.optimize(progress=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "out of memory" in study.trials[0].system_attrs["metabp:error"]


def test_a_failed_open_or_trial_leaves_the_storage_intact(tmp_path):
    url = str(tmp_path / "s.journal")
    Study(cfg(sampler="random"), storage=url, evaluate=Quadratic()).optimize(3, progress=False)
    before = (tmp_path / "s.journal").read_bytes()
    with pytest.raises(ConfigError, match="created with"):
        Study(cfg(sampler="random", seeds=(5,)), storage=url)
    assert (tmp_path / "s.journal").read_bytes() == before  # a refused open writes nothing

    def broken(gs, seeds, *, target=0, lr=None):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Study(cfg(sampler="random"), storage=url, evaluate=broken).optimize(progress=False)
    study = Study(cfg(sampler="random"), storage=url, evaluate=Quadratic())
    assert len(study.completed()) == 3 and study.trials[-1].state == TrialState.FAIL
    study.optimize(progress=False)
    assert len(study.completed()) == 6


def test_optuna_log_level_is_left_alone():
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        Study(cfg(n_trials=2, n_initial=2), storage="memory", evaluate=Quadratic()).optimize(progress=False)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- with real training runs (metabp.targets) ------------------------------------------------
STUDY = """
where = "act2"
seeds = [0, 1]
[target]
preset = "gaussians-mlp3"
epochs = 5
[metanet]
hidden = 1
[search]
acquisition = "qlogei"
q = 2
n_initial = 2
n_trials = 4
[validate]
seeds = [7, 8]
top_k = 2
"""


def test_cli_search_show_export_on_a_real_target(tmp_path, capsys):
    from metabp.targets import get_target, train

    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    assert main(["search", str(path), "--quiet"]) == 0
    assert (tmp_path / "tiny.journal").exists()  # default storage beside the study file
    capsys.readouterr()
    assert main(["show", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "tiny" and doc["n_trials"] == 4 and len(doc["trials"]) == 4 and doc["complete"]
    row = doc["trials"][0]
    assert row["state"] == "COMPLETE" and 0 < row["value"] < 10
    assert sorted(row["params"]) == ["omega_0", "omega_1", "omega_2", "omega_3"]
    assert [r["seed"] for r in row["per_seed"]] == [0, 1]
    assert doc["best"] == min(doc["trials"], key=lambda r: r["value"])["number"]
    spec = get_target("gaussians-mlp3", epochs=5)
    bp = [train(spec, None, "act2", s).aulc for s in (0, 1)]
    assert doc["backprop"]["values"] == pytest.approx(bp, rel=1e-5)
    held = [r for r in doc["trials"] if r["heldout_aulc"] is not None]
    assert len(held) == 2 and all(r["heldout_aulc"]["seeds"] == [7, 8] for r in held)
    assert doc["heldout_controls"]["backprop"]["values"] == pytest.approx(
        [train(spec, None, "act2", s).aulc for s in (7, 8)], rel=1e-5)
    assert doc["best_heldout"] == min(held, key=lambda r: r["heldout_aulc"]["mean"])["number"]
    study = Study(str(path))
    assert all(len(t.user_attrs["step_losses"]) == 5 for t in study.completed())  # full batch, 5 epochs
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best held-out" in out and "backprop on the search seeds [0, 1]" in out
    bfn = tmp_path / "best.bfn"
    assert main(["export", str(path), "-o", str(bfn)]) == 0
    assert metabp.load(bfn).meta["trial"] == doc["best_heldout"]
    assert "best held-out score" in capsys.readouterr().out
    assert main(["search", str(path), "--resume"]) == 0  # at budget: says so, trains nothing
    assert "complete, 4/4 trials" in capsys.readouterr().err
    assert len(Study(str(path)).trials) == 4
    assert main(["validate", str(path)]) == 0
    assert "held-out seeds [7, 8]" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    assert main(["show", str(path)]) == 2
    assert "no study named 'tiny'" in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(tmp_path / "g.bfn")]) == 2
    assert not list(tmp_path.glob("*.journal"))  # show and export only read: no empty journal file left
    assert main(["search", str(path), "--resume"]) == 2
    assert main(["search", str(path), "--trials", "0"]) == 2
    path.write_text(STUDY.replace("q = 2", "q = 0"))
    assert main(["search", str(path)]) == 2
    assert "[search] q = 0" in capsys.readouterr().err


def test_default_evaluator_passes_seeds_lr_device_and_compile(monkeypatch):
    import metabp.targets
    from metabp.search import train_evaluator

    seen = {}

    def fake_train_many(spec, gs, where=None, seed=0, **kw):
        seen.update(spec=spec, where=where, seed=seed, **kw)
        return [Evaluation(aulc=1.0) for _ in gs]

    monkeypatch.setattr(metabp.targets, "train_many", fake_train_many)
    c = cfg(overrides=(("epochs", 3),), where="act1", compile=True, data_dir="/data")
    evaluate = train_evaluator(c)
    evaluate([None, None], [4, 5], target=0, lr=0.25)
    assert seen["seed"] == [4, 5] and seen["where"] == "act1" and seen["compile"] is True
    assert seen["lr"] == 0.25 and seen["spec"].epochs == 3
    assert seen["device"] == "cpu" and seen["data_dir"] == "/data"
    evaluate([None, None], [4, 5], target=0, lr=[0.25, None])  # None: the target's own lr
    assert seen["lr"] == [0.25, seen["spec"].lr]
    evaluate([None], [4], target=0)
    assert seen["lr"] is None


def test_a_really_diverging_candidate_is_recorded():
    config = StudyConfig(name="div", target="gaussians-mlp3", overrides=(("epochs", 5), ("lr", 10.0)),
                         where="act2", bounds=((-5.0, 5.0),) * 4, n_initial=2, n_trials=3)
    study = Study(config, storage="memory")
    study.optuna_study.enqueue_trial({"omega_0": 0.0, "omega_1": 0.0, "omega_2": 0.0, "omega_3": -5.0})
    study.optimize(progress=False)
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE and first.user_attrs["diverged"] is True
    assert first.user_attrs["per_seed"][0]["diverged"] is True
    assert math.isfinite(first.value) and len(study.completed()) == 3
