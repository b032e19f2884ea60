"""``torch.compile`` of the per-copy loss of a model, for ``train(..., compile=True)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metabp.targets._loop import copy_losses


def compiled_loss(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, y) -> copy_losses(model(x), y)`` through ``torch.compile``."""
    compiled = torch.compile(model)
    return lambda x, y: copy_losses(compiled(x), y)


__all__ = ["compiled_loss"]
