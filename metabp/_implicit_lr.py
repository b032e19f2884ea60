r"""The implicit learning rate of a b-function (paper eq. 4).

Replacing :math:`\sigma'` by ``g`` makes SGD step as if each unit had the learning rate

.. math:: \beta(z) = \alpha \, \frac{g(z)}{\sigma'(z)}, \qquad \sigma'(z) \neq 0,

for the parameters below the activation. Where :math:`\sigma'(z) = 0` (ReLU for ``z < 0``) there
is no learning rate that gives ``g``: ``beta`` is NaN there, and a nonzero ``g`` injects credit
that plain backprop would not.

This reading is exact for plain SGD. Adam-like optimizers (adam, adamax, nadam, amsgrad, rmsprop,
adagrad, adadelta) divide each update by a running gradient scale, so a constant factor in ``g``
cancels; only the *shape* of ``g / sigma'`` over ``z`` acts there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import ActivationLike, BFunction

# optimizers whose step is invariant to a constant rescaling of the gradient
SCALE_INVARIANT = frozenset({"adam", "adamax", "nadam", "amsgrad", "rmsprop", "adagrad", "adadelta"})


def implicit_lr(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    lr: float = 1.0,
    z: Tensor | None = None,
) -> Tensor:
    r"""``beta(z) = lr * g(z) / sigma'(z)``, NaN where ``sigma'(z) = 0``.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces.
        lr: the optimizer's learning rate ``alpha``.
        z: pre-activations to evaluate at; default ``linspace(-4, 4, 401)``.

    Returns:
        ``beta`` with the shape of ``z``.

    Example:
        >>> import metabp
        >>> implicit_lr(metabp.Scaled(0.5), "relu", lr=0.1, z=torch.tensor([-1.0, 1.0]))
        tensor([   nan, 0.0500])
    """
    act = get_activation(activation)
    if z is None:
        z = torch.linspace(-4, 4, 401)
    d = act.derivative(z)
    beta = lr * bfn(z, act) / d
    return torch.where(d == 0, torch.full_like(beta, float("nan")), beta)
