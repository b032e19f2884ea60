"""Tests for metabp/analysis/_transfer.py and `metabp transfer`: exact ratios, files, named errors."""

from __future__ import annotations

import csv

import pytest
import torch

import metabp
from metabp._cli import main
from metabp.analysis import transfer, write_transfer
from metabp.exceptions import ArtifactError, ConfigError
from metabp.targets import get_target, train

torch.set_num_threads(1)


def test_relu_derivative_in_a_relu_target_gives_ratio_exactly_one(tmp_path):
    specs = [get_target("gaussians-mlp3", epochs=4),
             get_target("gaussians-mlp3", epochs=3, batch_size=50, trainable=None)]
    res = transfer(metabp.Derivative("relu"), specs, seeds=[0, 3], progress=False)
    for row in res.rows:
        assert row.ratios == [1.0, 1.0]
        assert row.ratio == (1.0, 0.0) and row.verdict() == "same"
        assert [r.aulc for r in row.g] == [r.aulc for r in row.backprop]
    files = write_transfer(res, tmp_path)
    with files["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["ratio"]) for r in rows] == [1.0, 1.0]
    assert {p.name for p in tmp_path.iterdir()} == {"transfer.md", "transfer.csv", "transfer_seeds.csv",
                                                   "transfer.png"}


def test_rows_are_the_runs_train_gives(tmp_path):
    g = metabp.MetaNet(omega=[1.0, 0.0, 0.5, 0.5])
    spec = get_target("gaussians-mlp3", epochs=3)
    res = transfer(g, [spec], seeds=2, where="act1", progress=False)
    row = res.row("gaussians-mlp3")
    assert row.seeds == [0, 1] and row.where == "act1"
    for k, s in enumerate((0, 1)):
        assert row.g[k].aulc == pytest.approx(train(spec, g, "act1", s).aulc, rel=1e-6)
        assert row.backprop[k].aulc == pytest.approx(train(spec, None, None, s).aulc, rel=1e-6)
    assert row.ratios == pytest.approx([a.aulc / b.aulc for a, b in zip(row.g, row.backprop, strict=True)])
    md = write_transfer(res, tmp_path)["markdown"].read_text()
    assert f"{row.ratio[0]:.4f} ± {row.ratio[1]:.4f}" in md


def test_bad_arguments_give_named_errors(tmp_path):
    g = metabp.Scaled(1.0)
    with pytest.raises(ConfigError, match="seeds=0"):
        transfer(g, "gaussians-mlp3", seeds=0, progress=False)
    with pytest.raises(ConfigError, match="seeds=True"):
        transfer(g, "gaussians-mlp3", seeds=True, progress=False)
    with pytest.raises(ConfigError, match="repeat"):
        transfer(g, "gaussians-mlp3", seeds=[1, 1], progress=False)
    with pytest.raises(ConfigError, match=r"seeds=\[-1\]"):
        transfer(g, "gaussians-mlp3", seeds=[-1], progress=False)
    with pytest.raises(ConfigError, match="'nope' is not known"):
        transfer(g, "gaussians-mlp3,nope", seeds=1, progress=False)
    with pytest.raises(ConfigError, match=r"targets\[0\]=3"):
        transfer(g, [3], seeds=1, progress=False)
    with pytest.raises(ConfigError, match="targets=\\[\\]"):
        transfer(g, [], seeds=1, progress=False)
    with pytest.raises(ConfigError, match="bfn=42"):
        transfer(42, "gaussians-mlp3", seeds=1, progress=False)
    with pytest.raises(ArtifactError, match="no such"):
        transfer(tmp_path / "missing.bfn", "gaussians-mlp3", seeds=1, progress=False)


def test_cli_transfer(tmp_path, capsys):
    bfn = metabp.save(metabp.Derivative("relu"), tmp_path / "g.bfn")
    out = tmp_path / "out"
    assert main(["transfer", str(bfn), "--targets", "gaussians-mlp3", "--seeds", "2", "-o", str(out)]) == 0
    assert "| gaussians-mlp3 |" in capsys.readouterr().out
    with (out / "transfer.csv").open() as f:
        assert float(next(csv.DictReader(f))["ratio"]) == 1.0
    assert main(["transfer", str(bfn), "--targets", "bogus", "-o", str(out)]) != 0
    assert "bogus" in capsys.readouterr().err


def test_a_per_site_g_is_not_applicable_to_a_target_lacking_a_site(tmp_path):
    g = metabp.PerSite({"act1": metabp.Derivative("relu"), "act2": metabp.Scaled(1.0)})
    specs = [get_target("gaussians-mlp3", epochs=2),
             get_target("gaussians-mlp3", epochs=2, hidden=(16,), where="act1")]  # one hidden layer: act1
    res = transfer(g, specs, seeds=[0, 1], progress=False)
    fits, lacks = res.rows
    assert fits.applicable and fits.where == "act1, act2" and fits.ratios == [1.0, 1.0]
    assert not lacks.applicable and lacks.g == [] and lacks.verdict() == "not applicable"
    reason = "not applicable: the network has no activation for site 'act2' (it has: act1)"
    assert lacks.skipped == reason
    files = write_transfer(res, tmp_path)
    assert f"| {reason} |" in files["markdown"].read_text()
    with files["csv"].open() as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == ["same", reason]
    with files["seeds_csv"].open() as f:
        assert len(list(csv.DictReader(f))) == 2 and files["png"].exists()
    only = write_transfer(transfer(g, specs[1:], seeds=1, progress=False), tmp_path / "none")
    assert "png" not in only and "not applicable" in only["markdown"].read_text()
    with pytest.raises(ConfigError, match="where='act2' with a PerSite"):
        transfer(g, specs[:1], seeds=1, where="act2", progress=False)


def test_a_per_site_g_is_not_applicable_to_a_network_without_activations(monkeypatch):
    import metabp.targets as targets
    from metabp.analysis._transfer import not_applicable

    monkeypatch.setattr(targets, "build_model", lambda spec: torch.nn.Linear(2, 2))
    g = metabp.PerSite({"act1": metabp.Derivative("relu")})
    reason = not_applicable(g, get_target("gaussians-mlp3", epochs=2))
    assert reason == "not applicable: the network has no activation for site 'act1' (it has: none)"
