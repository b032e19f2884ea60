"""The activation modules of the target networks, by the core's activation names."""

from __future__ import annotations

from torch import nn

import metabp
from metabp import ACTIVATION_MODULES
from metabp.exceptions import ConfigError


def check_activation(name: object) -> str:
    """The canonical name of a hidden-unit activation (``relu``, ``tanh``, ``swish`` -> ``silu``, ...).

    Example:
        >>> check_activation("swish")
        'silu'
    """
    if not isinstance(name, str):
        raise ConfigError(f"activation={name!r} must be a name such as 'relu'; choose one of "
                          f"{', '.join(ACTIVATION_MODULES)}")
    canonical = metabp.get_activation(name).name  # ConfigError naming the choices if unknown
    if canonical not in ACTIVATION_MODULES:
        raise ConfigError(f"activation={name!r} is not a target network activation; choose one of "
                          f"{', '.join(ACTIVATION_MODULES)}")
    return canonical


def activation_module(name: str) -> nn.Module:
    """A fresh activation module by name (relu, tanh, ...); patchable by ``metabp.patch``."""
    return ACTIVATION_MODULES[check_activation(name)]()


__all__ = ["activation_module", "check_activation", "ACTIVATION_MODULES"]
