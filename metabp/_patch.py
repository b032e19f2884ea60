r"""Patching activation modules so their backward multiplies by ``g(z)`` instead of ``sigma'(z)``.

Forward is unchanged: ``y = sigma(z)``. Backward returns ``grad_z = grad_y * g(z)``, so for the
layer below, :math:`\delta^l = ((W^{l+1})^T \delta^{l+1}) \odot g(z^l)` (paper eq. 1 with
``sigma'`` swapped for ``g``).

A patch sets an instance ``forward`` on the module (and two attributes); it adds no parameters
or buffers, so a patched model's ``state_dict`` is the unpatched one's.
"""

from __future__ import annotations

import types
from typing import Any

from torch import Tensor, nn

from metabp._activations import Activation, activation_of, get_activation
from metabp._bfunctions import BFunction, Scaled, check_bfn  # noqa: F401 - Scaled: the doctest's
from metabp._function import FastFunction, once_differentiable
from metabp._select import Selector, select
from metabp._sites import PerSite, as_per_site
from metabp._table import TableArgs, grid_index, read
from metabp.exceptions import PatchError


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
        bfn = ctx.bfn
        grad_z = bfn.vjp(grad, z if ctx.needs_z else y, y, ctx.activation)
        if not bfn.twice_differentiable:
            grad_z = once_differentiable(grad_z, type(bfn).__name__)
        return grad_z, None, None


class ReplaceDerivativeByTable(FastFunction):
    """``y = sigma(z)`` and ``k(z)``, the index of ``z`` in g's table, forward; ``grad_z = grad_y *
    values[k(z) + offset]`` backward (``bfn.tabulated``; ``table`` is ``bfn.table_args(z)``).

    The index is computed while ``z`` is still in cache from the layer that made it, and kept in
    place of ``z`` (int16 for tables of up to 32768 points: half the memory of ``z``); backward
    is one gather and one multiply, in the dtype of the table (``z``'s). The index is a second,
    non-differentiable output, the torch.func way of keeping an intermediate. The table, its
    scale and shift are tensor inputs (fields of ``table``), so under ``torch.compile`` a new
    omega is new data for the same graph. Not twice differentiable: a second backward raises
    PatchError.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, table: TableArgs, activation: Activation) -> tuple[Tensor, Tensor]:
        return activation.forward(z), grid_index(z, table.scale, table.shift, table.last, table.index_dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        index, table = output[1], inputs[1]
        ctx.mark_non_differentiable(index)
        ctx.set_materialize_grads(False)  # no zeros made for the index's (absent) gradient
        ctx.save_for_backward(index, table.values, table.offset)  # the table of this forward

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple:
        if grad is None:
            return None, None, None
        index, values, offset = ctx.saved_tensors
        return once_differentiable(read(values, index, offset).mul_(grad), "a MetaNet table"), None, None


def _apply(z: Tensor, bfn: BFunction, activation: Activation) -> Tensor:
    if bfn.tabulated:
        return ReplaceDerivativeByTable.apply(z, bfn.table_args(z), activation)[0]
    return ReplaceDerivative.apply(z, bfn, activation)


def replace_derivative(z: Tensor, bfn: BFunction, activation: Activation | str) -> Tensor:
    """Functional form: ``sigma(z)`` whose backward uses ``bfn`` in place of ``sigma'``."""
    check_bfn(bfn)
    return _apply(z, bfn, get_activation(activation))


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


def patch(model: nn.Module, bfn: BFunction | PerSite | dict[str, BFunction],
          where: Selector = "*") -> list[str]:
    """Make the selected activations of ``model`` backprop ``bfn`` in place of ``sigma'``.

    Args:
        model: any ``nn.Module``; its activation modules (ReLU, LeakyReLU, ELU, GELU, SiLU,
            Softplus, Sigmoid, Tanh) can be patched.
        bfn: the b-function (``MetaNet``, ``Derivative``, ``Scaled``, or a ``stack`` of them), or
            a :class:`~metabp.PerSite` (or dict) ``{site: g}``: each site its own b-function;
            ``where`` then stays ``"*"`` (the sites select).
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
    bfn = as_per_site(bfn)
    if isinstance(bfn, PerSite):
        if not (isinstance(where, str) and where == "*"):
            raise PatchError(f"patch(where={where!r}) with a PerSite: its sites {list(bfn)} select the "
                             "activations; leave where at its default")
        chosen = bfn.resolve(model)
    else:
        check_bfn(bfn)
        chosen = dict.fromkeys(_selected(model, where), bfn)
    for g in {id(g): g for g in chosen.values()}.values():  # each b-function's tables once
        _prepare(model, g)
    modules = dict(model.named_modules())
    for name, g in chosen.items():
        module = modules[name]
        module._metabp_bfn = g
        module._metabp_activation = activation_of(module)
        module.forward = types.MethodType(_patched_forward, module)
    return list(chosen)


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


__all__ = ["patch", "unpatch", "patched", "activations", "replace_derivative", "ReplaceDerivative",
           "ReplaceDerivativeByTable"]
