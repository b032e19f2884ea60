r"""The ten baseline optimizers by name, built on ``torch.optim`` with its argument names and checks.

The list follows Ruder's overview of gradient descent optimizers (2016): ``sgd``, ``momentum``,
``nesterov``, ``adagrad``, ``adadelta``, ``rmsprop``, ``adam``, ``adamax``, ``nadam``, ``amsgrad``.
Each name is one ``torch.optim`` class with fixed extra options; only the learning rate is set
by the caller, so every optimizer is tuned on the same one-dimensional budget.

Every update rule is elementwise in the parameters, e.g. Adam

.. math:: m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
          \quad \theta_t = \theta_{t-1} - \alpha \hat m_t / (\sqrt{\hat v_t} + \epsilon),

so ``K`` copies of a model stacked along dim 0 (``K x ...`` parameters) step exactly as ``K``
separate optimizers would; :func:`metabp.targets.train_many` relies on that.

Per-copy learning rates. With the options here (no weight decay, Adagrad's ``lr_decay = 0``,
NAdam's momentum schedule counting steps, not lr) every rule is

.. math:: \theta_t = \theta_{t-1} - \alpha\, u_t, \qquad u_t = u(g_1, \dots, g_t),

a direction :math:`u_t` and a state that do not depend on :math:`\alpha`, so copies of one
stacked tensor may step at different learning rates (:class:`PerCopyLR`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from metabp.exceptions import ConfigError

# name -> (torch.optim class name, fixed options). momentum 0.9 is the usual value (Ruder 2016).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
    "adamax": ("Adamax", {}),
    "nadam": ("NAdam", {}),
    "amsgrad": ("Adam", {"amsgrad": True}),
}

# Learning rates a user would start from (torch.optim's defaults; Adadelta's is 1.0 there).
DEFAULT_LR: dict[str, float] = {
    "sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "adadelta": 1.0,
    "rmsprop": 0.01, "adam": 0.001, "adamax": 0.002, "nadam": 0.002, "amsgrad": 0.001,
}


def check_optimizer(name: str) -> str:
    """The canonical (lower-case) optimizer name; ``ConfigError`` naming the choices otherwise."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is not known; choose one of {', '.join(OPTIMIZERS)}")
    return key


#: torch.optim class -> the state entries that hold one slice per copy (dim 0 of a stacked
#: ``K x ...`` parameter). The others (``step``, NAdam's ``mu_product``) are 0-d step counters
#: that every copy shares.
COPY_STATE: dict[str, tuple[str, ...]] = {
    "SGD": ("momentum_buffer",), "Adagrad": ("sum",), "Adadelta": ("square_avg", "acc_delta"),
    "RMSprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), "Adamax": ("exp_avg", "exp_inf"),
    "NAdam": ("exp_avg", "exp_avg_sq"),
}


#: The largest learning rate accepted: far above any that trains, far below the ~3.4e37 where
#: torch's float32 optimizer kernels overflow (Adam divides lr by 1 - beta1 = 0.1 at its first step).
MAX_LR = 1e6


def check_lr(lr: object, name: str = "lr") -> float:
    """``lr`` as a float; ``Invalid learning rate: ...`` (torch.optim's wording) unless a
    finite number in ``(0, MAX_LR]``, naming ``name`` (a bool or a string is not a learning rate)."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ConfigError(f"Invalid learning rate: {lr!r} ({name} must be a finite number > 0)")
    value = float(lr)
    if not math.isfinite(value) or value <= 0.0:
        raise ConfigError(f"Invalid learning rate: {lr!r} ({name} must be a finite number > 0)")
    if value > MAX_LR:
        raise ConfigError(f"Invalid learning rate: {lr!r} ({name} must be at most {MAX_LR:g})")
    return value


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` with learning rate ``lr``.

    Args:
        name: one of ``sgd, momentum, nesterov, adagrad, adadelta, rmsprop, adam, adamax, nadam,
            amsgrad`` (case-insensitive).
        params: tensors (or param groups) as for any ``torch.optim`` optimizer.
        lr: the learning rate, finite and > 0.

    Example:
        >>> opt = make_optimizer("nesterov", [torch.zeros(2, requires_grad=True)], lr=0.1)
        >>> type(opt).__name__, opt.defaults["momentum"], opt.defaults["nesterov"]
        ('SGD', 0.9, True)
    """
    cls_name, options = OPTIMIZERS[check_optimizer(name)]
    return getattr(torch.optim, cls_name)(params, lr=check_lr(lr), **options)


def _per_copy(values: Sequence[float], p: Tensor) -> Tensor:
    """``values`` as a ``K x 1 x ...`` tensor that broadcasts over ``p`` (``K x ...``), each
    rounded to ``p``'s dtype as torch's kernels round a Python scalar."""
    return torch.tensor(values, dtype=p.dtype, device=p.device).view(-1, *[1] * (p.dim() - 1))


# A finishing rule: (state, grad, param group, learning rates) -> the terms of torch's final
# update ``param.addcdiv_(num, den, value=v(lr))``, as (num, den, [v(lr_k) for each copy]).
Terms = list[tuple[Tensor, Tensor, list[float]]]


def _adam(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lrs: Sequence[float]) -> Terms:
    r"""Adam, AMSGrad: :math:`\theta \mathrel{+}= -(\alpha / c_1)\, m / (\sqrt{v / c_2} + \epsilon)`."""
    step = state["step"].item()
    beta1, beta2 = group["betas"]
    c1, c2 = 1 - beta1**step, 1 - beta2**step
    v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
    return [(state["exp_avg"], (v.sqrt() / c2**0.5).add_(group["eps"]), [-(lr / c1) for lr in lrs])]


def _adamax(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lrs: Sequence[float]) -> Terms:
    r"""Adamax: :math:`\theta \mathrel{+}= -(\alpha / c_1)\, m / u`."""
    c1 = 1 - group["betas"][0] ** state["step"].item()
    return [(state["exp_avg"], state["exp_inf"], [-(lr / c1) for lr in lrs])]


def _adagrad(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lrs: Sequence[float]) -> Terms:
    r"""Adagrad: :math:`\theta \mathrel{+}= -\alpha_t\, g / (\sqrt{s} + \epsilon)`."""
    decay = 1 + (state["step"].item() - 1) * group["lr_decay"]
    return [(grad, state["sum"].sqrt().add_(group["eps"]), [-(lr / decay) for lr in lrs])]


def _rmsprop(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lrs: Sequence[float]) -> Terms:
    r"""RMSprop (not centered): :math:`\theta \mathrel{+}= -\alpha\, g / (\sqrt{v} + \epsilon)`."""
    return [(grad, state["square_avg"].sqrt().add_(group["eps"]), [-lr for lr in lrs])]


def _nadam(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lrs: Sequence[float]) -> Terms:
    r"""NAdam: two terms over :math:`d = \sqrt{v / c_2} + \epsilon`, on ``g`` and on ``m``."""
    step, (beta1, beta2), decay = state["step"].item(), group["betas"], group["momentum_decay"]
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * decay)))
    product = state["mu_product"].item()
    den = state["exp_avg_sq"].div(1 - beta2**step).sqrt().add_(group["eps"])
    return [(grad, den, [-lr * (1.0 - mu) / (1.0 - product) for lr in lrs]),
            (state["exp_avg"], den, [(-lr * mu_next) / (1.0 - product * mu_next) for lr in lrs])]


#: Optimizers whose final update folds ``lr`` into a step-dependent scalar (a ``Terms`` rule
#: redoes it per copy); the others end in ``param.add_(s, alpha=-lr)``, a step ``s`` free of lr.
FINISH: dict[str, Callable[..., Terms]] = {
    "adam": _adam, "amsgrad": _adam, "adamax": _adamax, "adagrad": _adagrad, "rmsprop": _rmsprop,
    "nadam": _nadam,
}


def _adam_step(p: Tensor, state: dict[str, Any], group: dict[str, Any], lrs: Sequence[float]) -> None:
    """torch's single-tensor Adam (AMSGrad) step of ``p`` (``K x ...``), copy ``k`` at ``lrs[k]``:
    the state updates of ``torch.optim.Adam``, then :func:`_adam`'s per-copy final update."""
    if not state:
        state["step"] = torch.tensor(0.0, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32)
        keys = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        state.update({key: torch.zeros_like(p, memory_format=torch.preserve_format) for key in keys})
    beta1, beta2 = group["betas"]
    state["step"] += 1
    state["exp_avg"].lerp_(p.grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
    if group["amsgrad"]:
        torch.maximum(state["max_exp_avg_sq"], state["exp_avg_sq"], out=state["max_exp_avg_sq"])
    _finish_copies(p, _adam(state, p.grad, group, lrs))


def _finish_copies(p: Tensor, terms: Terms) -> None:
    """torch's final update ``param.addcdiv_(num, den, value=v)`` with copy ``k``'s own ``v``:
    ``p.addcdiv_(num * v_k, den)``, which rounds as torch's kernel does for one copy."""
    for num, den, values in terms:
        p.addcdiv_(num * _per_copy(values, p), den)


class PerCopyLR(Optimizer):
    r"""Optimizer ``name`` over stacked ``K x ...`` parameters, copy ``k`` at learning rate ``lrs[k]``.

    Torch's optimizer at ``lr = 1`` steps a zeroed shadow of each parameter: it keeps the state
    (which does not depend on :math:`\alpha`, module docstring) and gives :math:`s = -u`. Then
    on the CPU every copy gets the update torch's own optimizer would give it, bit for bit:

    - ``sgd``, ``momentum``, ``nesterov``, ``adadelta`` end in ``param.add_(u, alpha=-lr)``:
      :math:`\theta_k \leftarrow \theta_k + \alpha_k s_k` rounds the same;
    - the others end in ``param.addcdiv_(n, d, value=v(lr))`` with a scalar :math:`v` folding
      :math:`\alpha` with the step's bias corrections (:data:`FINISH`): the same terms with
      :math:`v(\alpha_k)` per copy, ``param.addcdiv_(n * v, d)``, which rounds as torch's kernel.
      Adam and AMSGrad skip the shadow there: their state updates run in place (:func:`_adam_step`).

    On other devices torch's optimizers run their ``foreach`` kernels, and every optimizer takes
    :math:`\theta_k + \alpha_k s_k` (an ulp from :math:`\alpha_k u` rounded as torch does).

    ``param_groups[0]["lr"]`` is the list of learning rates; the optimizer state lives on the
    shadows (:meth:`shadow_state`, which :func:`zero_copies` reads).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2, 1))
        >>> opt = PerCopyLR("sgd", [w], [0.1, 1.0])
        >>> w.grad = torch.ones(2, 1); opt.step(); w.data.flatten().tolist()
        [-0.10000000149011612, -1.0]
    """

    def __init__(self, name: str, params: Iterable[Tensor], lrs: Sequence[float]) -> None:
        params = list(params)
        self.lrs = [check_lr(v, f"lrs[{k}]") for k, v in enumerate(lrs)]
        for p in params:
            if p.dim() == 0 or p.shape[0] != len(self.lrs):
                raise ConfigError(f"PerCopyLR: a parameter of shape {tuple(p.shape)} is not stacked over "
                                  f"{len(self.lrs)} copies (dim 0)")
        super().__init__(params, {"lr": list(self.lrs)})
        self._shadows = [torch.zeros_like(p) for p in params]
        self.optimizer = make_optimizer(name, self._shadows, 1.0)
        self._finish = FINISH.get(check_optimizer(name))
        self._scale = [_per_copy(self.lrs, p) for p in params]
        # on the CPU Adam steps in place (no shadow step whose update is redone)
        self._native = self._finish is _adam and all(p.device.type == "cpu" for p in params)

    def shadow_state(self, i: int) -> dict[str, Any]:
        """The optimizer state of parameter ``i`` (``K x ...`` entries, as for the parameter)."""
        return self.optimizer.state[self._shadows[i]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step of every copy at its own learning rate."""
        loss = None if closure is None else torch.enable_grad()(closure)()
        params, group = self.param_groups[0]["params"], self.optimizer.param_groups[0]
        if self._native:
            for p, z in zip(params, self._shadows, strict=True):
                if p.grad is not None:
                    _adam_step(p, self.optimizer.state[z], group, self.lrs)
            return loss
        for p, z in zip(params, self._shadows, strict=True):
            z.zero_()
            z.grad = p.grad
        self.optimizer.step()
        for p, z, scale in zip(params, self._shadows, self._scale, strict=True):
            if z.grad is None:
                continue
            if self._finish is None or p.device.type != "cpu":
                p.addcmul_(z, scale)
            else:
                _finish_copies(p, self._finish(self.optimizer.state[z], z.grad, group, self.lrs))
            z.grad = None
        return loss


def zero_copies(opt: Optimizer, dead: Sequence[int]) -> None:
    """Zero the copies ``dead`` of every stacked parameter of ``opt``: weights, gradients and the
    optimizer state entries that :data:`COPY_STATE` names as per copy (step counters are shared)."""
    inner = opt.optimizer if isinstance(opt, PerCopyLR) else opt
    keys = COPY_STATE.get(type(inner).__name__)
    if keys is None:
        raise ConfigError(f"zero_copies: {type(inner).__name__} is not one of this module's optimizers")
    index: dict[torch.device, Tensor] = {}
    with torch.no_grad():
        for i, p in enumerate(p for group in opt.param_groups for p in group["params"]):
            if p.device not in index:
                index[p.device] = torch.tensor(list(dead), dtype=torch.long, device=p.device)
            rows = index[p.device]
            p.index_fill_(0, rows, 0.0)
            if p.grad is not None:
                p.grad.index_fill_(0, rows, 0.0)
            state = opt.shadow_state(i) if isinstance(opt, PerCopyLR) else opt.state.get(p, {})
            for key in keys:
                if key in state:
                    state[key].index_fill_(0, rows, 0.0)


__all__ = ["make_optimizer", "OPTIMIZERS", "DEFAULT_LR", "check_optimizer", "check_lr", "PerCopyLR",
           "zero_copies", "COPY_STATE", "FINISH"]
