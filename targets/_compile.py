"""``torch.compile`` of a model's per-copy loss, for ``train(..., compile=True)`` and ``train_many``.

One compiled function serves every run in the process: dynamo guards on the model's structure
and the shapes, not on the weights or the b-functions' tables (tensors, so new data), so a new
candidate or seed of the same target reuses the graphs compiled for the first. A target compiles
about two graphs (the full batch and the last, smaller batch of an epoch); backward is compiled
with them. The optimizer step stays eager.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metabp.targets._loop import copy_losses

_compiled: list[Callable] = []  # the one compiled function, made on first use (importing dynamo is slow)


def _losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return copy_losses(model(x), y)


def compiled_loss(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, y) -> copy_losses(model(x), y)``, forward and backward compiled (see the module docstring)."""
    if not _compiled:
        _compiled.append(torch.compile(_losses, dynamic=False))
    fn = _compiled[0]
    return lambda x, y: fn(model, x, y)


__all__ = ["compiled_loss"]
