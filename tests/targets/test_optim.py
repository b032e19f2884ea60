import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.targets import OPTIMIZERS, make_optimizer


def test_ten_optimizers():
    assert list(OPTIMIZERS) == ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam",
                                "adamax", "nadam", "amsgrad"]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stacked_copies_step_like_separate_optimizers(name):
    """train_many relies on it: one optimizer over K x ... tensors == K optimizers."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(3, 4, 5, generator=gen)
    grads = [torch.randn(3, 4, 5, generator=gen) for _ in range(4)]
    stacked = init.clone().requires_grad_()
    opt = make_optimizer(name, [stacked], lr=0.05)
    singles = [init[k].clone().requires_grad_() for k in range(3)]
    opts = [make_optimizer(name, [p], lr=0.05) for p in singles]
    for g in grads:
        stacked.grad = g.clone()
        opt.step()
        for k in range(3):
            singles[k].grad = g[k].clone()
            opts[k].step()
    for k in range(3):
        torch.testing.assert_close(stacked[k].detach(), singles[k].detach())
    assert not torch.equal(stacked.detach(), init)


def test_errors_use_torch_optim_wording():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(ConfigError, match=r"Invalid learning rate: -0\.1"):
        make_optimizer("adam", p, lr=-0.1)
    with pytest.raises(ConfigError, match=r"optimizer='adamw' is not known; choose one of"):
        make_optimizer("adamw", p, lr=0.1)
    assert make_optimizer("AMSGrad", p, lr=0.1).defaults["amsgrad"] is True
