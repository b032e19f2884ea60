"""Patched models under ``torch.compile(fullgraph=True)``: one graph, eager's gradients, and no
recompilation when omega changes, a MetaNet is swapped for another, or a ``.bfn`` is loaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import metabp
from metabp import Derivative, MetaNet, Scaled

pytestmark = pytest.mark.slow  # each test compiles a forward and a backward graph (seconds)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 8), nn.GELU(), nn.Linear(8, 3))


def grads(model: nn.Module, call, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = call(x)
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-6)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_mlp_one_graph_for_every_omega_swap_and_load(tmp_path):
    model, x = mlp(), torch.randn(16, 12)
    g = MetaNet(2, "tanh", seed=1)
    metabp.patch(model, g)
    compiled = torch.compile(model, fullgraph=True)
    assert_close(grads(model, compiled, x), grads(model, model, x))
    first = grads(model, model, x)
    for seed in (2, 3, 4):  # new omega: new data for the same graph
        g.omega = MetaNet(2, "tanh", seed=seed).omega
        assert_close(grads(model, compiled, x), grads(model, model, x))
    assert not torch.allclose(grads(model, model, x)[0], first[0])
    metabp.patch(model, MetaNet(2, "tanh", seed=9))  # another MetaNet of the same shape
    assert_close(grads(model, compiled, x), grads(model, model, x))
    metabp.patch(model, metabp.load(metabp.save(MetaNet(2, "tanh", seed=5), tmp_path / "g.bfn")))
    assert_close(grads(model, compiled, x), grads(model, model, x))
    assert graphs() == 1 and not counters["graph_break"]


def test_cnn_derivative_bit_for_bit_and_feedback_with_metanet():
    """Derivative(sigma) and Scaled(1) compiled equal plain compiled exactly (compiled and eager
    differ by reordered sums, plain or patched); a CNN with feedback ``fa`` on every layer and
    MetaNets on its activations traces in one graph, within 1e-6 of eager."""
    model, x = cnn(), torch.randn(5, 1, 8, 8)
    plain = grads(model, torch.compile(model, fullgraph=True), x)
    metabp.patch(model, Derivative("relu"), where=0)
    metabp.patch(model, Scaled(1.0), where=1)
    torch._dynamo.reset()
    derivative = grads(model, torch.compile(model, fullgraph=True), x)
    for a, b in zip(plain, derivative, strict=True):
        assert torch.equal(a, b)
    g = MetaNet(3, "tanh", seed=2)
    metabp.patch(model, g)
    metabp.feedback(model, "fa", seed=3)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, fullgraph=True)
    for omega in (None, [0.5, 0.1, -0.3, 1.0, 0.0, 2.0, 0.2, 0.4, -1.0, 0.1]):
        if omega is not None:
            g.omega = omega
        assert_close(grads(model, compiled, x), grads(model, model, x))
    assert graphs() == 1 and not counters["graph_break"]


def test_stack_traces_in_one_graph():
    """K copies batched on dim 0, as train_many runs them: one gather over the stacked tables;
    a member's new omega reaches the compiled graph without recompiling."""
    members = [MetaNet(1, seed=k) for k in range(3)]
    stacked = metabp.stack(members)
    w = torch.randn(3, 12, 8, requires_grad=True)

    def batched(inputs: torch.Tensor) -> torch.Tensor:
        return metabp.replace_derivative(torch.bmm(inputs, w), stacked, "relu")

    xs = torch.randn(3, 16, 12)
    compiled = torch.compile(batched, fullgraph=True)
    for seed in (None, 7, 8):
        if seed is not None:
            members[1].omega = MetaNet(1, seed=seed).omega
        want = torch.autograd.grad(batched(xs).square().sum(), w)[0]
        got = torch.autograd.grad(compiled(xs).square().sum(), w)[0]
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert graphs() == 1 and not counters["graph_break"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_one_graph_and_eager_gradients():
    model, x = mlp().cuda(), torch.randn(16, 12, device="cuda")
    g = MetaNet(2, "tanh", seed=1)
    metabp.patch(model, g)
    compiled = torch.compile(model, fullgraph=True)
    for seed in (None, 2, 3):
        if seed is not None:
            g.omega = MetaNet(2, "tanh", seed=seed).omega
        for a, b in zip(grads(model, compiled, x), grads(model, model, x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert graphs() == 1
