r"""Mixed precision and memory format of a target network: the ``amp`` and ``channels_last`` options.

``amp = "bf16"`` or ``"fp16"`` runs the forward pass under ``torch.autocast`` on the input's
device: matrix products and convolutions in 16 bits, reductions and the loss in float32. The
weights, their gradients and the optimizer stay float32, and the logits are cast back to float32,
so the loss (and the AULC) is computed as without ``amp``. ``fp16`` has no loss scaling: a
gradient below about :math:`6 \cdot 10^{-8}` flushes to zero; prefer ``bf16``.

``channels_last = True`` stores every 4-d convolution weight as ``N x H x W x C`` in memory
(``torch.channels_last``); the convolutions then run in that layout (the data need not change).

Both are off by default. They change rounding, not the run: the AULC moves by the rounding of
16-bit products (``amp``) or of a different summation order (``channels_last``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metabp.exceptions import ConfigError

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
CHANNELS_LAST_NETWORKS = ("lenet", "simplenet")  # networks with 2-d convolutions


def check_amp(amp: object) -> str | None:
    """``None`` or one of :data:`AMP_DTYPES` (``"bf16"``, ``"fp16"``)."""
    if amp is not None and (not isinstance(amp, str) or amp not in AMP_DTYPES):
        raise ConfigError(f"amp={amp!r} is not known; choose one of {', '.join(AMP_DTYPES)} "
                          "(or None: float32)")
    return amp


def check_channels_last(channels_last: object, network: str) -> bool:
    """A bool, True only for a network with 2-d convolutions."""
    if not isinstance(channels_last, bool):
        raise ConfigError(f"channels_last={channels_last!r} must be true or false")
    if channels_last and network not in CHANNELS_LAST_NETWORKS:
        raise ConfigError(f"channels_last=True applies to 2-d convolutions; network={network!r} has none "
                          f"(use it with {' or '.join(CHANNELS_LAST_NETWORKS)})")
    return channels_last


def amp_forward(forward: Callable[[Tensor], Tensor], x: Tensor, amp: str | None) -> Tensor:
    """``forward(x)``; with ``amp``, run under ``torch.autocast`` on ``x``'s device in the dtype
    ``amp`` names and cast back to float32."""
    if amp is None:
        return forward(x)
    with torch.autocast(x.device.type, dtype=AMP_DTYPES[amp]):
        out = forward(x)
    return out.float()


class AutocastSequential(nn.Sequential):
    """An ``nn.Sequential`` whose forward runs under :func:`amp_forward` (float32 out).

    The same children and names as the plain network (``metabp.patch`` and ``where`` see no
    difference); ``amp`` is the dtype's name.
    """

    def __init__(self, layers: nn.Sequential, amp: str) -> None:
        super().__init__(OrderedDict(layers.named_children()))
        self.amp = check_amp(amp)

    def forward(self, x: Tensor) -> Tensor:
        return amp_forward(super().forward, x, self.amp)


def with_options(model: nn.Sequential, amp: str | None, channels_last: bool) -> nn.Sequential:
    """``model`` with its conv weights in channels-last memory and its forward under ``amp``."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model if amp is None else AutocastSequential(model, amp)


def channels_last_stack(w: Tensor) -> Tensor:
    """``K`` conv weights stacked (``K x out x in x kh x kw``) laid out so that the grouped view
    ``w.reshape(K * out, in, kh, kw)`` is channels-last, with the same values."""
    return w.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


__all__ = ["AMP_DTYPES", "check_amp", "check_channels_last", "amp_forward", "AutocastSequential",
           "with_options", "channels_last_stack", "CHANNELS_LAST_NETWORKS"]
