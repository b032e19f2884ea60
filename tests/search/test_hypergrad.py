"""Exact hypergradients: the unroll is the targets layer's training run, and its gradient in omega
equals central finite differences."""

from __future__ import annotations

import pytest
import torch

import metabp
from metabp.exceptions import ConfigError
from metabp.search import hypergrad
from metabp.search._hypergrad import metanet_g, patched_grads
from metabp.targets import build_model, get_target, load_data, train

OMEGA = [0.8, 0.1, 1.2, 0.3]
#: Tiny targets: 16-16 MLPs on two Gaussians, one per optimizer the unroll writes.
TARGETS = {
    "adam-relu": dict(epochs=12, optimizer="adam", lr=0.1),
    "sgd-tanh": dict(epochs=12, optimizer="sgd", lr=0.5, activation="tanh"),
}


@pytest.mark.parametrize("name", TARGETS)
def test_the_unroll_is_the_training_run(name):
    spec = get_target("gaussians-mlp3", **TARGETS[name])
    g = metabp.MetaNet(1, "tanh", omega=OMEGA)
    run = train(spec, bfn=g, where="act2", seed=3)
    hg = hypergrad(spec, g, unroll=10, seed=3, dtype=torch.float64)
    # the run reads g from the core's table (float32): agreement to the table's error
    steps = torch.tensor(run.step_losses[1:11], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(hg.losses, dtype=torch.float64), steps, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", TARGETS)
def test_the_hypergradient_equals_central_finite_differences(name):
    spec = get_target("gaussians-mlp3", **TARGETS[name])
    omega = torch.tensor(OMEGA, dtype=torch.float64)
    hg = hypergrad(spec, metabp.MetaNet(1, "tanh", omega=omega), unroll=6, dtype=torch.float64)
    h, fd = 1e-6, []
    for i in range(len(omega)):
        e = torch.zeros_like(omega)
        e[i] = h
        up = hypergrad(spec, metabp.MetaNet(1, "tanh", omega=omega + e), unroll=6, dtype=torch.float64).loss
        down = hypergrad(spec, metabp.MetaNet(1, "tanh", omega=omega - e), unroll=6, dtype=torch.float64).loss
        fd.append((up - down) / (2 * h))
    assert hg.grad.abs().max() > 1e-3  # the test would not see a dropped term otherwise
    torch.testing.assert_close(hg.grad, torch.tensor(fd, dtype=torch.float64), rtol=1e-5, atol=1e-8)


def test_the_patched_gradient_is_the_cores():
    spec = get_target("gaussians-mlp3")
    model = build_model(spec, 0).double()
    data = load_data(spec)
    x, y = data.x_train[:64].double(), data.y_train[:64]
    g = metabp.MetaNet(2, "tanh", omega=[0.5, -1.0, 0.2, 0.3, 1.1, -0.4, 0.2])
    metabp.patch(model, g, "act2")
    torch.nn.functional.cross_entropy(model(x), y).backward()
    weights = [(m.weight.detach(), None) for m in model if isinstance(m, torch.nn.Linear)]
    loss, grads = patched_grads(weights, x, y, activation="relu", site=1,
                                g=lambda z: metanet_g(g.omega.double(), z, 2, "tanh"))
    mine = [w for w, _ in grads]
    core = [m.weight.grad for m in model if isinstance(m, torch.nn.Linear)]
    for a, b in zip(mine, core, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3 * float(b.abs().max()))  # a float32 table
    z = torch.linspace(-3, 3, 101, dtype=torch.float64)
    torch.testing.assert_close(metanet_g(g.omega.double(), z, 2, "tanh"), g(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw,match", [
    ({"unroll": 0}, r"unroll=0: the unroll length T must be an integer >= 1"),
    ({"unroll": -3}, r"unroll=-3: "),
    ({"unroll": 2.5}, r"unroll=2.5: "),
    ({"unroll": 2, "where": "act7"}, r"where='act7': the unroll patches one activation act1\.\.act2"),
    ({"unroll": 2, "target": "mnist1d-cnn"}, r"target='mnist1d-cnn' \(network='cnn1d'.*an mlp"),
    ({"unroll": 2, "target": get_target("gaussians-mlp3", optimizer="rmsprop")}, r"optimizer='rmsprop'"),
    ({"unroll": 2, "g": metabp.Derivative("relu")}, r"g=Derivative: .*MetaNet's omega"),
])
def test_bad_input_is_named(kw, match):
    args = {"target": "gaussians-mlp3", "g": metabp.MetaNet(1, "tanh", omega=OMEGA), **kw}
    with pytest.raises(ConfigError, match=match):
        hypergrad(args.pop("target"), args.pop("g"), **args)
