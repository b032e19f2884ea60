r"""Patching activation modules so their backward multiplies by ``g(z)`` instead of ``sigma'(z)``.

Forward is unchanged: ``y = sigma(z)``. Backward returns ``grad_z = grad_y * g(z)``, so for the
layer below, :math:`\delta^l = ((W^{l+1})^T \delta^{l+1}) \odot g(z^l)` (paper eq. 1 with
``sigma'`` swapped for ``g``).

A patch sets an instance ``forward`` on the module (and two attributes); it adds no parameters
or buffers, so a patched model's ``state_dict`` is the unpatched one's.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metabp._activations import Activation, activation_of, get_activation
from metabp._bfunctions import BFunction, Derivative, MetaNet, Scaled
from metabp._function import FastFunction
from metabp._select import Selector, select
from metabp._table import grid_index, index_dtype, lookup, read
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
    values[k(z) + offset]`` backward (``bfn.tabulated``; the arguments are ``bfn.table_args(z)``).

    The index is computed while ``z`` is still in cache from the layer that made it, and kept in
    place of ``z`` (int16 for tables of up to 32768 points: half the memory of ``z``); backward
    is one gather and one multiply. The index is a second, non-differentiable output, the
    torch.func way of keeping an intermediate. The table, its scale and shift are tensor
    inputs, so under ``torch.compile`` a new omega is new data for the same graph.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, values: Tensor, scale: Tensor, shift: Tensor, offset: Tensor | None,
                last: int, dtype: torch.dtype, activation: Activation) -> tuple[Tensor, Tensor]:
        return activation.forward(z), grid_index(z, scale, shift, last, dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        index = output[1]
        ctx.mark_non_differentiable(index)
        ctx.set_materialize_grads(False)  # no zeros made for the index's (absent) gradient
        ctx.save_for_backward(index, inputs[1], inputs[4])  # the table of this forward

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple:
        index, values, offset = ctx.saved_tensors
        grad_z = None if grad is None else read(values, index, offset).mul_(grad)
        return grad_z, None, None, None, None, None, None, None


def _apply(z: Tensor, bfn: BFunction, activation: Activation) -> Tensor:
    if bfn.tabulated:
        return ReplaceDerivativeByTable.apply(z, *bfn.table_args(z), activation)[0]
    return ReplaceDerivative.apply(z, bfn, activation)


def replace_derivative(z: Tensor, bfn: BFunction, activation: Activation | str) -> Tensor:
    """Functional form: ``sigma(z)`` whose backward uses ``bfn`` in place of ``sigma'``."""
    _check_bfn(bfn)
    return _apply(z, bfn, get_activation(activation))


def _check_bfn(bfn: Any) -> None:
    if not isinstance(bfn, BFunction):
        raise PatchError(
            f"bfn={bfn!r} is not a b-function; pass metabp.MetaNet, Derivative, Scaled or "
            "a metabp.stack of them"
        )


# ------------------------------------------------------------------- stacked b-functions
class Stacked(BFunction):
    """``K`` b-functions for ``K`` copies of a model batched along dim 0 (``z`` is ``K x ...``).

    Copy ``k`` of the batch backprops through ``bfns[k]``: exactly what ``bfns[k]`` alone gives
    to the unbatched copy, elementwise. MetaNets share one gather over their tables laid end to
    end, rebuilt (as new tensors) whenever a member's omega is assigned.

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
        for b in bfns:
            _check_bfn(b)
            if isinstance(b, Stacked):
                raise ConfigError("stack(): b-functions inside a stack cannot be stacks themselves")
        self.bfns = bfns
        self.meta = {}
        self.tabulated = all(b.tabulated for b in bfns)
        self._args: dict[tuple, tuple] = {}
        if self.tabulated:
            for b in bfns:
                b._stacks.add(self)
            self.prepare("cpu")

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickled or copied members
        self.__dict__.update(state)
        if self.tabulated:
            for b in self.bfns:
                b._stacks.add(self)

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

    def _make_args(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """The members' tables end to end; per-copy scale, shift, start offset and last index."""
        parts = [b.tensors_for(device, dtype) for b in self.bfns]
        sizes = [b.table_size for b in self.bfns]
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        last = sizes[0] - 1 if len(set(sizes)) == 1 else torch.tensor(sizes, device=device) - 1
        return (torch.cat([p[0] for p in parts]), torch.stack([p[1] for p in parts]),
                torch.stack([p[2] for p in parts]),
                torch.tensor(starts, dtype=torch.int32, device=device), last,
                index_dtype(max(sizes)))

    def _refresh(self) -> None:
        """Rebuild the concatenated tables (a member's omega was assigned)."""
        self._args = {key: self._make_args(*key) for key in self._args}

    def prepare(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        """Make the concatenated tables for ``device`` and ``dtype`` now (see
        :meth:`MetaNet.prepare`); a no-op unless every member is tabulated."""
        key = (torch.device(device), dtype)
        if self.tabulated and key not in self._args:
            self._args[key] = self._make_args(*key)

    def table_args(self, z: Tensor) -> tuple:
        self._check(z)
        self.prepare(z.device, z.dtype)
        values, scale, shift, offset, last, dtype = self._args[(z.device, z.dtype)]
        view = (-1,) + (1,) * (z.dim() - 1)  # one value per copy, broadcast over the rest
        if torch.is_tensor(last):
            last = last.view(view)
        return values, scale.view(view), shift.view(view), offset.view(view), last, dtype

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        self._check(z)
        if self.tabulated:
            return lookup(z, *self.table_args(z)).mul_(grad)
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
    try:
        if isinstance(bfns, (BFunction, torch.Tensor, str)):
            raise TypeError
        bfns = list(bfns)
    except TypeError:
        raise ConfigError(f"stack(bfns={bfns!r}): pass a list of b-functions") from None
    return Stacked(bfns)


# ------------------------------------------------------------------- patching modules
def activations(model: nn.Module, where: Selector | None = None) -> dict[str, nn.Module]:
    """The patchable activation modules of ``model`` by qualified name, in module order.

    With ``where`` (as for :func:`patch`), only those it selects, with the same errors as
    ``patch``: what ``patch(model, g, where)`` would patch, without patching anything.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.Tanh())
        >>> list(activations(net, where=-1))
        ['3']
    """
    _check_model(model)
    found = {name: m for name, m in model.named_modules() if activation_of(m) is not None}
    return found if where is None else _select(found, model, where)


def _selected(model: nn.Module, where: Selector) -> dict[str, nn.Module]:
    """``activations(model, where)``, where None is refused as every other non-selector is."""
    return _select(activations(model), model, where)


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise PatchError(f"model={model!r} is not a torch.nn.Module; pass the network to patch")


def _select(found: dict[str, nn.Module], model: nn.Module, where: Selector) -> dict[str, nn.Module]:
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
    _check_model(model)
    _check_bfn(bfn)
    selected = _selected(model, where)
    _prepare(model, bfn)
    for module in selected.values():
        module._metabp_bfn = bfn
        module._metabp_activation = activation_of(module)
        module.forward = types.MethodType(_patched_forward, module)
    return list(selected)


def _prepare(model: nn.Module, bfn: BFunction) -> None:
    """Make a tabulated b-function's table tensors for the model's devices and dtypes now, so
    that a compiled first step does not (a model moved later gets them at its next step)."""
    if bfn.tabulated:
        for p in model.parameters():
            if p.is_floating_point():
                bfn.prepare(p.device, p.dtype)


def unpatch(model: nn.Module, where: Selector = "*") -> list[str]:
    """Return the selected activations (default: all) to plain autograd; returns their names."""
    done = []
    for name, module in _selected(model, where).items():
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
