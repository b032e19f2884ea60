r"""The 1-D convolutional baseline of MNIST-1D (Greydanus 2020, ``ConvBase``).

``conv1 (25@5, stride 2, pad 1) -> act1 -> conv2 (25@3, s2, p1) -> act2 -> conv3 (25@3, s2, p1)
-> act3 -> flatten -> fc (125->C)``.

Shapes: ``B x 1 x 40 -> B x 25 x 19 -> B x 25 x 10 -> B x 25 x 5 -> B x 125 -> B x C``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from metabp.targets._net_common import activation_module


def cnn1d(in_shape: Sequence[int], num_classes: int, *, activation: str = "relu",
          channels: int = 25) -> nn.Sequential:
    """MNIST-1D's ConvBase for ``in_shape = (1, L)`` (``L = 40`` for MNIST-1D)."""
    body = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv1d(in_shape[0], channels, 5, stride=2, padding=1)),
        ("act1", activation_module(activation)),
        ("conv2", nn.Conv1d(channels, channels, 3, stride=2, padding=1)),
        ("act2", activation_module(activation)),
        ("conv3", nn.Conv1d(channels, channels, 3, stride=2, padding=1)),
        ("act3", activation_module(activation)),
        ("flatten", nn.Flatten()),
    ]))
    with torch.no_grad():
        width = body(torch.zeros(1, *in_shape)).shape[1]
    body.add_module("fc", nn.Linear(width, num_classes))
    return body


__all__ = ["cnn1d"]
