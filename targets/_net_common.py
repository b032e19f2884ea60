"""Helpers shared by the target networks."""

from __future__ import annotations

from torch import nn

from metabp.exceptions import ConfigError

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
    "softplus": nn.Softplus, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
}


def activation_module(name: str) -> nn.Module:
    """A fresh activation module by name (relu, tanh, ...); patchable by ``metabp.patch``."""
    if name not in ACTIVATION_MODULES:
        raise ConfigError(
            f"activation={name!r} is not a target network activation; choose one of "
            f"{', '.join(ACTIVATION_MODULES)}"
        )
    return ACTIVATION_MODULES[name]()
