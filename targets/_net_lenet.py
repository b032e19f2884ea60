r"""LeNet-5 (LeCun et al. 1998) for ``1 x 28 x 28`` images, with max pooling and ReLU-family units.

``conv1 (6@5x5, pad 2) -> act1 -> pool1 -> conv2 (16@5x5) -> act2 -> pool2 -> flatten ->
fc1 (400->120) -> act3 -> fc2 (120->84) -> act4 -> fc3 (84->C)``.

Shapes: ``B x 1 x 28 x 28 -> B x 6 x 14 x 14 -> B x 16 x 5 x 5 -> B x 400 -> B x C``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from metabp.exceptions import ConfigError
from metabp.targets._net_common import activation_module


def lenet(in_shape: Sequence[int], num_classes: int, *, activation: str = "relu") -> nn.Sequential:
    """LeNet-5 for ``in_shape = (1, 28, 28)``."""
    if tuple(in_shape) != (1, 28, 28):
        raise ConfigError(f"lenet needs inputs of shape (1, 28, 28), got in_shape={tuple(in_shape)}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("act1", activation_module(activation)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("act2", activation_module(activation)),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(400, 120)), ("act3", activation_module(activation)),
        ("fc2", nn.Linear(120, 84)), ("act4", activation_module(activation)),
        ("fc3", nn.Linear(84, num_classes)),
    ]))


__all__ = ["lenet"]
