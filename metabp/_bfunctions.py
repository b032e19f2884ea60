r"""B-functions: what the backward pass multiplies by in place of :math:`\sigma'(z)`.

Backprop computes (paper eq. 1) :math:`\delta^l = ((W^{l+1})^T \delta^{l+1}) \odot \sigma'(z^l)`.
A b-function ``g`` replaces the factor :math:`\sigma'(z^l)`:

.. math:: \delta^l = ((W^{l+1})^T \delta^{l+1}) \odot g(z^l)

Each kind is one class: :class:`~metabp._metanet.MetaNet` (a learned ``g_omega``, in its own
module), :class:`Derivative` (the derivative of another activation), :class:`Scaled`
(``c * sigma'``). Every kind answers ``g(z, activation)`` exactly, and
``vjp(grad, z, y, activation) = grad * g(z)`` fast, which is what the backward pass calls.
Reference: Alber et al. 2018, *Backprop Evolution*.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch  # noqa: F401 - the doctests' namespace
from torch import Tensor

from metabp._activations import Activation, get_activation
from metabp.exceptions import ConfigError, PatchError

ActivationLike = str | Activation
# activations whose exact backward reads only the output y (autograd saves y, not z)
OUTPUT_ONLY = frozenset({"relu", "tanh", "sigmoid"})


class BFunction(ABC):
    """A replacement ``g(z)`` for the activation derivative ``sigma'(z)`` in the backward pass.

    Subclasses implement ``__call__`` (exact values) and may override ``vjp`` (the backward's
    ``grad * g(z)``) with something faster or closer to autograd's own kernels.
    """

    kind: ClassVar[str]
    meta: dict[str, Any]

    @abstractmethod
    def __call__(self, z: Tensor, activation: ActivationLike | None = None) -> Tensor:
        """``g(z)`` elementwise; ``activation`` is the sigma this g replaces."""

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        """``grad * g(z)``: the incoming gradient times g, with ``y = sigma(z)`` at hand."""
        return grad * self(z, activation)

    def needs_input(self, activation: Activation) -> bool:
        """Whether ``vjp`` reads ``z`` (else it gets ``y`` in its place): saving only ``y``,
        as autograd does for relu, tanh and sigmoid, costs no memory beyond plain backprop."""
        return True

    #: True for b-functions read from a table. They implement ``table_args(z)``, a
    #: :class:`~metabp._table.TableArgs` with which ``lookup(z, table_args(z))`` is ``g(z)``, and
    #: ``prepare(device, dtype)``. Its tensors are replaced, never changed in place, when g
    #: changes, so a compiled graph takes them as inputs and a backward reads its forward's table.
    tabulated: bool = False
    #: Whether differentiating the patched backward again (``create_graph=True``, then a second
    #: backward) gives the true second derivative; where not, it raises PatchError.
    twice_differentiable: bool = False
    #: Incremented whenever g changes (a MetaNet's omega is assigned); 0 for fixed b-functions.
    version: int = 0

    # --- artifact state: tensors and a JSON-able config; see metabp._artifact ---
    @abstractmethod
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and JSON config that rebuild this b-function with ``from_state``."""

    @classmethod
    @abstractmethod
    def from_state(cls, tensors: dict[str, Tensor], config: dict[str, Any]) -> BFunction:
        """Rebuild from ``state()``; raises ``ConfigError`` on a wrong config or shape."""


_MISSING = object()


def _field(config: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``config[key]`` (or ``default``); ConfigError when the config is no mapping or lacks it."""
    if not isinstance(config, dict):
        raise ConfigError(f"config={config!r}: must be a mapping of fields")
    if key in config:
        return config[key]
    if default is _MISSING:
        raise ConfigError(f"config {config!r} has no field {key!r}")
    return default


def _require_activation(activation: ActivationLike | None, who: str) -> Activation:
    if activation is None:
        raise ConfigError(f"{who} needs activation=... (the sigma it replaces), got None")
    return get_activation(activation)


class Derivative(BFunction):
    r"""The derivative of a named activation, in place of :math:`\sigma'`: ``g(z) = tau'(z)``.

    ``Derivative(name)`` patched into its own activation reproduces autograd bit for bit (it
    calls the same aten backward kernel).

    Args:
        name: relu, leaky_relu, elu, gelu, silu (swish), softplus, sigmoid, tanh or linear.
        **kwargs: that activation's options (``negative_slope``, ``alpha``, ``beta``, ...).

    Example:
        >>> g = Derivative("tanh")
        >>> g(torch.tensor([0.0]))
        tensor([1.])
    """

    kind = "derivative"
    twice_differentiable = True  # its backward is aten's, differentiable like autograd's own

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.of = get_activation(name, **kwargs)  # ConfigError: unknown name, kwarg or value
        self.meta = {}

    def __call__(self, z: Tensor, activation: ActivationLike | None = None) -> Tensor:
        return self.of.derivative(z)

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        own_y = y if activation == self.of else self.of.forward(z)
        return self.of.backward(grad, z, own_y)

    def needs_input(self, activation: Activation) -> bool:
        return not (activation == self.of and activation.name in OUTPUT_ONLY)

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {}, {"name": self.of.name, "kwargs": self.of.kwargs}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], config: dict[str, Any]) -> Derivative:
        kwargs = _field(config, "kwargs", {})
        if not isinstance(kwargs, dict):
            raise ConfigError(f"derivative config kwargs={kwargs!r}: must be a mapping of options")
        return cls(_field(config, "name"), **kwargs)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.of.kwargs.items())
        return f"Derivative({self.of.name!r}{extra})"


class Scaled(BFunction):
    r"""``g(z) = c * sigma'(z)`` of the activation it replaces.

    With plain SGD this is exactly a learning rate ``lr * c`` for every parameter below the
    activation (paper eq. 3-4); Adam-like optimizers divide the constant back out.

    ``|c|`` is at most :attr:`max_c` (``1e37``): every activation here has ``|sigma'| <= 1.2``,
    so ``c * sigma'`` stays finite in float32.

    Example:
        >>> Scaled(0.5)(torch.tensor([-1.0, 2.0]), "relu")
        tensor([0.0000, 0.5000])
    """

    kind = "scaled"
    max_c: ClassVar[float] = 1e37

    def __init__(self, c: float) -> None:
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c):
            raise ConfigError(f"Scaled(c={c!r}): c must be a finite real number (not a bool)")
        if abs(c) > self.max_c:
            raise ConfigError(f"Scaled(c={c!r}): |c| must be <= {self.max_c:g}, or c * sigma' "
                              "overflows float32")
        self.c = float(c)
        self.meta = {}

    def __call__(self, z: Tensor, activation: ActivationLike | None = None) -> Tensor:
        return self.c * _require_activation(activation, "Scaled").derivative(z)

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        return activation.backward(grad, z, y).mul_(self.c)

    def needs_input(self, activation: Activation) -> bool:
        return activation.name not in OUTPUT_ONLY

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {}, {"c": self.c}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], config: dict[str, Any]) -> Scaled:
        return cls(_field(config, "c"))

    def __repr__(self) -> str:
        return f"Scaled({self.c!r})"


def check_bfn(bfn: Any) -> None:
    """PatchError unless ``bfn`` is a b-function."""
    if not isinstance(bfn, BFunction):
        raise PatchError(
            f"bfn={bfn!r} is not a b-function; pass metabp.MetaNet, Derivative, Scaled or "
            "a metabp.stack of them"
        )
