"""``K`` b-functions for ``K`` copies of a model batched along dim 0, as ``train_many`` runs them.

Copy ``k`` backprops ``delta_k = (W_k^T delta_k') * g_k(z_k)``. MetaNets share one gather over
their tables laid end to end. The stack holds no reference in its members: it reads each
member's ``version`` (incremented when its omega is assigned) and rebuilds the concatenated
tables when one changed. Under ``torch.compile`` the concatenation is part of the graph instead,
with the members' own tables as its inputs, so a new omega is new data for the same graph
(a cached concatenation would be read where the graph first found it, stale).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from metabp._activations import Activation
from metabp._bfunctions import BFunction, Scaled, check_bfn
from metabp._table import TableArgs, device_key, index_dtype, lookup
from metabp.exceptions import ConfigError, PatchError


class Stacked(BFunction):
    """``K`` b-functions for ``K`` copies of a model batched along dim 0 (``z`` is ``K x ...``).

    Copy ``k`` of the batch backprops through ``bfns[k]``: exactly what ``bfns[k]`` alone gives
    to the unbatched copy, elementwise.

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
            check_bfn(b)
            if isinstance(b, Stacked):
                raise ConfigError("stack(): b-functions inside a stack cannot be stacks themselves")
        self.bfns = bfns
        self.meta = {}
        self.tabulated = all(b.tabulated for b in bfns)
        self.twice_differentiable = all(b.twice_differentiable for b in bfns)
        self._cache: dict[tuple, dict[int, TableArgs]] = {}  # (device, dtype) -> ndim -> tables of _versions
        self._versions: list[int] = []
        if self.tabulated:
            self.prepare("cpu")

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

    def _concat(self, device: torch.device, dtype: torch.dtype) -> TableArgs:
        """The members' tables end to end, each padded with its end value to the longest (so one
        ``last`` serves all); per-copy scale, shift and start offset, shape ``(K,)``."""
        parts = [b.tensors_for(device, dtype) for b in self.bfns]
        n = max(p.last for p in parts) + 1
        values = torch.cat([p.values if p.last + 1 == n else
                            torch.cat([p.values, p.values[-1:].expand(n - p.last - 1)]) for p in parts])
        starts = torch.arange(0, n * len(parts), n, dtype=torch.int32, device=device)
        return TableArgs(values, torch.stack([p.scale for p in parts]),
                         torch.stack([p.shift for p in parts]), starts, n - 1, index_dtype(n))

    def _tables(self, device: torch.device | str, dtype: torch.dtype, ndim: int = 1) -> TableArgs:
        """The concatenated tables with scale, shift and offset shaped ``K x 1 x ...`` for
        ``ndim``-dim inputs: made once per device, dtype and ``ndim`` until a member changes."""
        if torch.compiler.is_compiling():
            return _per_copy(self._concat(device, dtype), ndim)
        versions = [b.version for b in self.bfns]
        if versions != self._versions:  # new tensors: a pending backward keeps the old ones
            self._cache, self._versions = {}, versions
        key = (device_key(device), dtype)
        shaped = self._cache.get(key)
        if shaped is None:
            shaped = self._cache[key] = {1: self._concat(*key)}
        if ndim not in shaped:
            shaped[ndim] = _per_copy(shaped[1], ndim)
        return shaped[ndim]

    def prepare(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        """Make the members' tables for ``device`` and ``dtype`` now (see ``MetaNet.prepare``);
        a no-op unless every member is tabulated."""
        if self.tabulated:
            self._tables(device, dtype)

    def table_args(self, z: Tensor) -> TableArgs:
        self._check(z)
        return self._tables(z.device, z.dtype, z.dim())

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        self._check(z)
        if self.tabulated:
            return lookup(z, self.table_args(z)).mul_(grad)
        if all(isinstance(b, Scaled) for b in self.bfns):
            c = torch.tensor([b.c for b in self.bfns], dtype=grad.dtype, device=grad.device)
            return activation.backward(grad, z, y).mul_(c.view((-1,) + (1,) * (z.dim() - 1)))
        return torch.stack([b.vjp(grad[k], z[k], y[k], activation)
                            for k, b in enumerate(self.bfns)])

    def needs_input(self, activation: Activation) -> bool:
        return any(b.needs_input(activation) for b in self.bfns)

    def state(self):
        raise ConfigError("a stack is not saved whole; save each of stack.bfns on its own")

    @classmethod
    def from_state(cls, tensors, config):
        raise ConfigError("a stack is not saved whole; load each b-function on its own")

    def __repr__(self) -> str:
        return f"stack({self.bfns!r})"


def _per_copy(args: TableArgs, ndim: int) -> TableArgs:
    """``args`` with its ``(K,)`` scale, shift and offset viewed ``K x 1 x ...`` (``ndim`` dims):
    one value per copy, broadcast over the rest of an input."""
    view = (-1,) + (1,) * (ndim - 1)
    return args._replace(scale=args.scale.view(view), shift=args.shift.view(view),
                         offset=args.offset.view(view))


def stack(bfns: Iterable[BFunction]) -> Stacked:
    """``K`` b-functions for a model batched along dim 0 into ``K`` independent copies."""
    try:
        if isinstance(bfns, (BFunction, torch.Tensor, str)):
            raise TypeError
        bfns = list(bfns)
    except TypeError:
        raise ConfigError(f"stack(bfns={bfns!r}): pass a list of b-functions") from None
    return Stacked(bfns)
