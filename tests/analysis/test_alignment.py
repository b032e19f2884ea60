"""Tests for metabp/analysis/_alignment.py and alignment_run: cosines are the right numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import metabp
from metabp.analysis import alignment_run, cosine_by_layer, gradient_alignment
from metabp.targets import get_target, train

torch.set_num_threads(1)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def _loss(x, y):
    return lambda m: nn.functional.cross_entropy(m(x), y)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, generator=g), torch.randint(0, 2, (32,), generator=g)


@pytest.mark.parametrize(("g", "expect"), [(metabp.Scaled(3.0), 1.0), (metabp.Scaled(-1.0), -1.0),
                                           (metabp.Derivative("relu"), 1.0)])
def test_constant_factor_gives_cosine_plus_minus_one(g, expect):
    net = _net()
    metabp.patch(net, g, where="3")  # the ReLU after the second Linear
    _, cos = gradient_alignment(net, _loss(*_batch()))
    assert cos["0"] == pytest.approx(expect, abs=1e-9)  # below the patch site: scaled by c
    assert cos["2"] == pytest.approx(expect, abs=1e-9)
    assert cos["4"] == pytest.approx(1.0, abs=1e-12)  # above it: the true gradient


def test_cosine_matches_an_independent_computation():
    x, y = _batch()
    net = _net()
    ref = _net()
    ref.load_state_dict(net.state_dict())
    nn.functional.cross_entropy(ref(x), y).backward()
    true = {n: p.grad.clone() for n, p in ref.named_parameters()}
    g = metabp.Derivative("tanh")
    metabp.patch(net, g, where="3")
    loss, cos = gradient_alignment(net, _loss(x, y))
    applied = {n: p.grad.clone() for n, p in net.named_parameters()}  # left in .grad
    # the applied gradient is what a patched backward gives on its own
    other = _net()
    other.load_state_dict(net.state_dict())
    metabp.patch(other, g, where="3")
    nn.functional.cross_entropy(other(x), y).backward()
    for n, p in other.named_parameters():
        torch.testing.assert_close(applied[n], p.grad, rtol=0, atol=0)
    a = torch.cat([applied["2.weight"].flatten(), applied["2.bias"].flatten()]).double()
    b = torch.cat([true["2.weight"].flatten(), true["2.bias"].flatten()]).double()
    assert cos["2"] == pytest.approx(float(a @ b / (a.norm() * b.norm())), rel=1e-12)
    assert cos["2"] < 0.999  # tanh' really differs from relu'
    assert loss == pytest.approx(float(nn.functional.cross_entropy(ref(x), y).detach()), rel=1e-6)
    assert metabp.patched(net) == {"3": g}  # still patched afterwards


def test_cosine_by_layer_zero_gradient_is_nan():
    z = {"fc.weight": torch.zeros(3)}
    assert math.isnan(cosine_by_layer(z, {"fc.weight": torch.ones(3)})["fc"])


@pytest.mark.parametrize("batch_size", [None, 64])
def test_alignment_run_follows_train_step_for_step(batch_size):
    spec = get_target("gaussians-mlp3", epochs=6, batch_size=batch_size)
    g = metabp.Derivative("sigmoid")
    trace = alignment_run(spec, g, where="act2", seed=3)
    run = train(spec, g, "act2", seed=3)
    assert trace.losses == run.step_losses
    assert set(trace.cosines) == {"fc1", "fc2", "fc3", "all"}
    assert all(c == pytest.approx(1.0) for c in trace.cosines["fc3"])
    assert len(trace.cosines["fc2"]) == len(run.step_losses)


def test_alignment_run_frozen_layers_absent():
    spec = get_target("gaussians-mlp3", epochs=3, trainable="fc2.*")
    trace = alignment_run(spec, metabp.Scaled(0.5), where="act2", seed=0)
    assert set(trace.cosines) == {"fc2", "all"}
    assert trace.summary()["fc2"][0] == pytest.approx(1.0)


def test_alignment_run_under_feedback_alignment_follows_train():
    spec = get_target("gaussians-mlp3", epochs=3, feedback="fa")
    g = metabp.Derivative("sigmoid")
    trace = alignment_run(spec, g, where="act2", seed=1)
    assert trace.losses == train(spec, g, "act2", seed=1).step_losses
