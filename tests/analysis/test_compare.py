"""Tests for metabp/analysis/_compare.py: tuning, the table's numbers and the files."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

import metabp
from metabp.analysis import LR_RANGES, compare, tune_lr
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


def test_sgd_scaled_is_exactly_a_learning_rate():
    # the premise of the control: with SGD, g = c*sigma' at act2 and only fc2 training <=> lr*c
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=5, trainable="fc2.*")
    a = train(spec, metabp.Scaled(0.25), "act2", seed=0)
    b = train(dataclasses.replace(spec, lr=0.125), None, None, seed=0)
    assert a.step_losses == pytest.approx(b.step_losses, rel=1e-5)


def test_compare_rows_files_and_numbers(tmp_path):
    spec = get_target("gaussians-mlp3", epochs=4)
    res = compare(spec, metabp.Scaled(1.0), where="act2", budget=3, seeds=[1, 2], tune_seed=0,
                  optimizers=["sgd", "adam"], output=tmp_path)
    labels = {r.label for r in res.rows}
    assert labels == {"plain backprop", "best g", "sgd (tuned lr)", "adam (tuned lr)",
                      "plain, lr x c (tuned)"}
    assert [r.aulc[0] for r in res.rows] == sorted(r.aulc[0] for r in res.rows)
    # Scaled(1) at a ReLU is bit-exact plain backprop
    assert res.row("best g").aulc == res.row("plain backprop").aulc
    plain = [train(spec, None, None, seed=s) for s in (1, 2)]
    mean = sum(r.aulc for r in plain) / 2
    assert res.row("plain backprop").aulc[0] == pytest.approx(mean, rel=1e-12)
    sgd = res.row("sgd (tuned lr)")
    lo, hi = LR_RANGES["sgd"]
    assert lo <= sgd.lr <= hi and sgd.tuning_runs == 3
    rerun = train(dataclasses.replace(spec, optimizer="sgd", lr=sgd.lr), None, None, seed=2)
    assert sgd.runs[1].aulc == rerun.aulc
    ctrl = res.row("plain, lr x c (tuned)")
    assert ctrl.optimizer == "adam" and ctrl.note.startswith("c = ")
    assert res.scale_invariant
    assert "scale-invariant" in res.markdown
    for name in ("compare.md", "compare.csv", "compare_loss.png"):
        assert (tmp_path / name).stat().st_size > 100
    with (tmp_path / "compare.csv").open() as f:
        table = {row["method"]: row for row in csv.DictReader(f)}
    assert float(table["plain backprop"]["aulc_mean"]) == pytest.approx(mean, rel=1e-12)
    assert table["sgd (tuned lr)"]["scale_invariant"] == "False"
    assert table["adam (tuned lr)"]["scale_invariant"] == "True"


def test_compare_rejects_unknown_optimizer():
    with pytest.raises(ConfigError, match="unknown"):
        compare(get_target("gaussians-mlp3", epochs=1), None, budget=1, optimizers=["lbfgs"])
