import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.targets import OPTIMIZERS, make_optimizer
from metabp.targets._optim import COPY_STATE, PerCopyLR, zero_copies


def test_ten_optimizers():
    assert list(OPTIMIZERS) == ["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam",
                                "adamax", "nadam", "amsgrad"]


def _stacked_and_singles(name, stacked_opt, lrs, dtype=torch.float32):
    """A K x 4 x 9 tensor stepped by ``stacked_opt(params)``, and K tensors each stepped by optimizer
    ``name`` at its lr, on the same random gradients; ``(init, stacked, singles)``."""
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(len(lrs), 4, 9, generator=gen, dtype=dtype)
    grads = [torch.randn(len(lrs), 4, 9, generator=gen, dtype=dtype) for _ in range(5)]
    stacked = init.clone().requires_grad_()
    opt = stacked_opt([stacked])
    singles = [init[k].clone().requires_grad_() for k in range(len(lrs))]
    opts = [make_optimizer(name, [p], lr=a) for p, a in zip(singles, lrs, strict=True)]
    for g in grads:
        stacked.grad = g.clone()
        opt.step()
        for k, (p, o) in enumerate(zip(singles, opts, strict=True)):
            p.grad = g[k].clone()
            o.step()
    return init, stacked.detach(), [p.detach() for p in singles], opt


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stacked_copies_step_like_separate_optimizers(name):
    """train_many relies on it: one optimizer over K x ... tensors == K optimizers."""
    one = lambda ps: make_optimizer(name, ps, lr=0.05)  # noqa: E731
    init, stacked, singles, _ = _stacked_and_singles(name, one, [0.05] * 3)
    for k in range(3):
        torch.testing.assert_close(stacked[k], singles[k])
    assert not torch.equal(stacked, init)


def test_errors_use_torch_optim_wording():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(ConfigError, match=r"Invalid learning rate: -0\.1"):
        make_optimizer("adam", p, lr=-0.1)
    with pytest.raises(ConfigError, match=r"optimizer='adamw' is not known; choose one of"):
        make_optimizer("adamw", p, lr=0.1)
    assert make_optimizer("AMSGrad", p, lr=0.1).defaults["amsgrad"] is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_per_copy_lr_steps_bit_identical_to_separate_optimizers_at_their_lr(name, dtype):
    """PerCopyLR: copy k of a K x ... tensor steps as optimizer `name` at lrs[k] alone, bit for bit."""
    lrs = [0.003, 0.05, 0.05, 2.0, 0.0123, 0.7, 1e-4, 0.31]
    per_copy = lambda ps: PerCopyLR(name, ps, lrs)  # noqa: E731
    _, stacked, singles, opt = _stacked_and_singles(name, per_copy, lrs, dtype)
    for k in range(len(lrs)):
        assert torch.equal(stacked[k], singles[k]), k
    assert opt.param_groups[0]["lr"] == lrs


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_ownership_is_explicit(name):
    """COPY_STATE names every per-copy state entry; the rest are 0-d shared step counters.
    zero_copies zeroes exactly the dead copies' weights, gradients and per-copy state."""
    p = torch.randn(3, 4, requires_grad=True)
    for opt in (make_optimizer(name, [p], lr=0.1), PerCopyLR(name, [p], [0.1, 0.2, 0.3])):
        for _ in range(2):
            p.grad = torch.ones(3, 4)
            opt.step()
        inner = getattr(opt, "optimizer", opt)
        owned = COPY_STATE[type(inner).__name__]
        for state in inner.state.values():
            for key, value in state.items():
                assert key in owned or (torch.is_tensor(value) and value.dim() == 0), key
        zero_copies(opt, [1])
        assert p[1].abs().sum() == 0 and p.grad[1].abs().sum() == 0 and p[0].abs().sum() > 0
        state = opt.shadow_state(0) if isinstance(opt, PerCopyLR) else opt.state[p]
        for key in (k for k in owned if k in state):
            rows = state[key]
            assert rows[1].abs().sum() == 0 and rows[0].abs().sum() > 0 and rows[2].abs().sum() > 0
        with torch.no_grad():
            p.normal_()


def test_options_keep_the_step_proportional_to_lr():
    """What PerCopyLR relies on: no weight decay, no lr decay, no maximize in any option set."""
    for name in OPTIMIZERS:
        opt = make_optimizer(name, [torch.zeros(1, requires_grad=True)], lr=0.1)
        assert opt.defaults.get("weight_decay", 0) == 0 and opt.defaults.get("lr_decay", 0) == 0
        assert not opt.defaults.get("maximize", False) and not opt.defaults.get("centered", False)


def test_per_copy_lr_checks_its_arguments():
    p = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ConfigError, match=r"Invalid learning rate: 0\.0 \(lrs\[1\] must be"):
        PerCopyLR("adam", [p], [0.1, 0.0])
    with pytest.raises(ConfigError, match=r"shape \(2, 3\) is not stacked over 3 copies"):
        PerCopyLR("adam", [p], [0.1, 0.2, 0.3])
