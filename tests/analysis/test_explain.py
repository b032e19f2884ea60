"""Tests for metabp/analysis/_explain*.py, _forms.py, _describe.py and _lr_sweep.py: exact forms,
recovered steps, forms saved as .bfn, the lr sweep's seeds and the CLI's errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import metabp
from metabp.analysis import compare, describe, explain, fit_forms, lr_sweep
from metabp.exceptions import ConfigError
from metabp.targets import get_target, train

torch.set_num_threads(1)

SPEC = get_target("gaussians-mlp3", epochs=3)
SLOW = ("slow backprop", dataclasses.replace(SPEC, lr=SPEC.lr / 4))


@pytest.mark.parametrize(("g", "c"), [(metabp.Derivative("relu"), 1.0), (metabp.Scaled(2.0), 2.0)])
def test_explain_finds_the_exact_form(g, c, tmp_path):
    res = explain(g, SPEC, lr=SPEC.lr, seeds=[3, 4], baseline=SLOW, output=tmp_path)
    scaled = next(r for r in res.form_rows if r.label == "scaled derivative")
    assert scaled.form.params == {"c": c} and scaled.form.rms == 0.0
    assert scaled.aulcs == res.row("g").aulcs and scaled.share == 1.0
    assert res.best_form.share == pytest.approx(1.0, abs=0.01)  # the tanh steps: exact up to a table cell
    two = next(f for f in res.forms if f.name == "2-level step")
    assert two.params["levels"] == [0.0, c] and two.rms == 0.0
    assert (tmp_path / "explain.md").exists() and (tmp_path / "explain.png").exists()
    rows = (tmp_path / "explain.csv").read_text().splitlines()
    assert len(rows) == 1 + len(res.rows) and rows[2].startswith("scaled derivative,form,")
    assert "100% of the gain, at least 70%" in res.markdown


def test_a_two_level_step_metanet_is_recovered_by_the_k2_fit():
    lo, hi, t = -1.5, 3.0, 0.5
    g = metabp.MetaNet(1, "tanh", omega=[1e3, -1e3 * t, (hi - lo) / 2, (hi + lo) / 2])
    step = next(f for f in fit_forms(g, "relu") if f.name == "2-level step")
    assert step.params["thresholds"][0] == pytest.approx(t, abs=0.005)
    assert step.params["levels"] == pytest.approx([lo, hi], abs=0.01)
    assert step.rel < 0.05  # the grid points inside g's own transition
    d = describe(g, "relu", box=(-1e3, 1e3))
    assert d.zero_crossings == [pytest.approx(t, abs=0.005)] and d.monotone == "non-decreasing"
    assert d.edges == ["w1_1 = 1000"] and d.limits == pytest.approx((lo, hi))


def test_a_fitted_form_saved_as_bfn_loads_and_trains(tmp_path):
    g = metabp.MetaNet(2, "tanh", omega=[-5.0, 5.0, 5.0, 2.7, -3.4, 3.4, 5.0])
    forms = {f.name: f for f in fit_forms(g, "relu")}
    for name in ("3-level step", "piecewise-linear (3 knots)"):
        form = forms[name]
        path = metabp.save(form.bfn, tmp_path / "form.bfn")
        loaded = metabp.load(path)
        z = torch.linspace(-5, 5, 101, dtype=torch.float64)
        assert torch.equal(loaded(z, "relu"), form.bfn(z, "relu"))
        a, b = train(SPEC, loaded, "act2", seed=0), train(SPEC, form.bfn, "act2", seed=0)
        assert math.isfinite(a.aulc) and a.step_losses == b.step_losses


def test_lr_sweep_trains_on_held_out_seeds_only(monkeypatch):
    import metabp.targets as targets

    seen, real = [], targets.train_many

    def spy(spec, bfns, where=None, seed=0, **kw):
        seen.append((spec.lr, list(seed)))
        return real(spec, bfns, where, seed=seed, **kw)

    monkeypatch.setattr(targets, "train_many", spy)
    res = compare(SPEC, metabp.Scaled(2.0), budget=1, seeds=[7, 8], tune_seeds=[0], optimizers=["adam"],
                  bfn_lr=0.05, lr_range=(0.01, 0.5), lr_sweep=3)
    sweep = res.sweep
    assert sweep.seeds == [7, 8] and len(sweep.lrs) == 3 and len(sweep.g[0]) == 2
    swept = [s for lr, s in seen if lr in sweep.lrs]
    assert len(swept) == 3 and all(set(s) == {7, 8} for s in swept)
    assert sweep.lrs[0] == pytest.approx(min(0.05, res.kind("control").lr) / 4)
    assert "lr robustness (held-out seeds 7, 8)" in res.markdown
    with pytest.raises(ConfigError, match="are tuning seeds"):
        lr_sweep(SPEC, metabp.Scaled(2.0), g_lr=0.05, tuned_lr=None, seeds=[0, 7], tune_seeds=[0], n=2)
    with pytest.raises(ConfigError, match="lr_sweep=1"):
        compare(SPEC, metabp.Scaled(2.0), budget=1, seeds=[7], lr_sweep=1)


def test_narrow_and_robust_lr_verdicts():
    from metabp.analysis import LrSweep

    lrs = [0.001, 0.002, 0.004, 0.008]
    bp = [[1.0, 1.1, 1.2]] * 4
    g = [[1.0, 1.1, 1.2], [0.5, 0.61, 0.7], [1.0, 1.1, 1.2], [2.0, 2, 2]]
    narrow = LrSweep(lrs, [1, 2, 3], g, bp, 0.002)
    assert narrow.wins() == [1] and "at lr 0.002 (1 of 4 swept lrs);" in narrow.verdict()
    assert "narrow lr range" in narrow.verdict()
    wide = LrSweep(lrs, [1, 2, 3], [[0.5, 0.61, 0.7]] * 3 + [[math.inf, 2, 2]], bp, 0.002)
    assert "robust to the lr" in wide.verdict() and "[0.001, 0.004]" in wide.verdict()
    assert "g diverges at lr 0.008 (1/3 seeds) and above where backprop does not" in wide.verdict()
    elsewhere = LrSweep(lrs, [1, 2, 3], g, bp, 0.008)
    assert "(not around g's own lr)" in elsewhere.verdict()
    none = LrSweep(lrs, [1, 2, 3], [[2.0, 2.1, 2.2]] * 4, bp, 0.002)
    assert "at none of the 4 swept lrs" in none.verdict()


def test_a_written_lr_sweep_reads_back(tmp_path):
    from metabp.analysis import LrSweep, read_sweep, write_sweep

    sweep = LrSweep([0.001, 0.01], [4, 5], [[0.5, math.inf], [0.25, 0.125]], [[1.0, 2.0], [0.5, 0.75]], 0.01)
    write_sweep(sweep, tmp_path)
    back = read_sweep(tmp_path / "lr_sweep.csv", g_lr=0.01)
    assert (back.lrs, back.seeds, back.g, back.backprop) == (sweep.lrs, sweep.seeds, sweep.g, sweep.backprop)
    assert back.verdict() == sweep.verdict() and (tmp_path / "lr_sweep.png").exists()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    metabp.save(metabp.Scaled(2.0), d / "scaled.bfn")
    (d / "broken.bfn").write_bytes(b"not a bfn file at all")
    study = d / "unvalidated.toml"
    study.write_text('where = "act2"\nseeds = [0]\n[target]\npreset = "gaussians-mlp3"\nepochs = 1\n'
                     '[metanet]\nhidden = 1\n[search]\nsampler = "random"\nn_trials = 1\n'
                     f'bounds = [-1.0, 1.0]\nstorage = "sqlite:///{d / "s.db"}"\n')
    from metabp.search import Study

    Study(study).optimize(progress=False)  # searched, never validated
    g = metabp.MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0])
    g.meta = {"target": "gaussians-mlp3"}
    metabp.save(g, d / "g.bfn")
    return d


@pytest.mark.parametrize(("argv", "says"), [
    (["missing.bfn"], "missing.bfn"),
    (["broken.bfn"], "broken.bfn"),
    (["scaled.bfn"], "holds a scaled b-function"),
    (["g.bfn", "--study", "unvalidated.toml"], "no held-out validation"),
])
def test_cli_explain_errors_are_one_line_and_exit_2(bad_files, argv, says, capsys):
    from metabp._cli import main

    argv = [str(bad_files / a) if a.endswith((".bfn", ".toml")) else a for a in argv]
    code = main(["explain", *argv, "-o", str(bad_files / "out")])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


PER_SITE = metabp.PerSite({"act1": metabp.Derivative("relu"), "act2": metabp.Scaled(2.0)})


def test_explain_per_site_finds_each_exact_form(tmp_path):
    res = explain(PER_SITE, SPEC, lr=SPEC.lr, seeds=[3, 4], baseline=SLOW, output=tmp_path)
    assert res.sites == ["act1", "act2"] and res.description is None
    scaled = next(r for r in res.form_rows if r.label == "scaled derivative")
    assert scaled.form.params == {"act1": {"c": 1.0}, "act2": {"c": 2.0}} and scaled.form.rms == 0.0
    assert scaled.aulcs == res.row("g").aulcs and scaled.share == 1.0
    assert res.best_form.share == pytest.approx(1.0, abs=0.01)
    for site, c in (("act1", 1.0), ("act2", 2.0)):
        two = next(f for f in res.site_forms[site] if f.name == "2-level step")
        assert two.params["levels"] == [0.0, c] and two.rms == 0.0
        assert res.descriptions[site].limits == (0.0, c)
    assert "**Site `act1`**" in res.markdown and "**Site `act2`**" in res.markdown
    assert "`act1`: c = 1; `act2`: c = 2" in res.markdown and "100% of the gain, at least 70%" in res.markdown
    rows = (tmp_path / "explain.csv").read_text().splitlines()
    assert rows[0].endswith(",site") and rows[2].startswith("scaled derivative,form,")
    assert [r.rsplit(",", 1)[1] for r in rows[2:5]] == ["all", "act1", "act2"]
    assert rows[3].startswith("scaled derivative,form,c = 1,")
    saved = metabp.load(tmp_path / "forms" / "scaled-derivative.bfn")
    assert metabp.is_per_site(saved) and list(saved) == ["act1", "act2"]
    assert (saved["act1"].c, saved["act2"].c) == (1.0, 2.0) and saved.meta["form"] == "scaled derivative"
    assert (tmp_path / "explain.png").exists()


def test_a_per_site_two_level_step_metanet_is_recovered_at_its_site():
    from metabp.analysis._explain_sites import fit_sites

    lo, hi, t = -1.5, 3.0, 0.5
    step = metabp.MetaNet(1, "tanh", omega=[1e3, -1e3 * t, (hi - lo) / 2, (hi + lo) / 2])
    g = metabp.PerSite({"act1": metabp.Derivative("relu"), "act2": step})
    descriptions, site_forms, sets = fit_sites(g, "relu", zmax=4.0, knots=3, box=(-1e3, 1e3))
    two = next(f for f in site_forms["act2"] if f.name == "2-level step")
    assert two.params["thresholds"][0] == pytest.approx(t, abs=0.005)
    assert two.params["levels"] == pytest.approx([lo, hi], abs=0.01) and two.rel < 0.05
    assert descriptions["act2"].edges == ["w1_1 = 1000"] and descriptions["act1"].edges == []
    assert descriptions["act2"].zero_crossings == [pytest.approx(t, abs=0.005)]
    two_set = next(f for f in sets if f.name == "2-level step")
    assert two_set.bfn["act2"] is two.bfn and two_set.params["act2"] == two.params


def test_a_saved_per_site_form_loads_and_trains(tmp_path):
    from metabp.analysis._explain_sites import fit_sites

    g = metabp.PerSite({"act1": metabp.MetaNet(2, "tanh", omega=[-5.0, 5.0, 5.0, 2.7, -3.4, 3.4, 5.0]),
                        "act2": metabp.MetaNet(1, "tanh", omega=[3.0, 1.0, 2.0, 1.0])})
    _, _, sets = fit_sites(g, "relu", zmax=4.0, knots=3, box=None)
    form = next(f for f in sets if f.name == "3-level step")
    loaded = metabp.load(metabp.save(form.bfn, tmp_path / "form.bfn"))
    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert all(torch.equal(loaded[s](z, "relu"), form.bfn[s](z, "relu")) for s in ("act1", "act2"))
    a, b = train(SPEC, loaded, seed=0), train(SPEC, form.bfn, seed=0)
    assert math.isfinite(a.aulc) and a.step_losses == b.step_losses
    with pytest.raises(ConfigError, match="where='act2' with a PerSite"):
        explain(g, SPEC, lr=SPEC.lr, seeds=[3], where="act2")


def test_cli_explain_reads_a_per_site_metanet_file(tmp_path, capsys):
    from metabp._cli import main

    g = metabp.PerSite({"act1": metabp.MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0]),
                        "act2": metabp.MetaNet(1, "tanh", omega=[2.0, 0.0, 1.0, 1.0])})
    path = metabp.save(g, tmp_path / "g.bfn", meta={"target": "gaussians-mlp3", "overrides": {"epochs": 2},
                                                    "sites": ["act1", "act2"]})
    assert main(["explain", str(path), "--seeds", "2", "-o", str(tmp_path / "out")]) == 0
    assert "**Site `act2`**" in capsys.readouterr().out
    saved = metabp.load(tmp_path / "out" / "forms" / "2-level-step.bfn")
    assert list(saved) == ["act1", "act2"] and saved.meta["sites"] == ["act1", "act2"]
    metabp.save(metabp.PerSite({"act1": g["act1"], "act2": metabp.Scaled(2.0)}), tmp_path / "mixed.bfn",
                meta={"target": "gaussians-mlp3"})
    assert main(["explain", str(tmp_path / "mixed.bfn"), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "site 'act2' holds a scaled b-function" in err and len(err.strip().splitlines()) == 1
