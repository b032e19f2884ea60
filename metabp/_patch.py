r"""Patching activation modules so their backward multiplies by ``g(z)`` instead of ``sigma'(z)``.

Forward is unchanged: ``y = sigma(z)``. Backward returns ``grad_z = grad_y * g(z)``, so for the
layer below, :math:`\delta^l = ((W^{l+1})^T \delta^{l+1}) \odot g(z^l)` (paper eq. 1 with
``sigma'`` swapped for ``g``).

A patch sets an instance ``forward`` on the module (and two attributes); it adds no parameters
or buffers, so a patched model's ``state_dict`` is the unpatched one's.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metabp._activations import Activation, activation_of, get_activation
from metabp._bfunctions import BFunction, Derivative, MetaNet, Scaled
from metabp._function import FastFunction
from metabp._select import Selector, select
from metabp._table import Table, index_dtype
from metabp.exceptions import ConfigError, PatchError


class ReplaceDerivative(FastFunction):
    """``y = sigma(z)`` forward; ``grad_z = g.vjp(grad_y, z, y)`` backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, bfn: BFunction, activation: Activation) -> Tensor:
        return activation.forward(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        z, bfn, activation = inputs
        ctx.needs_z = bfn.needs_input(activation)
        # y is held by the next layer anyway; z costs memory, so it is kept only when read
        ctx.save_for_backward(z if ctx.needs_z else None, output)
        ctx.bfn = bfn
        ctx.activation = activation

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        z, y = ctx.saved_tensors
        return ctx.bfn.vjp(grad, z if ctx.needs_z else y, y, ctx.activation), None, None


class ReplaceDerivativeByTable(FastFunction):
    """``y = sigma(z)`` and ``k(z)``, the index of ``z`` in g's table, forward; ``grad_z = grad_y *
    table[k(z)]`` backward (``bfn.tabulated``).

    The index is computed while ``z`` is still in cache from the layer that made it, and kept in
    place of ``z`` (int16 for tables of up to 32768 points: half the memory of ``z``); backward
    is one gather and one multiply. The index is a second, non-differentiable output, the
    torch.func way of keeping an intermediate.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, bfn: BFunction, activation: Activation) -> tuple[Tensor, Tensor]:
        return activation.forward(z), bfn.table_index(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        z, bfn, _ = inputs
        index = output[1]
        ctx.mark_non_differentiable(index)
        ctx.save_for_backward(index)
        ctx.read = bfn.table_reader(z)  # reads the table of this forward, whatever omega is later

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return ctx.read(index).mul_(grad), None, None


def _apply(z: Tensor, bfn: BFunction, activation: Activation) -> Tensor:
    if bfn.tabulated:
        return ReplaceDerivativeByTable.apply(z, bfn, activation)[0]
    return ReplaceDerivative.apply(z, bfn, activation)


def replace_derivative(z: Tensor, bfn: BFunction, activation: Activation | str) -> Tensor:
    """Functional form: ``sigma(z)`` whose backward uses ``bfn`` in place of ``sigma'``."""
    return _apply(z, bfn, get_activation(activation))


# ------------------------------------------------------------------- stacked b-functions
class Stacked(BFunction):
    """``K`` b-functions for ``K`` copies of a model batched along dim 0 (``z`` is ``K x ...``).

    Copy ``k`` of the batch backprops through ``bfns[k]``: exactly what ``bfns[k]`` alone gives
    to the unbatched copy, elementwise. MetaNets share one gather over their stacked tables.

    Example:
        >>> g = stack([Scaled(1.0), Scaled(0.5)])
        >>> g(torch.ones(2, 3), "relu")[:, 0]
        tensor([1.0000, 0.5000])
    """

    kind = "stacked"

    def __init__(self, bfns: Sequence[BFunction]) -> None:
        bfns = list(bfns)
        if not bfns:
            raise ConfigError("stack(bfns=[]): needs at least one b-function")
        if any(isinstance(b, Stacked) for b in bfns):
            raise ConfigError("stack(): b-functions inside a stack cannot be stacks themselves")
        self.bfns = bfns
        self.meta = {}
        self._cache: dict[tuple, tuple] = {}

    def __len__(self) -> int:
        return len(self.bfns)

    def __call__(self, z: Tensor, activation: Any = None) -> Tensor:
        self._check(z)
        return torch.stack([b(z[k], activation) for k, b in enumerate(self.bfns)])

    def _check(self, z: Tensor) -> None:
        if z.dim() == 0 or z.shape[0] != len(self.bfns):
            raise PatchError(
                f"a stack of {len(self.bfns)} b-functions needs inputs with {len(self.bfns)} "
                f"copies on dim 0, got shape {tuple(z.shape)}"
            )

    def _tables(self, device: torch.device, dtype: torch.dtype, ndim: int) -> tuple:
        """Concatenated MetaNet tables, and per-copy scale, shift, last index and offset shaped
        ``K x 1 x ... x 1`` to broadcast over ``z``; rebuilt when any member's omega changes."""
        key = (device, dtype, ndim, tuple(id(b.table) for b in self.bfns))
        if key not in self._cache:
            tables: list[Table] = [b.table_for(device, dtype) for b in self.bfns]
            view = (len(tables),) + (1,) * (ndim - 1)

            def column(values: list[float], dt: torch.dtype = dtype) -> Tensor:
                return torch.tensor(values, dtype=dt, device=device).view(view)

            n = [t.n for t in tables]
            self._cache = {key: (
                column([1 / t.step for t in tables]),
                column([0.5 - t.lo / t.step for t in tables]),
                column([k - 1 for k in n]),
                column([sum(n[:k]) for k in range(len(n))], torch.int32),
                torch.cat([t.values for t in tables]),
            )}
        return self._cache[key]

    @property
    def tabulated(self) -> bool:
        return all(b.tabulated for b in self.bfns)

    def table_index(self, z: Tensor) -> Tensor:
        """Per copy ``Table.index`` (same float ops, so the same indices); the shape of ``z``."""
        self._check(z)
        scale, shift, last, _, _ = self._tables(z.device, z.dtype, z.dim())
        t = torch.minimum(z.mul(scale).add_(shift).clamp_min_(0), last)
        return t.to(index_dtype(max(b.table_size for b in self.bfns))).clamp_min_(0)

    def table_reader(self, z: Tensor) -> Callable[[Tensor], Tensor]:
        _, _, _, offsets, values = self._tables(z.device, z.dtype, z.dim())

        def read(index: Tensor) -> Tensor:  # per-copy index -> offset into the concatenated tables
            flat = index.to(torch.int32).add_(offsets)
            return values.index_select(0, flat.view(-1)).view(index.shape)

        return read

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        self._check(z)
        if self.tabulated:
            return self.table_reader(z)(self.table_index(z)).mul_(grad)
        if all(isinstance(b, Scaled) for b in self.bfns):
            c = torch.tensor([b.c for b in self.bfns], dtype=grad.dtype, device=grad.device)
            return activation.backward(grad, z, y).mul_(c.view((-1,) + (1,) * (z.dim() - 1)))
        return torch.stack([b.vjp(grad[k], z[k], y[k], activation)
                            for k, b in enumerate(self.bfns)])

    def state(self):
        raise ConfigError("a stack is not saved whole; save each of stack.bfns on its own")

    @classmethod
    def from_state(cls, tensors, config):
        raise ConfigError("a stack is not saved whole; load each b-function on its own")

    def __repr__(self) -> str:
        return f"stack({self.bfns!r})"


def stack(bfns: Iterable[BFunction]) -> Stacked:
    """``K`` b-functions for a model batched along dim 0 into ``K`` independent copies."""
    return Stacked(list(bfns))


# ------------------------------------------------------------------- patching modules
def activations(model: nn.Module) -> dict[str, nn.Module]:
    """The patchable activation modules of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if activation_of(m) is not None}


def _select(model: nn.Module, where: Selector) -> dict[str, nn.Module]:
    found = activations(model)
    if not found:
        raise PatchError(
            f"{type(model).__name__} has no activation modules to patch (nn.ReLU, nn.Tanh, ...); "
            "functional calls such as F.relu cannot be patched: use the module form"
        )
    return select(found, where, noun="activation", plural="activations")


def _patched_forward(self: nn.Module, z: Tensor) -> Tensor:
    return _apply(z, self._metabp_bfn, self._metabp_activation)


def patch(model: nn.Module, bfn: BFunction, where: Selector = "*") -> list[str]:
    """Make the selected activations of ``model`` backprop ``bfn`` in place of ``sigma'``.

    Args:
        model: any ``nn.Module``; its activation modules (ReLU, LeakyReLU, ELU, GELU, SiLU,
            Softplus, Sigmoid, Tanh) can be patched.
        bfn: the b-function (``MetaNet``, ``Derivative``, ``Scaled``, or a ``stack`` of them).
        where: a module name, a glob (``"act*"``, ``"features.*"``), an index among the
            activations (``-1`` is the last), or a list of these. Default: every activation.

    Returns:
        The names of the patched modules.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> patch(net, Scaled(0.5), where=0)
        ['1']
    """
    if not isinstance(bfn, BFunction):
        raise PatchError(
            f"bfn={bfn!r} is not a b-function; pass metabp.MetaNet, Derivative, Scaled or "
            "a metabp.stack of them"
        )
    selected = _select(model, where)
    for module in selected.values():
        module._metabp_bfn = bfn
        module._metabp_activation = activation_of(module)
        module.forward = types.MethodType(_patched_forward, module)
    return list(selected)


def unpatch(model: nn.Module, where: Selector = "*") -> list[str]:
    """Return the selected activations (default: all) to plain autograd; returns their names."""
    done = []
    for name, module in _select(model, where).items():
        if "_metabp_bfn" in module.__dict__:
            for attr in ("forward", "_metabp_bfn", "_metabp_activation"):
                module.__dict__.pop(attr, None)
            done.append(name)
    return done


def patched(model: nn.Module) -> dict[str, BFunction]:
    """The patched activations of ``model`` and the b-function each backprops."""
    return {n: m._metabp_bfn for n, m in activations(model).items() if "_metabp_bfn" in m.__dict__}


__all__ = ["patch", "unpatch", "patched", "activations", "stack", "Stacked",
           "replace_derivative", "ReplaceDerivative", "Derivative", "Scaled", "MetaNet"]
