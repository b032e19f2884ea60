r"""Weight initialisations by the names the background uses.

For a weight with fan-in :math:`n_{in}` and fan-out :math:`n_{out}` (a conv kernel counts its
receptive field in both):

- ``he``: :math:`W \sim \mathcal N(0, 2/n_{in})` (He et al. 2015, for ReLU).
- ``uniform``: :math:`W \sim U[-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}}]` (the "commonly used heuristic"
  of Glorot & Bengio 2010).
- ``glorot`` (alias ``normalized``, ``xavier``): :math:`W \sim U[-\sqrt{6/(n_{in}+n_{out})},
  \sqrt{6/(n_{in}+n_{out})}]` (Glorot & Bengio's normalized initialisation).
- ``default``: what ``torch.nn`` does on construction.

Biases start at zero (except under ``default``); BatchNorm starts at scale 1, shift 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metabp.exceptions import ConfigError

INITS = ("he", "uniform", "glorot", "default")
ALIASES = {"normalized": "glorot", "xavier": "glorot", "kaiming": "he"}


def check_init(name: str) -> str:
    """The canonical init name; ``ConfigError`` naming the choices otherwise."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in INITS:
        raise ConfigError(
            f"init={name!r} is not known; choose one of {', '.join(INITS)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return key


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def initialize(model: nn.Module, init: str, generator: torch.Generator) -> nn.Module:
    """Initialise every Linear/Conv weight of ``model`` in place by ``init``, drawing from ``generator``."""
    key = check_init(init)
    if key == "default":
        return model
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        w = module.weight
        fan_in, fan_out = _fans(w)
        if key == "he":
            w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
        elif key == "uniform":
            bound = 1.0 / math.sqrt(fan_in)
            w.uniform_(-bound, bound, generator=generator)
        else:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-bound, bound, generator=generator)
        if module.bias is not None:
            module.bias.zero_()
    return model


__all__ = ["initialize", "check_init", "INITS"]
