"""``torch.compile`` of the per-copy loss, for ``train(..., compile=True)`` and ``train_many``.

One compiled :func:`model_losses` per device type serves every run in the process: dynamo guards
on the model's structure and the shapes, not on the weights or the b-functions' tables (tensors,
so new data), so a new candidate or seed of the same target reuses the graphs compiled for the
first. A target compiles about two graphs (the full batch and the last, smaller batch of an
epoch); backward is compiled with them. The optimizer step stays eager.

On CUDA the graphs run as CUDA graphs (``mode="reduce-overhead"``): one launch replays a step's
kernels, which is what removes the per-kernel host cost that dominates small targets there. In
the default mode, compiling measured slower than eager on an H200 for ``train_many`` (64 copies
of digits-mlp); the CUDA-graph mode is not yet measured (``benchmarks/gpu.sh`` does). Until it
is, keep ``compile=False`` on a GPU; on a CPU ``benchmarks/train_many.py --compile`` measures it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metabp.targets._loop import model_losses

MODES = {"cuda": "reduce-overhead"}  # device type -> torch.compile mode (others: the default)
_compiled: dict[str, Callable] = {}  # made on first use: importing dynamo takes seconds


def _for(device_type: str) -> Callable:
    """``torch.compile(model_losses)`` for one device type, the same object on every call."""
    if device_type not in _compiled:
        _compiled[device_type] = torch.compile(model_losses, dynamic=False, mode=MODES.get(device_type))
    return _compiled[device_type]


def _compiled_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    device_type = x.device.type
    if device_type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()  # a new step: earlier outputs may be reused
    return _for(device_type)(model, x, y)


def compiled_model_losses() -> Callable:
    """:func:`model_losses` compiled for the device of its input (see the module docstring).
    On CUDA its output is overwritten by the next call: copy what must outlive the step."""
    return _compiled_losses


__all__ = ["compiled_model_losses", "MODES"]
