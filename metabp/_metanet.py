r"""The learned b-function: the paper's meta-network ``g_omega``, read back from a table.

Reference: Alber et al. 2018, *Backprop Evolution*, section 3.2.1.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor

from metabp._activations import Activation, get_activation
from metabp._bfunctions import ActivationLike, BFunction, _field
from metabp._table import Table, TableArgs, device_key, index_dtype, index_float, lookup
from metabp.exceptions import ConfigError


class MetaNet(BFunction):
    r"""A learned b-function, the paper's meta-network (section 3.2.1):

    .. math:: g_\omega(z) = \sum_{k=1}^{H} w_{2,k}\, \phi(w_{1,k} z + b_{1,k}) + b_2

    with ``H = hidden`` units and hidden activation ``phi``. Its weights are one flat vector
    ``omega = [w_1 (H), b_1 (H), w_2 (H), b_2]`` of ``num_params = 3H + 1`` values, the point
    a search proposes. The paper's network is ``hidden=1, act="tanh"``.

    The backward pass reads ``g`` from a :class:`~metabp._table.Table` of ``table_size`` cells,
    built when ``omega`` is assigned (the range choice runs then, outside any traced region);
    :meth:`table_error_bound` bounds its error on the table's range, outside which the end
    values are held. The table must be finite in float32. Each assignment of ``omega`` makes new
    table tensors and increments :attr:`version` (what a ``stack`` of this g checks). The patched
    backward is not twice differentiable: a second backward through it raises PatchError.

    Args:
        hidden: number of hidden units ``H``, 1 to 1024.
        act: hidden activation ``phi`` (any name ``metabp`` knows).
        omega: initial weights, ``num_params`` finite values; default a seeded uniform draw.
        seed: seed of that draw.
        table_size: cells of the lookup table, 16 to ``2**20``.

    Example:
        >>> g = MetaNet(hidden=1, act="tanh", omega=[1.0, 0.0, 2.0, 0.5])
        >>> g(torch.tensor([0.0]))
        tensor([0.5000])
        >>> g.num_params
        4
    """

    kind = "metanet"
    saturation: ClassVar[float] = 6.0  # |w1 z + b1| beyond which a hidden unit counts as flat
    # table half-width R, min and max. The table holds its end values beyond R: fine where phi
    # saturates; where it does not (relu, ...) g keeps changing, so R starts wider there.
    range_limits: ClassVar[tuple[float, float]] = (4.0, 64.0)
    range_min_unbounded: ClassVar[float] = 32.0
    max_hidden: ClassVar[int] = 1024
    table_sizes: ClassVar[tuple[int, int]] = (16, 2**20)

    def __init__(
        self,
        hidden: int = 1,
        act: str = "tanh",
        *,
        omega: Tensor | list[float] | None = None,
        seed: int = 0,
        table_size: int = 16384,
    ) -> None:
        _check_int("hidden", hidden, 1, self.max_hidden)
        _check_int("table_size", table_size, *self.table_sizes)
        self.hidden = hidden
        self.act = get_activation(act)
        self.table_size = int(table_size)
        self.meta = {}
        self._args: dict[tuple, TableArgs] = {}  # (device, dtype) -> the table there
        if omega is None:
            _check_int("seed", seed, -(2**63), 2**64 - 1)
            gen = torch.Generator().manual_seed(seed)
            omega = torch.rand(self.num_params, generator=gen, dtype=torch.float64) * 2 - 1
        self.omega = omega

    num_params = property(lambda self: 3 * self.hidden + 1, doc="``3 * hidden + 1``, omega's length")

    @property
    def omega(self) -> Tensor:
        """The flat weight vector ``[w1, b1, w2, b2]`` (float64, 1-D, ``num_params`` long)."""
        return self._omega.clone()

    @omega.setter
    def omega(self, value: Tensor | list[float]) -> None:
        omega = self._check_omega(value)
        lo, hi = self._range(omega)
        table = Table.build(lambda x: self._evaluate(omega, x), lo, hi, self.table_size)
        if not torch.isfinite(table.values).all():
            worst = float(table.values.double().abs().max())
            raise ConfigError(
                f"omega={omega.tolist()} makes g reach {worst:.3g} on [{lo:.3g}, {hi:.3g}], "
                "beyond float32 (3.4e38); the table must be finite: use smaller weights"
            )
        self._omega, self._table = omega, table
        # new tensors, never in place: a pending backward keeps the table of its forward
        keys = set(self._args) | {(torch.device("cpu"), torch.float32)}
        self._args = {key: self._make_args(*key) for key in keys}
        self.version += 1

    def _check_omega(self, value: Any) -> Tensor:
        try:
            omega = torch.as_tensor(value, dtype=torch.float64).detach().flatten().cpu()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"omega={value!r} is not a sequence of numbers ({exc})") from None
        if omega.numel() != self.num_params:
            raise ConfigError(
                f"omega has {omega.numel()} values but MetaNet(hidden={self.hidden}) needs "
                f"3*hidden+1 = {self.num_params}"
            )
        if not torch.isfinite(omega).all():
            raise ConfigError(f"omega must be finite, got {omega.tolist()}")
        return omega

    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(w1, b1, w2, b2)`` views of omega, shapes ``(H,), (H,), (H,), ()``."""
        return _split(self._omega, self.hidden)

    def __call__(self, z: Tensor, activation: ActivationLike | None = None) -> Tensor:
        """Exact ``g(z)``, evaluated unit by unit (memory ``O(z)``)."""
        return self._evaluate(self._omega, z)

    def _evaluate(self, omega: Tensor, z: Tensor) -> Tensor:
        w1, b1, w2, b2 = (w.to(z.device, z.dtype) for w in _split(omega, self.hidden))
        out = torch.full_like(z, float(b2))
        for k in range(self.hidden):
            out.add_(self.act.forward(z * w1[k] + b1[k]), alpha=float(w2[k]))
        return out

    # --- the table the backward pass reads ---
    def table_range(self) -> tuple[float, float]:
        """``[-R, R]`` covering every hidden unit's non-flat region ``|w1 z + b1| < saturation``."""
        return self._range(self._omega)

    def _range(self, omega: Tensor) -> tuple[float, float]:
        w1, b1, _, _ = _split(omega, self.hidden)
        lo_lim, hi_lim = self.range_limits
        if self.act.name not in ("tanh", "sigmoid"):
            lo_lim = self.range_min_unbounded
        reach = (b1.abs() + self.saturation) / w1.abs().clamp_min(1e-12)
        r = float(reach.max().clamp(lo_lim, hi_lim))
        return -r, r

    @property
    def table(self) -> Table:
        """The float32 table on the CPU (rebuilt when omega is assigned)."""
        return self._table

    def table_error_bound(self) -> float:
        r"""Bound on ``|table(z) - g(z)|`` for ``z`` in the table's range ``[lo, hi]``:

        .. math:: \frac{h}{2} \sup|g'| + 2^{-23} \sup|g|, \qquad
                  \sup|g'| \le 1.2 \sum_k |w_{2,k} w_{1,k}|,\quad
                  \sup|g| \le |b_2| + \sum_k |w_{2,k}| (\max(1, |w_{1,k}| R + |b_{1,k}|) + 1)

        (every ``phi`` here has ``|phi'| <= 1.2`` and ``|phi(u)| <= max(1, |u|) + 1``).
        """
        (w1, b1, w2, b2), (lo, hi) = self.weights(), self.table_range()
        u_max = w1.abs() * max(abs(lo), abs(hi)) + b1.abs()
        sup_g = float(b2.abs() + (w2.abs() * (u_max.clamp_min(1) + 1)).sum())
        sup_dg = 1.2 * float((w2 * w1).abs().sum())
        return self.table.step / 2 * sup_dg + 2.0**-23 * sup_g

    tabulated = True

    def _make_args(self, device: torch.device, dtype: torch.dtype) -> TableArgs:
        t, f = self._table, index_float(dtype)
        return TableArgs(t.values.to(device, dtype), torch.tensor(t.scale, dtype=f, device=device),
                         torch.tensor(t.shift, dtype=f, device=device), None, t.n - 1, index_dtype(t.n))

    def tensors_for(self, device: torch.device | str, dtype: torch.dtype) -> TableArgs:
        """The table for inputs on ``device`` in ``dtype`` (values in ``dtype``, scale and shift
        in float32, float64 for float64): made once per device and dtype, replaced (not changed
        in place) when omega is assigned."""
        key = (device_key(device), dtype)
        args = self._args.get(key)
        if args is None:
            args = self._args[key] = self._make_args(*key)
        return args

    def prepare(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        """Make the table tensors for ``device`` and ``dtype`` now (else a compiled model's first
        call would, and compile again); ``patch`` does it for the model's device and dtype."""
        self.tensors_for(device, dtype)

    def table_args(self, z: Tensor) -> TableArgs:
        args = self._args.get((z.device, z.dtype))
        return self.tensors_for(z.device, z.dtype) if args is None else args

    def vjp(self, grad: Tensor, z: Tensor, y: Tensor, activation: Activation) -> Tensor:
        return lookup(z, self.table_args(z)).mul_(grad)

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {"omega": self._omega.clone()}, {
            "hidden": self.hidden, "act": self.act.name, "table_size": self.table_size}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], config: dict[str, Any]) -> MetaNet:
        if not isinstance(tensors, dict) or "omega" not in tensors:
            raise ConfigError("a metanet needs the tensor 'omega'; the file has none")
        return cls(_field(config, "hidden"), _field(config, "act", "tanh"), omega=tensors["omega"],
                   table_size=_field(config, "table_size", 16384))

    def __repr__(self) -> str:
        values = ", ".join(f"{v:.4g}" for v in self._omega.tolist())
        return f"MetaNet(hidden={self.hidden}, act={self.act.name!r}, omega=[{values}])"


def _split(omega: Tensor, hidden: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    h = hidden
    return omega[:h], omega[h : 2 * h], omega[2 * h : 3 * h], omega[3 * h]


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ConfigError(f"MetaNet({name}={value!r}): {name} must be an integer from {lo} to {hi}")
