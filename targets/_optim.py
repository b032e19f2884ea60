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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

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


def check_lr(lr: float) -> float:
    """``lr`` as a float; ``Invalid learning rate: ...`` (torch.optim's wording) unless a finite
    number > 0 (a bool or a string is not a learning rate)."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ConfigError(f"Invalid learning rate: {lr!r} (lr must be a finite number > 0)")
    value = float(lr)
    if not math.isfinite(value) or value <= 0.0:
        raise ConfigError(f"Invalid learning rate: {lr!r} (lr must be a finite number > 0)")
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


__all__ = ["make_optimizer", "OPTIMIZERS", "DEFAULT_LR", "check_optimizer", "check_lr"]
