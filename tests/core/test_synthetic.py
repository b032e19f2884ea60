"""Synthetic gradients (metabp/_synthetic.py): what flows where in one backward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metabp
from metabp import PatchError

torch.set_num_threads(1)


def test_lower_layers_get_the_prediction_upper_get_truth_predictor_gets_mse_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    sg = metabp.synthetic_gradients(net, "1", num_classes=3)["1"]
    with torch.no_grad():  # a non-zero predictor, so the prediction is visible
        sg.net[0].weight.normal_()
        sg.net[0].bias.normal_()
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    metabp.set_synthetic_labels(net, y)
    ref = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    ref.load_state_dict({k: v for k, v in net.state_dict().items() if "synthetic" not in k})
    F.cross_entropy(net(x), y).backward()
    h = ref[1](ref[0](x)).detach().requires_grad_()
    loss = F.cross_entropy(ref[2](h), y)
    loss.backward()
    assert torch.equal(net[2].weight.grad, ref[2].weight.grad)  # above the boundary: true gradient
    pred = sg.predict(h)
    z = ref[0](x).detach().requires_grad_()
    (want_w0,) = torch.autograd.grad(torch.tanh(z), z, pred)
    assert torch.allclose(net[0].bias.grad, want_w0.sum(0), atol=1e-6)  # below: the prediction
    # predictor: d/dθ of (1/2N) sum ||N pred - N true||^2
    n = x.shape[0]
    sg2 = metabp.SyntheticGradient(6, num_classes=3)
    sg2.load_state_dict(sg.state_dict())
    sg2.label = y
    mse = 0.5 / n * (sg2._raw(h.detach()) - n * h.grad).square().sum()
    mse.backward()
    assert torch.allclose(sg.net[0].weight.grad, sg2.net[0].weight.grad, atol=1e-6)


def test_zero_initial_prediction_and_state_dict():
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    metabp.synthetic_gradients(net, "1")
    assert "1.synthetic_gradient.net.0.weight" in net.state_dict()
    x = torch.randn(4, 5)
    F.cross_entropy(net(x), torch.tensor([0, 1, 2, 0])).backward()
    assert torch.equal(net[0].weight.grad, torch.zeros(6, 5))  # zero prediction: nothing below moves
    assert net[2].weight.grad.abs().sum() > 0
    assert metabp.remove_synthetic_gradients(net) == ["1"]
    assert "1.synthetic_gradient.net.0.weight" not in net.state_dict()
    assert net(x).shape == (4, 3)


def test_errors():
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(PatchError, match=r"where='act' matches no module; the model's modules are: 0, 1, 2"):
        metabp.synthetic_gradients(net, "act")
    metabp.synthetic_gradients(net, "1", num_classes=3)
    with pytest.raises(PatchError, match=r"needs the labels: set module.label"):
        net(torch.randn(2, 5, requires_grad=True))
    with pytest.raises(PatchError, match="already has a synthetic gradient"):
        metabp.synthetic_gradients(net, "1")


def test_where_selects_like_patch_and_skips_the_predictors():
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    assert list(metabp.synthetic_gradients(net, [3, "1"])) == ["1", "3"]  # index and name, module order
    with pytest.raises(PatchError, match="already has a synthetic gradient"):
        metabp.synthetic_gradients(net, "*")  # '*' finds 0..4, never 1.synthetic_gradient.*
    with pytest.raises(PatchError, match=r"where=9 is out of range: the model has 5 modules"):
        metabp.synthetic_gradients(net, 9)


def test_a_failed_call_changes_nothing():
    net = nn.Sequential(nn.Flatten(), nn.Linear(5, 6), nn.ReLU())
    with pytest.raises(PatchError, match=r"cannot tell the output size of module '0'"):
        metabp.synthetic_gradients(net, ["2", "0"])
    assert metabp.remove_synthetic_gradients(net) == []


@pytest.mark.parametrize("where", [None, 1.5, True, [], [["1"]], {"1": 1}])
def test_bad_where_is_named(where):
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
    with pytest.raises(PatchError, match=r"where=.*must be a module name, a glob such as 'act\*'"):
        metabp.synthetic_gradients(net, where)


@pytest.mark.parametrize("kw, message", [
    ({"num_classes": -1}, r"num_classes=-1: must be an integer >= 0"),
    ({"hidden": True}, r"hidden=True: must be an integer >= 0"),
    ({"hidden": 2.0}, r"hidden=2.0: must be an integer >= 0"),
    ({"seed": None}, r"seed=None: must be an integer >= 0"),
])
def test_bad_sizes_are_config_errors(kw, message):
    with pytest.raises(metabp.ConfigError, match=message):
        metabp.synthetic_gradients(nn.Sequential(nn.Linear(5, 6), nn.ReLU()), "1", **kw)
    with pytest.raises(metabp.ConfigError, match=message):
        metabp.SyntheticGradient(6, **kw)


def test_not_a_model():
    for fn in (lambda: metabp.synthetic_gradients("net", "1"),
               lambda: metabp.remove_synthetic_gradients(None),
               lambda: metabp.set_synthetic_labels(3, None)):
        with pytest.raises(PatchError, match=r"model=.*needs an nn.Module"):
            fn()
    with pytest.raises(metabp.ConfigError, match=r"y=.*: must be None or a 1-D integer tensor"):
        metabp.set_synthetic_labels(nn.Linear(2, 2), torch.ones(3))


@pytest.mark.parametrize("kw", [{"num_classes": 2**40}, {"hidden": 10**9}])
def test_huge_predictor_is_refused_before_allocating(kw):
    with pytest.raises(metabp.ConfigError, match=r"would have .* weights; at most 1e\+08"):
        metabp.SyntheticGradient(6, **kw)
