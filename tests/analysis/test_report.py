"""Tests for metabp/analysis/_report*.py and the compare/report commands on a real (tiny) study."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import optuna
import pytest
import torch

import metabp
from metabp.analysis import ReportRequest, compute, report, trial_bfn
from metabp.analysis._stats import in_words, paired
from metabp.exceptions import ConfigError
from metabp.targets import get_target, train

torch.set_num_threads(1)

SPEC = get_target("gaussians-mlp3", epochs=8)
OMEGAS = [[1.0, 0.0, 0.5, 0.5], [2.0, 1.0, 0.5, 0.5], [-1.0, 0.0, 1.0, 0.0], [3.0, -1.0, 0.4, 0.6]]
HELD_SEEDS = [100, 101]


def _trials(omegas, *, validate=()):
    """Trials in the stored schema (params omega_i, value = AULC, user attrs); trials whose index is
    in ``validate`` carry a ``heldout_aulc`` on HELD_SEEDS."""
    dist = optuna.distributions.FloatDistribution(-5, 5)
    out = []
    for i, omega in enumerate(omegas):
        g = metabp.MetaNet(omega=omega)
        run = train(SPEC, g, "act2", seed=0)
        attrs = {"step_losses": run.step_losses, "diverged": run.diverged, "test_accuracy": run.test_accuracy,
                 "seconds": run.seconds}
        if i in validate:
            values = [train(SPEC, g, "act2", seed=s).aulc for s in HELD_SEEDS]
            attrs["heldout_aulc"] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
                                     "seeds": HELD_SEEDS, "values": values}
        t = optuna.trial.create_trial(params={f"omega_{k}": w for k, w in enumerate(omega)},
                                      distributions={f"omega_{k}": dist for k in range(4)}, value=run.aulc,
                                      user_attrs=attrs)
        t.number = i
        out.append(t)
    return out


def _controls():
    values = [train(SPEC, None, None, seed=s).aulc for s in HELD_SEEDS]
    return {"backprop": {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
                         "seeds": HELD_SEEDS, "values": values}}


def test_trial_bfn_reads_omega_in_index_order():
    names = [f"omega_{k}" for k in range(13)]  # hidden=4: 3*4+1; "omega_10" sorts before "omega_2"
    t = optuna.trial.create_trial(params={n: float(k) for k, n in enumerate(names)},
                                  distributions={n: optuna.distributions.FloatDistribution(-20, 20)
                                                 for n in names}, value=1.0)
    assert trial_bfn(t, hidden=4).omega.tolist() == [float(k) for k in range(13)]


def test_compute_chooses_the_best_heldout_and_measures_overfitting():
    trials = _trials(OMEGAS, validate=(0, 1, 3))
    request = ReportRequest(SPEC, where="act2", seeds=[0], controls=_controls(), alignment=False)
    data = compute(trials, request)
    held = {t.number: t.user_attrs["heldout_aulc"]["mean"] for t in trials if "heldout_aulc" in t.user_attrs}
    assert data.chosen.number == min(held, key=held.get)
    assert data.best.number == min(trials, key=lambda t: t.value).number
    assert [t.number for t in data.validated] == sorted(held, key=lambda n: trials[n].value)
    assert data.overfit == pytest.approx([held[t.number] - t.value for t in data.validated])
    assert data.backprop == train(SPEC, None, None, seed=0).aulc  # one seed, nothing stored: trained
    np.testing.assert_allclose(data.curves["g"], trial_bfn(data.chosen)(torch.from_numpy(data.curves["z"])))


def test_report_writes_index_with_right_numbers(tmp_path):
    trials = _trials(OMEGAS, validate=(0, 1, 3))
    baseline = _trials(OMEGAS[:2])
    controls = _controls()
    request = ReportRequest(SPEC, where="act2", name="tiny", sampler="botorch",
                            baselines={"random": baseline}, seeds=[0], top=3, controls=controls,
                            backprop={"mean": 0.5, "std": 0.0, "seeds": [0], "values": [0.5]})
    files = report(trials, request, tmp_path)
    text = files.index.read_text()
    assert files.index == tmp_path / "index.md"
    linked = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert sorted(p.name for p in files.figures) == sorted(linked)  # what it wrote is what it shows
    best = min(trials, key=lambda t: t.value)
    assert f"Best AULC {best.value:.4f}** (trial {best.number}) against plain backprop's 0.5000" in text
    assert "scale-invariant" in text  # adam
    assert "random best" in text
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert {"search_trace.png", "best_implicit_lr.png", "top_candidates.png", "loss_curves.png",
            "alignment.png", "heldout.png"} <= {p.name for p in tmp_path.glob("*.png")}
    # the chosen g (best held-out) against the held-out backprop control, paired over the seeds
    chosen = min((t for t in trials if "heldout_aulc" in t.user_attrs),
                 key=lambda t: t.user_attrs["heldout_aulc"]["mean"])
    h = chosen.user_attrs["heldout_aulc"]
    assert f"trial {chosen.number} (best of 3 validated), scores {h['mean']:.4f}" in text
    assert in_words(paired(h["values"], controls["backprop"]["values"]), f"trial {chosen.number}",
                    "plain backprop", what="score") in text
    assert "Spearman rho" in text
    b = controls["backprop"]
    assert f"| plain backprop | 0.5000 | {b['mean']:.4f} ± {b['std']:.4f} | {b['mean'] - 0.5:+.4f} |" in text
    assert f"| trial {chosen.number} (chosen) | {chosen.value:.4f} | {h['mean']:.4f}" in text
    assert "injects credit" in text  # omega [*, *, w2, b2]: g(z) != 0 where relu' = 0
    rows = [line for line in text.splitlines() if re.match(r"\| [123] \| \d+ \|", line)]
    assert len(rows) == 3 and f"| 1 | {best.number} | {best.value:.4f} |" in rows[0]


def test_report_without_validation_says_so(tmp_path):
    text = report(_trials(OMEGAS[:2]), ReportRequest(SPEC, alignment=False), tmp_path).index.read_text()
    assert "No candidate was validated on held-out seeds" in text
    assert not (tmp_path / "heldout.png").exists()


def test_multi_target_report_scores_backprop_as_one(tmp_path):
    request = ReportRequest(SPEC, multi_target=True, alignment=False, seeds=[0, 1])
    text = report(_trials(OMEGAS[:2]), request, tmp_path).index.read_text()
    assert "**Best score (mean ratio to backprop over targets and seeds)" in text
    assert "against plain backprop's 1.0000 on the same seeds [0, 1]" in text


def test_report_without_completed_trials_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="metabp search"):
        report([], ReportRequest(SPEC), tmp_path)


STUDY_TOML = """
name = "{name}"
where = "act2"
seeds = [0, 1]
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
lr = [0.01, 0.3]
storage = "{storage}"
[validate]
seeds = [10, 11]
top_k = 2
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from metabp import search

    tmp_path = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    paths = {}
    for name, sampler in (("tiny", "random"), ("tiny-tpe", "tpe")):
        p = tmp_path / f"{name}.toml"
        p.write_text(STUDY_TOML.format(name=name, sampler=sampler, storage=storage))
        search.Study(p).optimize(progress=False)
        paths[name] = p
    return paths["tiny"], storage


@pytest.mark.slow
def test_cli_report_and_compare_on_a_real_study(tiny_study, tmp_path, capsys):
    from metabp._cli import main
    from metabp.search import Study

    path, storage = tiny_study
    st = Study(path, storage=storage)
    chosen = st.best_heldout_trial()
    out = tmp_path / "report"
    assert main(["report", str(path), "--storage", storage, "-o", str(out), "--no-alignment"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]  # the PNGs it wrote, by name
    assert said.startswith(f"wrote {out / 'index.md'} and ") and "search_trace.png, " in said
    assert sorted(said.split(" and ", 1)[1].removesuffix(" beside it").split(", ")) == sorted(
        p.name for p in out.glob("*.png"))
    text = (out / "index.md").read_text()
    assert "Study `tiny`" in text and "tpe best" in text  # the TPE search found as a baseline
    assert f"trial {chosen.number} (best of 2 validated)" in text and (out / "heldout.png").exists()
    assert main(["compare", str(path), "--storage", storage, "--seeds", "2", "--optimizers", "sgd",
                 "-o", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "Baselines tuned with 3 trials each" in md
    assert "held-out seeds 12, 13" in md and "search seeds 0, 1" in md  # above search and validation seeds
    assert f"g + its lr (trial {chosen.number}, best held-out)" in md
    assert f"| {st.lr_of(chosen):.3g} |" in md
    assert "**Verdict.**" in md and "lr tuned alone" in md
    assert math.isfinite(float((out / "compare.csv").read_text().splitlines()[1].split(",")[5]))
    # report picks the comparison up from the same folder
    assert main(["report", str(path), "--storage", storage, "-o", str(out), "--no-alignment"]) == 0
    assert "## Against tuned baseline optimizers" in (out / "index.md").read_text()


def test_compare_study_rejects_search_seeds(tiny_study):
    from metabp.analysis import compare_study

    path, storage = tiny_study
    with pytest.raises(ConfigError, match=r"\[1\] are search seeds"):
        compare_study(path, storage=storage, seeds=[1, 7], output=None)
    with pytest.raises(ConfigError, match="target='mnist1d-mlp'"):
        compare_study(path, storage=storage, target="mnist1d-mlp", output=None)


def _per_site_trials(omegas):
    """Trials of a study with sites act1, act2: params omega_0..omega_7, site j's g from omega[4j:4j+4]."""
    dist = optuna.distributions.FloatDistribution(-5, 5)
    out = []
    for i, omega in enumerate(omegas):
        g = metabp.PerSite({"act1": metabp.MetaNet(omega=omega[:4]), "act2": metabp.MetaNet(omega=omega[4:])})
        run = train(SPEC, g, seed=0)
        t = optuna.trial.create_trial(params={f"omega_{k}": w for k, w in enumerate(omega)},
                                      distributions={f"omega_{k}": dist for k in range(8)}, value=run.aulc,
                                      user_attrs={"step_losses": run.step_losses, "diverged": run.diverged})
        t.number = i
        out.append(t)
    return out


def test_a_per_site_report_shows_each_sites_g(tmp_path):
    omegas = [OMEGAS[0] + OMEGAS[1], OMEGAS[2] + OMEGAS[3], OMEGAS[3] + OMEGAS[0]]
    trials = _per_site_trials(omegas)
    request = ReportRequest(SPEC, sites=("act1", "act2"), seeds=[0], top=3)
    files = report(trials, request, tmp_path)
    best = min(trials, key=lambda t: t.value)
    omega = omegas[best.number]
    data = compute(trials, dataclasses.replace(request, alignment=False))
    assert list(data.g) == ["act1", "act2"] and data.g["act2"].omega.tolist() == omega[4:]
    z = torch.from_numpy(data.shapes["act2"].curves["z"])
    np.testing.assert_allclose(data.shapes["act2"].curves["g"], metabp.MetaNet(omega=omega[4:])(z))
    text = files.index.read_text()
    assert "at `act1`, `act2` (one g per site, each with its own omega)" in text
    assert "- At `act1`: Implicit learning rate" in text and "- At `act2`: The top 3 candidates" in text
    assert f"act1: {', '.join(f'{w:.3g}' for w in omega[:4])}; act2: " in text  # the candidates' omega
    names = {p.name for p in files.figures}
    assert {"best_implicit_lr_act1.png", "best_implicit_lr_act2.png", "top_candidates_act1.png",
            "top_candidates_act2.png", "alignment.png"} <= names
    assert sorted(names) == sorted(re.findall(r"\]\(([^)]+\.png)\)", text))
    with pytest.raises(ConfigError, match="8 omega_i params; 3 sites"):
        trial_bfn(trials[0], sites=("act1", "act2", "act3"))


def test_a_per_site_report_request_takes_a_list_of_sites_and_no_where():
    with pytest.raises(ConfigError, match=r"sites='act1': give a list of sites, e.g. \['act1'\]"):
        ReportRequest(SPEC, sites="act1")
    with pytest.raises(ConfigError, match=r"where='act2' with sites \['act1', 'act2'\].*leave where at None"):
        ReportRequest(SPEC, where="act2", sites=("act1", "act2"))
    assert ReportRequest(SPEC, sites=["act1"]).sites == ["act1"]
