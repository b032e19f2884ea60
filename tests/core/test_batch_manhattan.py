"""BatchManhattan (metabp/_batch_manhattan.py): the sign of the minibatch gradient, optimizer-shaped."""

from __future__ import annotations

import pytest
import torch

import metabp
from metabp import ConfigError


def test_sgd_step_is_minus_lr_sign_of_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    v = torch.nn.Parameter(torch.tensor([[0.0, 1.0]]))
    opt = metabp.BatchManhattan(torch.optim.SGD([w, v], lr=0.1))
    w.grad = torch.tensor([3.0, -1e-4, 0.0, -7.0])
    v.grad = torch.tensor([[-2.0, 5.0]])
    opt.step()
    step = 0.1 * torch.tensor([1.0, -1.0, 0.0, -1.0])
    assert torch.equal(w.data, torch.tensor([1.0, -2.0, 0.5, 3.0]) - step)
    assert torch.equal(v.data, torch.tensor([[0.1, 0.9]]))


def test_wraps_any_optimizer_and_shares_groups_state_and_schedulers():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    inner = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    opt = metabp.BatchManhattan(inner)
    assert opt.param_groups is inner.param_groups or opt.param_groups[0] is inner.param_groups[0]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(4, 3)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    before = model.weight.detach().clone()
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    assert torch.allclose((before - model.weight).abs(), torch.full_like(before, 0.5))  # lr * |sign| = 0.5
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.25
    assert len(inner.state) == 2  # momentum buffers live in the inner optimizer
    sd = opt.state_dict()
    fresh = metabp.BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == 0.25 and len(fresh.state) == 2
    assert "BatchManhattan(SGD" in repr(opt)


def test_errors():
    with pytest.raises(ConfigError, match=r"optimizer='list' object is not a torch.optim.Optimizer; wrap"):
        metabp.BatchManhattan([torch.nn.Parameter(torch.ones(1))])
    opt = metabp.BatchManhattan(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
    with pytest.raises(ConfigError, match="already a BatchManhattan"):
        metabp.BatchManhattan(opt)
