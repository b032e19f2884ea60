"""Study: trials, attrs, batches, divergence, resume to budget, export, real training runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from optuna.trial import TrialState

import metabp
from metabp._cli import main
from metabp.exceptions import ConfigError
from metabp.search import Evaluation, Study, StudyConfig

TARGET = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)


def cfg(**kw) -> StudyConfig:
    base = dict(name="t", target="gaussians-mlp3", bounds=((-2.0, 2.0),) * 4, n_initial=3, n_trials=6)
    return StudyConfig(**{**base, **kw})


class Quadratic:
    """Cheap evaluator; records the batch sizes it was called with. ``omega_0 > diverge_above``
    diverges (penalty ``1e3``); ``omega_1 > nan_above`` returns a NaN AULC."""

    def __init__(self, diverge_above: float = math.inf, nan_above: float = math.inf):
        self.batches: list[int] = []
        self.diverge_above, self.nan_above = diverge_above, nan_above

    def __call__(self, gs):
        self.batches.append(len(gs))
        out = []
        for g in gs:
            w = g.omega
            if w[0] > self.diverge_above:
                out.append(Evaluation(aulc=1e3, step_losses=[1.0, float("inf")], diverged=True, seconds=0.01))
            elif w[1] > self.nan_above:
                out.append(Evaluation(aulc=float("nan"), step_losses=[float("nan")], seconds=0.01))
            else:
                v = float(((w - TARGET) ** 2).sum())
                out.append(Evaluation(aulc=v, step_losses=[v, v / 2], epoch_losses=[v], test_accuracy=0.5,
                                      seconds=0.01))
        return out


def test_runs_to_budget_and_records_everything(capsys):
    ev = Quadratic()
    study = Study(cfg(), storage="memory", evaluate=ev)
    study.optimize(progress=True)
    done = study.completed()
    assert len(done) == 6 and ev.batches == [1] * 6
    t = done[0]
    assert sorted(t.params) == ["omega_0", "omega_1", "omega_2", "omega_3"]
    assert set(t.user_attrs) >= {"step_losses", "epoch_losses", "diverged", "seconds", "test_accuracy"}
    assert t.value == pytest.approx(float(((study.omega_of(t) - TARGET) ** 2).sum()))
    err = capsys.readouterr().err
    assert "6/6" in err and "best AULC" in err  # progress bar
    assert "training" in err and "proposing" in err  # the time split
    split = study.last_time_split
    assert split["trials"] == 6 and split["proposing"] > 0 and split["training"] == pytest.approx(0.06)
    study.optimize(progress=False)  # at budget: nothing more
    assert len(study.trials) == 6


def test_n_trials_caps_one_call_and_resume_continues(tmp_path):
    url = str(tmp_path / "s.journal")
    Study(cfg(), storage=url, evaluate=Quadratic()).optimize(2, progress=False)
    study = Study(cfg(), storage=url, evaluate=Quadratic())
    assert len(study.completed()) == 2
    study.optimize(progress=False)
    assert len(study.completed()) == 6


def test_diverged_and_nan_candidates_are_recorded_and_search_goes_on():
    ev = Quadratic(diverge_above=0.0, nan_above=1.0)
    study = Study(cfg(n_trials=10, n_initial=4), storage="memory", evaluate=ev)
    study.optimize(progress=False)
    done = study.completed()
    assert len(done) == 10 and all(t.state == TrialState.COMPLETE for t in study.trials)
    diverged = [t for t in done if t.user_attrs["diverged"]]
    assert diverged and all(math.isfinite(t.value) for t in done)
    assert all(t.value >= 1e3 for t in diverged)
    assert None in diverged[0].user_attrs["step_losses"]  # non-finite losses stored as null
    assert not study.best_trial.user_attrs["diverged"]


def test_qlogei_batches_train_together():
    ev = Quadratic()
    study = Study(cfg(acquisition="qlogei", q=3, n_trials=8), storage="memory", evaluate=ev)
    study.optimize(progress=False)
    assert ev.batches == [3, 3, 2] and len(study.completed()) == 8
    points = {tuple(t.params.values()) for t in study.completed()}
    assert len(points) == 8


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "cmaes"])
def test_baseline_samplers_run_a_study(sampler):
    study = Study(cfg(sampler=sampler), storage="memory", evaluate=Quadratic())
    study.optimize(progress=False)
    assert len(study.completed()) == 6


def test_best_bfn_and_export(tmp_path):
    study = Study(cfg(), storage="memory", evaluate=Quadratic())
    with pytest.raises(ConfigError, match="no completed trial"):
        study.best_bfn()
    study.optimize(progress=False)
    g = study.best_bfn()
    best = study.best_trial
    assert isinstance(g, metabp.MetaNet) and torch.equal(g.omega, study.omega_of(best))
    assert g.meta["study"] == "t" and g.meta["trial"] == best.number and g.meta["score"] == best.value
    loaded = metabp.load(study.export(tmp_path / "best.bfn"))
    assert torch.equal(loaded.omega, g.omega) and loaded.meta["trial"] == best.number


def test_study_file_must_match_stored_study(tmp_path):
    url = str(tmp_path / "s.journal")
    Study(cfg(), storage=url, evaluate=Quadratic())
    with pytest.raises(ConfigError, match="created with bounds"):
        Study(cfg(bounds=((-1.0, 1.0),) * 4), storage=url)


def test_evaluator_error_fails_the_trial_and_propagates():
    def broken(gs):
        raise RuntimeError("out of memory")

    study = Study(cfg(), storage="memory", evaluate=broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        study.optimize(progress=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "out of memory" in study.trials[0].system_attrs["metabp:error"]


# --- with real training runs (metabp.targets) ------------------------------------------------
STUDY = """
where = "act2"
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
"""


def test_cli_search_show_export_on_a_real_target(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    assert main(["search", str(path), "--quiet"]) == 0
    assert (tmp_path / "tiny.journal").exists()  # default storage beside the study file
    capsys.readouterr()
    assert main(["show", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "tiny" and doc["n_trials"] == 4 and len(doc["trials"]) == 4
    row = doc["trials"][0]
    assert row["state"] == "COMPLETE" and 0 < row["value"] < 10
    assert sorted(row["params"]) == ["omega_0", "omega_1", "omega_2", "omega_3"]
    assert doc["best"] == min(doc["trials"], key=lambda r: r["value"])["number"]
    study = Study(str(path))
    assert all(len(t.user_attrs["step_losses"]) == 5 for t in study.completed())  # full batch, 5 epochs
    assert main(["show", str(path)]) == 0
    assert "best" in capsys.readouterr().out
    out = tmp_path / "best.bfn"
    assert main(["export", str(path), "-o", str(out)]) == 0
    assert metabp.load(out).meta["trial"] == doc["best"]
    assert main(["search", str(path), "--resume", "--quiet"]) == 0  # at budget: nothing to do
    assert len(Study(str(path)).trials) == 4


def test_cli_errors(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    assert main(["show", str(path)]) == 1
    assert "no study named 'tiny'" in capsys.readouterr().err
    assert main(["search", str(path), "--resume"]) == 1
    assert main(["search", str(path), "--trials", "0"]) == 1
    path.write_text(STUDY.replace("q = 2", "q = 0"))
    assert main(["search", str(path)]) == 1
    assert "[search] q = 0" in capsys.readouterr().err


def test_a_really_diverging_candidate_is_recorded(tmp_path):
    config = StudyConfig(name="div", target="gaussians-mlp3", overrides=(("epochs", 5), ("lr", 10.0)),
                         where="act2", bounds=((-5.0, 5.0),) * 4, n_initial=2, n_trials=3)
    study = Study(config, storage="memory")
    study.optuna_study.enqueue_trial({"omega_0": 0.0, "omega_1": 0.0, "omega_2": 0.0, "omega_3": -5.0})
    study.optimize(progress=False)
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE and first.user_attrs["diverged"] is True
    assert math.isfinite(first.value) and len(study.completed()) == 3
