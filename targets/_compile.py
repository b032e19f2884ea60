"""``torch.compile`` of the per-copy loss, for ``train(..., compile=True)`` and ``train_many``.

One compiled :func:`model_losses` serves every run in the process: dynamo guards on the model's
structure and the shapes, not on the weights or the b-functions' tables (tensors, so new data),
so a new candidate or seed of the same target reuses the graphs compiled for the first. A
target compiles about two graphs (the full batch and the last, smaller batch of an epoch);
backward is compiled with them. The optimizer step stays eager.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metabp.targets._loop import model_losses

_compiled: list[Callable] = []  # made on first use: importing dynamo takes seconds


def compiled_model_losses() -> Callable:
    """``torch.compile(model_losses)``, the same object on every call."""
    if not _compiled:
        _compiled.append(torch.compile(model_losses, dynamic=False))
    return _compiled[0]


__all__ = ["compiled_model_losses"]
