"""Tests for metabp/analysis/_compare*.py, _tuning.py and _stats.py: tuning, the rows' numbers, the
verdict and the files."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

import metabp
from metabp.analysis import LR_RANGES, compare, paired, tune_lr
from metabp.analysis._stats import in_words
from metabp.exceptions import ConfigError
from metabp.targets import get_target, train

torch.set_num_threads(1)


def test_tune_lr_finds_a_log_scale_minimum():
    best, value, hist = tune_lr(lambda x: (math.log10(x) + 2) ** 2, low=1e-4, high=1.0, budget=30, seed=0)
    assert len(hist) == 30
    assert value == min(v for _, v in hist)
    assert 10 ** -2.5 < best < 10 ** -1.5
    with pytest.raises(ConfigError, match="need 0 < low < high"):
        tune_lr(lambda x: x, low=1.0, high=0.1, budget=2)
    with pytest.raises(ConfigError, match="budget=0"):
        tune_lr(lambda x: x, low=0.1, high=1.0, budget=0)


def test_sgd_scaled_is_exactly_a_learning_rate():
    # the premise of "lr tuned alone": with SGD, g = c*sigma' at act2 and only fc2 training <=> lr*c
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=5, trainable="fc2.*")
    a = train(spec, metabp.Scaled(0.25), "act2", seed=0)
    b = train(dataclasses.replace(spec, lr=0.125), None, None, seed=0)
    assert a.step_losses == pytest.approx(b.step_losses, rel=1e-5)


def test_paired_difference_and_words():
    p = paired([1.0, 2.0, 4.0], [2.0, 2.5, 4.5])
    d = [-1.0, -0.5, -0.5]
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    assert p.diff == pytest.approx(mean) and p.se == pytest.approx(se) and p.n == 3
    assert p.z == pytest.approx(mean / se)
    text = in_words(p, "g", "adam")
    assert text.startswith("g beats adam by 0.6667 AULC") and f"{abs(mean / se):.1f} standard errors" in text
    assert "adam beats g" in in_words(paired([2.0, 3.0], [1.0, 1.5]), "g", "adam")
    assert "same AULC" in in_words(paired([1.0, 2.0], [1.0, 2.0]), "g", "adam")
    with pytest.raises(ConfigError, match="equally long"):
        paired([1.0], [1.0, 2.0])


def test_compare_rows_files_and_numbers(tmp_path):
    spec = get_target("gaussians-mlp3", epochs=4)
    res = compare(spec, metabp.Scaled(1.0), where="act2", budget=3, seeds=[1, 2], tune_seeds=[0, 5],
                  optimizers=["sgd", "adam"], output=tmp_path)
    labels = {r.label for r in res.rows}
    assert labels == {"plain backprop", "best g", "sgd (tuned lr)", "adam (tuned lr)", "lr tuned alone"}
    assert [r.aulc[0] for r in res.rows] == sorted(r.aulc[0] for r in res.rows)
    # Scaled(1) at a ReLU is bit-exact plain backprop, and both rows train on the same seeds
    assert res.row("best g").aulcs == res.row("plain backprop").aulcs
    plain = [train(spec, None, None, seed=s) for s in (1, 2)]
    mean = sum(r.aulc for r in plain) / 2
    assert res.row("plain backprop").aulc[0] == pytest.approx(mean, rel=1e-6)
    sgd = res.row("sgd (tuned lr)")
    lo, hi = LR_RANGES["sgd"]
    assert lo <= sgd.lr <= hi and sgd.tuning_runs == 3
    rerun = train(dataclasses.replace(spec, optimizer="sgd", lr=sgd.lr), None, None, seed=2)
    assert sgd.runs[1].aulc == pytest.approx(rerun.aulc, rel=1e-6)
    ctrl = res.row("lr tuned alone")
    assert ctrl.optimizer == "adam" and ctrl.kind == "control"
    assert spec.lr * 1e-2 <= ctrl.lr <= spec.lr * 1e2
    assert res.scale_invariant and "scale-invariant" in res.markdown
    # the verdict compares g with lr tuned alone, by the paired SE over the held-out seeds
    p = paired(res.row("best g").aulcs, ctrl.aulcs)
    assert in_words(p, "best g", "lr tuned alone") in res.markdown
    assert "held-out seeds 1, 2" in res.markdown and "search seeds 0, 5" in res.markdown
    for name in ("compare.md", "compare.csv", "compare_loss.png"):
        assert (tmp_path / name).stat().st_size > 100
    with (tmp_path / "compare.csv").open() as f:
        table = {row["method"]: row for row in csv.DictReader(f)}
    assert float(table["plain backprop"]["aulc_mean"]) == pytest.approx(mean, rel=1e-6)
    assert table["sgd (tuned lr)"]["scale_invariant"] == "False"
    assert table["adam (tuned lr)"]["scale_invariant"] == "True"
    assert [float(a) for a in table["lr tuned alone"]["aulc_per_seed"].split()] == ctrl.aulcs


def test_compare_g_with_its_own_lr_and_a_study_lr_range(tmp_path):
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=3)
    res = compare(spec, metabp.Derivative("relu"), budget=2, seeds=[3], tune_seeds=[0], optimizers=[],
                  bfn_lr=0.05, lr_range=(0.01, 0.02), label="g + its lr")
    g = res.row("g + its lr")
    assert g.lr == 0.05 and g.note == "lr searched with g"
    alone = train(dataclasses.replace(spec, lr=0.05), None, None, seed=3)
    assert g.aulcs == pytest.approx([alone.aulc], rel=1e-6)
    assert 0.01 <= res.row("lr tuned alone").lr <= 0.02
    assert "no spread, so no standard error" in res.markdown  # one seed


def test_compare_rejects_bad_arguments():
    spec = get_target("gaussians-mlp3", epochs=1)
    with pytest.raises(ConfigError, match="unknown"):
        compare(spec, None, budget=1, optimizers=["lbfgs"])
    with pytest.raises(ConfigError, match="seeds=\\[\\]"):
        compare(spec, None, budget=1, seeds=[])
    with pytest.raises(ConfigError, match="budget=0"):
        compare(spec, None, budget=0)


def test_compare_says_why_two_rows_tune_the_same_optimizer_and_gives_exact_lrs():
    spec = get_target("gaussians-mlp3", epochs=2)
    res = compare(spec, metabp.Scaled(1.0), budget=2, seeds=[1, 2], tune_seeds=[0], optimizers=["adam"],
                  bfn_lr=0.05, lr_range=(0.01, 0.3))
    control, twin = res.kind("control"), res.row("adam (tuned lr)")
    assert '"lr tuned alone" and "adam (tuned lr)" both train with `adam`' in res.markdown
    assert "study's own lr range (lr in [0.01, 0.3])" in res.markdown
    assert "wide range (lr in [0.0001, 1])" in res.markdown
    assert f"lr tuned alone {control.lr!r}" in res.markdown and f"adam (tuned lr) {twin.lr!r}" in res.markdown
    assert res.sweep is None  # no sweep unless asked


def test_per_site_compare_trains_g_on_held_out_seeds_only(monkeypatch):
    import metabp.targets as targets

    spec = get_target("gaussians-mlp3", epochs=2)
    g = metabp.PerSite({"act1": metabp.Scaled(0.5), "act2": metabp.Scaled(2.0)})
    seen, real = [], targets.train_many

    def spy(spec, bfns, where=None, seed=0, **kw):
        seen.append((list(bfns), where, list(seed) if not isinstance(seed, int) else [seed]))
        return real(spec, bfns, where, seed=seed, **kw)

    monkeypatch.setattr(targets, "train_many", spy)
    res = compare(spec, g, budget=1, seeds=[7, 8], tune_seeds=[0], optimizers=["adam"], bfn_lr=0.05,
                  lr_range=(0.01, 0.5), lr_sweep=2)
    with_g = [(where, s) for bfns, where, s in seen if any(b is g for b in bfns)]
    assert len(with_g) == 1 + 2  # the g row and the two swept lrs
    assert all(where is None and set(s) == {7, 8} for where, s in with_g)
    assert res.sites == ["act1", "act2"] and "(one g per site: `act1`, `act2`)" in res.markdown
    row = res.kind("bfn")
    expected = [train(dataclasses.replace(spec, lr=0.05), g, seed=s).aulc for s in (7, 8)]
    assert row.aulcs == pytest.approx(expected, rel=1e-6)  # batched: equal up to float rounding
    with pytest.raises(ConfigError, match="where='act2' with a PerSite"):
        compare(spec, g, where="act2", budget=1, seeds=[7])
