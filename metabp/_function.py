"""metabp's custom autograd Functions: ``apply`` without a per-call signature bind where torch
allows it, and a guard for backwards that are not twice differentiable.

With ``setup_context`` defined, ``torch.autograd.Function.apply`` binds its arguments through
``inspect.signature`` on every call, only to fill in defaults: on a 2-core CPU a third or more
of a patched layer's host time (the host ms of ``benchmarks/backward_overhead.py``).
:class:`FastFunction` computes each ``forward``'s signature once and,
outside function transforms, skips the bind through two torch internals. Both are checked once
at import with a probe Function whose gradient must come out right; where either is missing or
the probe fails, ``FAST_APPLY`` is False and every call takes the public ``Function.apply``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from metabp.exceptions import PatchError

try:
    from torch._C import _are_functorch_transforms_active as _transforms_active
    from torch._functorch.utils import unwrap_dead_wrappers as _unwrap
except ImportError:  # another torch: the public path below
    _transforms_active = _unwrap = None


class FastFunction(torch.autograd.Function):
    """``torch.autograd.Function`` whose ``apply`` skips the signature bind when it safely can.

    Subclasses' ``forward`` take no defaults and are called positionally, so outside function
    transforms this does what ``Function.apply`` does after the bind; under ``vmap``/``grad``,
    or where :data:`FAST_APPLY` is False, ``Function.apply`` runs.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("forward")
        if isinstance(fn, staticmethod):  # the public path binds against this, once computed
            fn.__func__.__signature__ = inspect.signature(fn.__func__)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        if not FAST_APPLY or _transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*_unwrap(args))


class _Probe(FastFunction):
    @staticmethod
    def forward(x: Tensor, c: float) -> Tensor:
        return x * c

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.c = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * (ctx.c + 1), None  # not the true derivative: proves this backward ran


def _fast_apply_works() -> bool:
    """Whether the internals exist and the fast path runs forward, setup_context and backward."""
    global FAST_APPLY
    if _transforms_active is None or _unwrap is None:
        return False
    FAST_APPLY = True
    try:
        x = torch.ones(2, requires_grad=True)
        _Probe.apply(x, 2.0).sum().backward()
        return bool(torch.equal(x.grad, torch.full((2,), 3.0)))
    except Exception:  # noqa: BLE001 - any failure of the internals means: use the public path
        return False


FAST_APPLY: bool = False
FAST_APPLY = _fast_apply_works()


class _NotTwice(torch.autograd.Function):
    """Identity on a gradient; differentiating it raises :class:`PatchError`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_in: Tensor, anchor: Tensor, who: str) -> Tensor:
        return grad_in.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.who = inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        raise PatchError(
            f"the patched backward of {ctx.who} is not twice differentiable: its gradient was "
            "computed with create_graph=True and is now differentiated again, which would drop "
            "the terms through g (patch Derivative(...) for exact second derivatives, or "
            "differentiate g_omega yourself)"
        )


def once_differentiable(grad_in: Tensor, who: str) -> Tensor:
    """``grad_in`` unchanged, except that when the backward runs under ``create_graph=True``
    differentiating the result again raises :class:`PatchError` instead of silently missing the
    terms through g (a leaf anchors it, so it raises even when ``grad_in`` needs no gradient)."""
    if not torch.is_grad_enabled():
        return grad_in
    return _NotTwice.apply(grad_in, torch.zeros((), requires_grad=True), who)
