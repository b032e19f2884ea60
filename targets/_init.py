r"""Weight initialisations by name, drawn with ``torch.nn.init`` from a seeded generator.

For a weight with fan-in :math:`n_{in}` and fan-out :math:`n_{out}` (a conv kernel counts its
receptive field in both):

- ``he`` (alias ``kaiming``): :math:`W \sim \mathcal N(0, 2/n_{in})` (He et al. 2015, for ReLU;
  ``nn.init.kaiming_normal_``).
- ``uniform``: :math:`W \sim U[-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}}]` (Glorot & Bengio 2010's
  "commonly used heuristic"; ``nn.init.kaiming_uniform_`` with ``a = sqrt(5)``, as ``nn.Linear``
  draws its weights).
- ``glorot`` (alias ``normalized``, ``xavier``): :math:`W \sim U[-\sqrt{6/(n_{in}+n_{out})},
  \sqrt{6/(n_{in}+n_{out})}]` (Glorot & Bengio's normalized initialisation;
  ``nn.init.xavier_uniform_``).
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
    if not isinstance(name, str) or key not in INITS:
        raise ConfigError(
            f"init={name!r} is not known; choose one of {', '.join(INITS)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return key


@torch.no_grad()
def initialize(model: nn.Module, init: str, generator: torch.Generator) -> nn.Module:
    """Initialise every Linear/Conv weight of ``model`` in place by ``init``, drawing from ``generator``."""
    key = check_init(init)
    if key == "default":
        return model
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        if key == "he":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
        elif key == "uniform":
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        else:
            nn.init.xavier_uniform_(module.weight, generator=generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


__all__ = ["initialize", "check_init", "INITS"]
