"""Activation functions sigma, their derivatives sigma', and the exact aten backward of each.

The backward of every activation is the aten kernel autograd itself calls
(``threshold_backward``, ``tanh_backward``, ...), so a b-function equal to sigma' reproduces
plain autograd bit for bit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp.exceptions import ConfigError

aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``y = sigma(z)`` with its exact backward ``grad * sigma'(z)``.

    Example:
        >>> act = get_activation("tanh")
        >>> z = torch.tensor([0.0, 1.0])
        >>> torch.allclose(act.derivative(z), 1 - torch.tanh(z) ** 2)
        True
    """

    name: str
    kwargs: dict = field(default_factory=dict)

    def forward(self, z: Tensor) -> Tensor:
        return _FORWARD[self.name](z, **self.kwargs)

    def backward(self, grad: Tensor, z: Tensor, y: Tensor) -> Tensor:
        """``grad * sigma'(z)`` computed as autograd computes it (``y = sigma(z)``)."""
        return _BACKWARD[self.name](grad, z, y, **self.kwargs)

    def derivative(self, z: Tensor) -> Tensor:
        """``sigma'(z)``, elementwise."""
        return self.backward(torch.ones_like(z), z, self.forward(z))

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.kwargs.items()))))


_FORWARD: dict[str, Callable[..., Tensor]] = {
    "relu": lambda z: torch.relu(z),
    "leaky_relu": lambda z, negative_slope=0.01: F.leaky_relu(z, negative_slope),
    "elu": lambda z, alpha=1.0: F.elu(z, alpha),
    "gelu": lambda z, approximate="none": F.gelu(z, approximate=approximate),
    "silu": lambda z: F.silu(z),
    "softplus": lambda z, beta=1.0, threshold=20.0: F.softplus(z, beta, threshold),
    "sigmoid": lambda z: torch.sigmoid(z),
    "tanh": lambda z: torch.tanh(z),
    "linear": lambda z: z,
}

_BACKWARD: dict[str, Callable[..., Tensor]] = {
    "relu": lambda g, z, y: aten.threshold_backward(g, y, 0),
    "leaky_relu": lambda g, z, y, negative_slope=0.01: aten.leaky_relu_backward(
        g, z, negative_slope, False
    ),
    "elu": lambda g, z, y, alpha=1.0: aten.elu_backward(g, alpha, 1, 1, False, z),
    "gelu": lambda g, z, y, approximate="none": aten.gelu_backward(g, z, approximate=approximate),
    "silu": lambda g, z, y: aten.silu_backward(g, z),
    "softplus": lambda g, z, y, beta=1.0, threshold=20.0: aten.softplus_backward(
        g, z, beta, threshold
    ),
    "sigmoid": lambda g, z, y: aten.sigmoid_backward(g, y),
    "tanh": lambda g, z, y: aten.tanh_backward(g, y),
    "linear": lambda g, z, y: g,
}

ALIASES = {"swish": "silu", "identity": "linear", "leakyrelu": "leaky_relu"}
ACTIVATION_NAMES = tuple(_FORWARD)

# the keyword arguments each activation takes: a finite real number, or one of a few strings
_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "leaky_relu": {"negative_slope": None},
    "elu": {"alpha": None},
    "gelu": {"approximate": ("none", "tanh")},
    "softplus": {"beta": None, "threshold": None},
}

# nn.Module class -> (activation name, the module attributes that are its kwargs)
MODULES: dict[type[nn.Module], tuple[str, tuple[str, ...]]] = {
    nn.ReLU: ("relu", ()),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.ELU: ("elu", ("alpha",)),
    nn.GELU: ("gelu", ("approximate",)),
    nn.SiLU: ("silu", ()),
    nn.Softplus: ("softplus", ("beta", "threshold")),
    nn.Sigmoid: ("sigmoid", ()),
    nn.Tanh: ("tanh", ()),
}


#: activation name -> its nn.Module class: every activation module ``patch`` recognises
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {name: cls for cls, (name, _) in MODULES.items()}


def get_activation(name: str | Activation, **kwargs) -> Activation:
    """Look up an activation by name (``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``silu``/``swish``,
    ``softplus``, ``sigmoid``, ``tanh``, ``linear``), with its keyword arguments."""
    if isinstance(name, Activation):
        return name
    key = ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else None
    if key not in _FORWARD:
        raise ConfigError(
            f"activation={name!r} is not known; choose one of {', '.join(ACTIVATION_NAMES)}"
        )
    _check_options(key, kwargs)
    return Activation(key, dict(kwargs))


def _check_options(name: str, kwargs: dict) -> None:
    """Raise ConfigError unless every keyword is one ``name`` takes, with an allowed value."""
    options = _OPTIONS.get(name, {})
    for key, value in kwargs.items():
        if key not in options:
            takes = ", ".join(options) or "no keyword arguments"
            raise ConfigError(f"activation {name!r} got {key}={value!r}; it takes {takes}")
        allowed = options[key]
        if allowed is not None:
            if value not in allowed:
                raise ConfigError(f"{name}({key}={value!r}): choose one of {', '.join(allowed)}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"{name}({key}={value!r}): {key} must be a finite number")
        elif name == "softplus" and key == "beta" and value <= 0:
            raise ConfigError(f"softplus(beta={value!r}): beta must be > 0")


def activation_of(module: nn.Module) -> Activation | None:
    """The :class:`Activation` an activation module computes, or None for any other module."""
    for cls, (name, attrs) in MODULES.items():
        if type(module) is cls:
            return Activation(name, {a: getattr(module, a) for a in attrs})
    return None
