"""metabp/_function.py: the fast ``apply`` equals the public one, and a second backward through a
patched activation is either the true second derivative or a PatchError, never silently wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metabp
import metabp._function as function
from metabp import Derivative, MetaNet, Scaled

torch.set_num_threads(1)


def mlp(act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 3))


def grads(model: nn.Module, x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(model(x).square().sum(), list(model.parameters()), **kwargs)


def gradient_penalty_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """d/dtheta sum ||dL/dtheta||^2: a second backward through the first one."""
    first = grads(model, x, create_graph=True)
    return list(torch.autograd.grad(sum(g.square().sum() for g in first), list(model.parameters())))


def test_fast_apply_is_on_here_and_equals_the_public_path(monkeypatch):
    assert function.FAST_APPLY  # the probe passed on this torch
    model, x = mlp(nn.ReLU), torch.randn(8, 6)
    metabp.patch(model, MetaNet(2, "tanh", seed=1), where=0)
    metabp.patch(model, Scaled(0.5), where=1)
    fast = grads(model, x)
    monkeypatch.setattr(function, "FAST_APPLY", False)  # what a torch without the internals runs
    public = grads(model, x)
    for a, b in zip(fast, public, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.GELU, nn.ReLU])
def test_derivative_is_twice_differentiable_like_autograd(act):
    model, x = mlp(act), torch.randn(8, 6)
    plain = gradient_penalty_grads(model, x)
    name = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.GELU: "gelu", nn.ReLU: "relu"}[act]
    metabp.patch(model, Derivative(name))
    for a, b in zip(plain, gradient_penalty_grads(model, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: MetaNet(1, "tanh", seed=2), lambda: Scaled(0.5)],
                         ids=["metanet", "scaled"])
def test_second_backward_through_other_bfunctions_raises(make):
    model, x = mlp(), torch.randn(8, 6)
    metabp.patch(model, make(), where=0)
    first = grads(model, x, create_graph=True)  # a first-order gradient with a graph: fine
    assert all(torch.equal(a, b) for a, b in zip(first, grads(model, x), strict=True))
    with pytest.raises(metabp.PatchError, match="is not twice differentiable"):
        sum(g.square().sum() for g in first).backward()


def test_second_backward_raises_even_when_the_upstream_gradient_is_constant():
    """grad_z computed from a constant upstream gradient, then differentiated in z: raises."""
    z = torch.randn(5, requires_grad=True)
    y = metabp.replace_derivative(z, MetaNet(1, "tanh", seed=3), "relu")
    (gz,) = torch.autograd.grad(y.sum(), z, create_graph=True)
    with pytest.raises(metabp.PatchError, match="not twice differentiable"):
        (gz.sum() + z.sum()).backward()


def test_stack_raises_and_stack_of_derivatives_does_not():
    z = torch.randn(2, 4, requires_grad=True)
    for bfns, raises in (([MetaNet(1, seed=0), MetaNet(1, seed=1)], True),
                         ([Scaled(1.0), Scaled(2.0)], True),
                         ([Derivative("tanh"), Derivative("tanh")], False)):
        y = metabp.replace_derivative(z, metabp.stack(bfns), "tanh")
        (gz,) = torch.autograd.grad(y.square().sum(), z, create_graph=True)
        if raises:
            with pytest.raises(metabp.PatchError, match="not twice differentiable"):
                gz.sum().backward()
        else:
            (want,) = torch.autograd.grad(
                torch.autograd.grad(torch.tanh(z).square().sum(), z, create_graph=True)[0].sum(), z)
            z.grad = None
            gz.sum().backward()
            torch.testing.assert_close(z.grad, want)
