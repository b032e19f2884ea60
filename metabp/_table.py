"""A b-function tabulated on a fine uniform grid and read back by nearest grid point.

Evaluating a meta-network ``g_omega`` on every element of every backward pass costs one
``phi`` pass per hidden unit. Instead ``g`` is sampled once per omega on ``n`` points
``x_k = lo + k h`` of ``[lo, hi]``, ``h = (hi - lo) / (n - 1)``, and backward reads

.. math:: g(z) \\approx g(x_{k(z)}), \\qquad
          k(z) = \\lfloor \\mathrm{clamp}(z / h + (1/2 - lo / h),\\ 0,\\ n - 1) \\rfloor

(:func:`grid_index`: mul, add, two clamps, a cast and a clamp; then one gather). On CPU the
gather costs about four elementwise passes, so one gather of a fine table beats linear
interpolation (two gathers). Under ``torch.compile`` inductor fuses the passes into one loop.

The scale ``1/h`` and shift ``1/2 - lo/h`` enter as 0-d tensors, not Python numbers, so a
compiled graph takes them as inputs: a new table of the same size is new data, not a new graph.
The index is computed in float32 (float64 for float64 inputs) whatever the input's dtype: in
bfloat16 ``z / h`` rounds by up to 64 cells, and the last cell ``n - 1 = 16383`` rounds to 16384.

Error: on ``[lo, hi]``, ``|g(x_k) - g(z)| <= h / 2 * sup|g'|``; outside it the end values are
held (``g(lo)`` below, ``g(hi)`` above). MetaNet uses ``n = 16384``: 64 KiB, which leaves most of
L2 to the layers around it (65536 points measured no faster and evict more).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from metabp.exceptions import PatchError

_INDEX_FLOATS = (torch.float32, torch.float64)


def index_dtype(size: int) -> torch.dtype:
    """The integer type of an index into a table of ``size`` points: int16 when it fits (half the
    memory of int32 while the index waits for backward), else int32."""
    return torch.int16 if size <= 2**15 else torch.int32


def index_float(dtype: torch.dtype) -> torch.dtype:
    """The float type the index of an input of ``dtype`` is computed in: float64 for float64,
    else float32 (half types would round the index by many cells)."""
    return dtype if dtype in _INDEX_FLOATS else torch.float32


def device_key(device: torch.device | str) -> torch.device:
    """``device`` as tensors report it: ``"cuda"`` is the current CUDA device (``cuda:0``), so a
    table made for ``"cuda"`` is found again for a tensor on ``cuda:0``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class TableArgs(NamedTuple):
    """A tabulated b-function's table for inputs ``z`` of one device and dtype:
    ``lookup(z, args)`` is ``g(z)``. Tensors are replaced, never changed in place, when g changes."""

    values: Tensor  #: ``(n,)`` in z's dtype; a stack's ``K`` tables end to end, ``(K n,)``
    scale: Tensor  #: ``1/h``: 0-d, or ``K x 1 x ...`` (one per copy); in ``index_float(z.dtype)``
    shift: Tensor  #: ``1/2 - lo/h``, shaped like ``scale``
    offset: Tensor | None  #: int32 start of each copy's table, ``K x 1 x ...``; None for one table
    last: int  #: ``n - 1``, the last cell of every table
    index_dtype: torch.dtype  #: integer type of the saved index (:func:`index_dtype`)


def grid_index(z: Tensor, scale: Tensor | float, shift: Tensor | float, last: int,
               dtype: torch.dtype) -> Tensor:
    """``floor(clamp(z * scale + shift, 0, last))`` as integers of ``dtype``, the shape of ``z``.

    ``scale`` and ``shift`` are numbers or tensors that broadcast against ``z`` (one value per
    copy for stacked tables). The index is computed in float32 for half-precision ``z``. Floats
    are clamped before the cast (``+-inf`` and huge ``z`` go to the ends); NaN passes the clamps
    and casts to an integer (0, or the most negative one, by platform) that the final clamp at 0
    catches, so no input makes an out-of-range index (a NaN reaches the loss through the forward
    pass anyway). The final clamp runs on the integers, half the bytes of a float pass.
    clamp_min_/clamp_max_ (unlike clamp_) have vmap batching rules; .short() and .int() parse
    faster than .to(dtype).
    """
    if z.dtype not in _INDEX_FLOATS:
        z = z.float()
    t = z.mul(scale).add_(shift).clamp_min_(0).clamp_max_(last)
    t = t.short() if dtype == torch.int16 else t.int() if dtype == torch.int32 else t.to(dtype)
    return t.clamp_min_(0)  # before it t >= 0 except NaN, so truncation is floor


@dataclass(frozen=True)
class Table:
    """``g`` sampled at ``n`` evenly spaced points of ``[lo, hi]`` (``values``, shape ``(n,)``).

    Example:
        >>> t = Table.build(torch.sin, -4.0, 4.0)
        >>> z = torch.linspace(-4, 4, 101)
        >>> bool((t.lookup(z) - torch.sin(z)).abs().max() <= t.step / 2)
        True
    """

    lo: float
    hi: float
    values: Tensor

    @staticmethod
    def build(fn: Callable[[Tensor], Tensor], lo: float, hi: float, n: int = 16384,
              *, dtype: torch.dtype = torch.float32) -> Table:
        # sample in float64; the only rounding left is the final cast to dtype
        x = torch.linspace(lo, hi, n, dtype=torch.float64)
        return Table(float(lo), float(hi), fn(x).to(torch.float64).to(dtype))

    @property
    def n(self) -> int:
        return self.values.numel()

    @property
    def step(self) -> float:
        return (self.hi - self.lo) / (self.n - 1)

    @property
    def scale(self) -> float:
        """``1 / h``: grid steps per unit of ``z``."""
        return 1.0 / self.step

    @property
    def shift(self) -> float:
        """``1/2 - lo / h``: with :attr:`scale`, ``k(z) = floor(z * scale + shift)``."""
        return 0.5 - self.lo * self.scale

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Table:
        return Table(self.lo, self.hi, self.values.to(device, dtype or self.values.dtype))

    def index(self, z: Tensor) -> Tensor:
        """``k(z)``, the nearest grid point's index, the shape of ``z`` (int16 for up to 32768 points)."""
        return grid_index(z, self.scale, self.shift, self.n - 1, index_dtype(self.n))

    def read(self, index: Tensor) -> Tensor:
        """``g`` at the grid points ``index`` (from :meth:`index`); the shape of ``index``."""
        _check_device(self.values, index)
        return read(self.values, index)

    def lookup(self, z: Tensor) -> Tensor:
        """``g(z)`` from the table; any shape in, same shape out, on the table's device."""
        _check_device(self.values, z)
        return read(self.values, self.index(z))


def _check_device(values: Tensor, z: Tensor) -> None:
    if values.device != z.device:
        raise PatchError(f"the table is on {values.device} but the input is on {z.device}; "
                         f"move the table first (table.to({str(z.device)!r}))")


def read(values: Tensor, index: Tensor, offset: Tensor | None = None) -> Tensor:
    """``values[index + offset]``, the shape of ``index`` (``offset`` broadcasts: per-copy starts
    of tables laid end to end)."""
    flat = index.int()  # index_select takes int32 or int64
    if offset is not None:
        flat = flat.add_(offset)
    return values.index_select(0, flat.reshape(-1)).view_as(index)


def lookup(z: Tensor, args: TableArgs) -> Tensor:
    """``g(z)`` from the :class:`TableArgs` of a tabulated b-function, the shape of ``z``, in the
    table's dtype; :class:`~metabp.exceptions.PatchError` if the table is on another device."""
    _check_device(args.values, z)
    return read(args.values, grid_index(z, args.scale, args.shift, args.last, args.index_dtype),
                args.offset)
