r"""The implicit learning rate of a b-function (paper eq. 4).

Replacing :math:`\sigma'` by ``g`` makes SGD step as if each unit had the learning rate

.. math:: \beta(z) = \alpha \, \frac{g(z)}{\sigma'(z)}, \qquad \sigma'(z) \neq 0,

for the parameters below the activation. Where :math:`\sigma'(z) = 0` (ReLU for ``z < 0``) there
is no learning rate that gives ``g``: ``beta`` is NaN there, and a nonzero ``g`` injects credit
that plain backprop would not. This reading is exact for plain SGD; see :data:`SCALE_INVARIANT`
for the optimizers where only the shape of ``beta`` acts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import ActivationLike, BFunction
from metabp.exceptions import ConfigError

#: Optimizers whose step is invariant to a constant rescaling of the gradient: they divide each
#: update by a running gradient scale, so a constant factor in ``g`` cancels and only the shape of
#: ``g / sigma'`` over ``z`` acts (:data:`SCALE_NOTE`).
SCALE_INVARIANT = frozenset({"adam", "adamax", "nadam", "amsgrad", "rmsprop", "adagrad", "adadelta"})
#: The one sentence that says so, for tables, plots and reports.
SCALE_NOTE = ("Adam-like optimizers divide each update by a running gradient scale, so a constant "
              "factor in g cancels and only the shape of g/sigma' over z acts; with plain SGD, "
              "g = c * sigma' is exactly a learning rate lr * c.")


def implicit_lr(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    lr: float = 1.0,
    z: Tensor | None = None,
) -> Tensor:
    r"""``beta(z) = lr * g(z) / sigma'(z)``, NaN where ``sigma'(z) = 0``.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces (a name or an :class:`~metabp.Activation`).
        lr: the optimizer's learning rate ``alpha`` (a finite number).
        z: pre-activations to evaluate at (a floating-point tensor); default ``linspace(-4, 4, 401)``.

    Returns:
        ``beta`` with the shape of ``z``.

    Raises:
        ConfigError: an argument of the wrong type or value; the message names it.

    Example:
        >>> import metabp
        >>> implicit_lr(metabp.Scaled(0.5), "relu", lr=0.1, z=torch.tensor([-1.0, 1.0]))
        tensor([   nan, 0.0500])
    """
    if not isinstance(bfn, BFunction):
        raise ConfigError(f"implicit_lr(bfn={bfn!r}): must be a b-function (MetaNet, Derivative, Scaled)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        raise ConfigError(f"implicit_lr(lr={lr!r}): must be a finite number")
    act = get_activation(activation)
    if z is None:
        z = torch.linspace(-4, 4, 401)
    elif not isinstance(z, Tensor) or not z.is_floating_point():
        raise ConfigError(f"implicit_lr(z={z!r}): must be None or a floating-point tensor")
    d = act.derivative(z)
    beta = lr * bfn(z, act) / d
    return torch.where(d == 0, torch.full_like(beta, float("nan")), beta)
