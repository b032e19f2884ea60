r"""SimpleNet (Hasanpour et al. 2016) for CIFAR-10: 13 convolutions, about 5.48M parameters.

Each block ``k`` is ``conv{k} -> bn{k} -> act{k}``; max pooling (``pool*``) after blocks 4, 7, 9,
10 and 12, global max pooling at the end, then ``fc`` to the classes. Widths:
``64, 128, 128, 128 | 128, 128, 256 | 256, 256 | 512 | 2048 (1x1), 256 (1x1) | 256``.
Dropout of the original is left out, so training is deterministic given the seed.

Shapes: ``B x 3 x 32 x 32 -> ... -> B x 256 x 1 x 1 -> B x 256 -> B x C``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from metabp.targets._net_common import activation_module

# (out channels, kernel) per conv block; "M" is a 2x2 max pool
LAYOUT: tuple = ((64, 3), (128, 3), (128, 3), (128, 3), "M", (128, 3), (128, 3), (256, 3), "M",
                 (256, 3), (256, 3), "M", (512, 3), "M", (2048, 1), (256, 1), "M", (256, 3))


def simplenet(in_shape: Sequence[int], num_classes: int, *, activation: str = "relu",
              width: float = 1.0) -> nn.Sequential:
    """SimpleNet; ``width`` scales every channel count (tests use a narrow copy)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, k, pools = in_shape[0], 0, 0
    for item in LAYOUT:
        if item == "M":
            pools += 1
            layers[f"pool{pools}"] = nn.MaxPool2d(2)
            continue
        out, kernel = item
        out = max(1, int(round(out * width)))
        k += 1
        layers[f"conv{k}"] = nn.Conv2d(channels, out, kernel, padding=kernel // 2)
        layers[f"bn{k}"] = nn.BatchNorm2d(out)
        layers[f"act{k}"] = activation_module(activation)
        channels = out
    layers["gpool"] = nn.AdaptiveMaxPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels, num_classes)
    return nn.Sequential(layers)


__all__ = ["simplenet", "LAYOUT"]
