"""Tests for metabp/analysis/_report.py and the compare/report commands on a real (tiny) study."""

from __future__ import annotations

import math
import re

import optuna
import pytest
import torch

import metabp
from metabp.analysis import report, trial_bfn
from metabp.exceptions import ConfigError
from metabp.targets import get_target, train

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = get_target("gaussians-mlp3", epochs=8)
OMEGAS = [[1.0, 0.0, 0.5, 0.5], [2.0, 1.0, 0.5, 0.5], [-1.0, 0.0, 1.0, 0.0], [3.0, -1.0, 0.4, 0.6]]


def _trials(omegas):
    """Trials in the format metabp.search stores (params omega_i, value AULC, user attrs)."""
    dist = optuna.distributions.FloatDistribution(-5, 5)
    out = []
    for i, omega in enumerate(omegas):
        g = metabp.MetaNet(omega=omega)
        run = train(SPEC, g, "act2", seed=0)
        t = optuna.trial.create_trial(
            params={f"omega_{k}": w for k, w in enumerate(omega)},
            distributions={f"omega_{k}": dist for k in range(4)}, value=run.aulc,
            user_attrs={"step_losses": run.step_losses, "diverged": run.diverged,
                        "test_accuracy": run.test_accuracy, "seconds": run.seconds})
        study = optuna.create_study()
        study.add_trial(t)
        out.append(dataclass_number(study.trials[0], i))
    return out


def dataclass_number(t, number):
    t.number = number
    return t


def test_trial_bfn_reads_omega_in_index_order():
    names = [f"omega_{k}" for k in range(13)]  # hidden=4: 3*4+1; "omega_10" sorts before "omega_2"
    t = optuna.trial.create_trial(params={n: float(k) for k, n in enumerate(names)},
                                  distributions={n: optuna.distributions.FloatDistribution(-20, 20)
                                                 for n in names}, value=1.0)
    assert trial_bfn(t, hidden=4).omega.tolist() == [float(k) for k in range(13)]


def test_report_writes_index_with_right_numbers(tmp_path):
    trials = _trials(OMEGAS)
    baseline = _trials(OMEGAS[:2])
    index = report(trials, spec=SPEC, output=tmp_path, where="act2", name="tiny", sampler="botorch",
                   baselines={"random": baseline}, seed=0, top=3)
    text = index.read_text()
    best = min(trials, key=lambda t: t.value)
    plain = train(SPEC, None, None, seed=0)
    assert f"Best AULC {best.value:.4f}** (trial {best.number})" in text
    assert f"{plain.aulc:.4f}" in text
    assert "scale-invariant" in text  # adam
    assert "random best" in text
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert {"search_trace.png", "best_implicit_lr.png", "top_candidates.png", "loss_curves.png",
            "alignment.png"} <= {p.name for p in tmp_path.glob("*.png")}
    # omega [*, *, w2, b2] with relu' = 0 below zero: g(-4) != 0 there, so credit is injected
    assert "injects credit" in text
    rows = [line for line in text.splitlines() if re.match(r"\| [123] \| \d+ \|", line)]
    assert len(rows) == 3 and f"| 1 | {best.number} | {best.value:.4f} |" in rows[0]


def test_report_without_completed_trials_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="metabp search"):
        report([], spec=SPEC, output=tmp_path)


STUDY_TOML = """
name = "{name}"
where = "act2"
seed = 0
[target]
preset = "gaussians-mlp3"
epochs = 6
[metanet]
hidden = 1
act = "tanh"
[search]
sampler = "{sampler}"
n_initial = 2
n_trials = 3
bounds = [-3.0, 3.0]
storage = "{storage}"
"""


@pytest.fixture
def tiny_study(tmp_path):
    search = pytest.importorskip("metabp.search")
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    paths = {}
    for name, sampler in (("tiny", "random"), ("tiny-tpe", "tpe")):
        p = tmp_path / f"{name}.toml"
        p.write_text(STUDY_TOML.format(name=name, sampler=sampler, storage=storage))
        search.Study(p).optimize(progress=False)
        paths[name] = p
    return paths["tiny"], storage


def test_cli_report_and_compare_on_a_real_study(tiny_study, tmp_path, capsys):
    from metabp._cli import main

    path, storage = tiny_study
    out = tmp_path / "report"
    assert main(["report", str(path), "--storage", storage, "-o", str(out)]) == 0
    text = (out / "index.md").read_text()
    assert "Study `tiny`" in text and "tpe best" in text  # the TPE search found as a baseline
    assert main(["compare", str(path), "--storage", storage, "--seeds", "2", "--optimizers", "sgd,adam",
                 "-o", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "Baselines tuned with 3 training runs each" in md
    assert "seeds 1, 2" in md
    assert math.isfinite(float((out / "compare.csv").read_text().splitlines()[1].split(",")[5]))


def test_report_includes_an_earlier_compare(tiny_study, tmp_path):
    from metabp.analysis import compare_study, report_study

    path, storage = tiny_study
    res = compare_study(path, storage=storage, seeds=2, budget=2, optimizers=["sgd"], output=tmp_path)
    text = report_study(path, storage=storage, output=tmp_path, alignment=False).read_text()
    g = next(r for r in res.rows if r.kind == "bfn")
    assert "## Against tuned baseline optimizers" in text
    assert f"the best g scores AULC {g.aulc[0]:.4f} ± {g.aulc[1]:.4f}" in text
    assert "g(z) / max|g|" in text  # adam: shapes compared at a common scale
