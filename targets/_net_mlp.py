r"""Multi-layer perceptron: ``fc1 -> act1 -> fc2 -> act2 -> ... -> fc{L}``.

Layer :math:`l` computes :math:`z^l = W^l a^{l-1} (+ b^l)`, :math:`a^l = \sigma(z^l)`; the last
layer gives the logits (softmax is in the cross-entropy loss). Module names are ``fc1, act1,
fc2, act2, ..., fc{L}``, so ``where="act2"`` is the activation after ``fc2``.

Shapes: input ``B x D`` (images are flattened by a leading ``flatten`` module), logits ``B x C``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from metabp.targets._net_common import activation_module


def mlp(in_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int], activation: str = "relu",
        bias: bool = True) -> nn.Sequential:
    """An MLP with the given hidden widths, e.g. ``hidden=(16, 16)`` for the gaussians-mlp3 preset.

    Example:
        >>> net = mlp((2,), 2, hidden=(16, 16), bias=False)
        >>> [n for n, _ in net.named_children()]
        ['fc1', 'act1', 'fc2', 'act2', 'fc3']
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(in_shape) > 1:
        layers["flatten"] = nn.Flatten()
    width = math.prod(in_shape)
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h, bias=bias)
        layers[f"act{i}"] = activation_module(activation)
        width = h
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes, bias=bias)
    return nn.Sequential(layers)


__all__ = ["mlp"]
