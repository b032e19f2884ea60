"""``minimize``: the proposal engine on any black-box function (no training runs involved)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from torch import Tensor

from metabp.exceptions import ConfigError

from ._progress import quiet_optuna
from ._samplers import make_sampler
from ._settings import EngineSettings


@dataclass
class MinimizeResult:
    """What :func:`minimize` found.

    Attributes:
        best_x: the best point (``d``, float64).
        best_value: ``f(best_x)``.
        values: every evaluation in order (``n_trials`` floats).
        xs: every point in order (``n_trials x d``).
    """

    best_x: Tensor
    best_value: float
    values: list[float] = field(default_factory=list)
    xs: Tensor | None = None


def minimize(
    f: Callable[[Tensor], float],
    bounds: Tensor | Sequence[Sequence[float]],
    n_trials: int,
    seed: int = 0,
    sampler: str = "botorch",
    *,
    n_initial: int | None = None,
    acquisition: str = "logei",
    log: Sequence[bool] | None = None,
    q: int = 1,
    engine: EngineSettings | None = None,
    verbose: bool = False,
) -> MinimizeResult:
    """Minimise ``f`` over the box ``bounds`` with ``n_trials`` evaluations.

    Args:
        f: takes a 1-D float64 tensor of ``d`` values, returns a number (non-finite: failed).
        bounds: ``[(lo, hi), ...]``, one pair per dimension, or a ``2 x d`` tensor (lower bounds in
            row 0, upper in row 1); see :func:`as_box` for nested lists.
        n_trials: number of evaluations.
        seed: the sampler's seed, in ``[0, 2**32)``.
        sampler: a name in :data:`SAMPLERS` (``botorch``, ``random``, ``tpe``, ``gp``, ``cmaes``).
        n_initial: initial (Latin hypercube / random) points; default ``max(2, min(2 d + 1, n_trials // 4))``.
        acquisition: ``logei`` or ``qlogei`` (botorch only).
        log: one bool per dimension, True where it is searched on a log scale (bounds > 0).
        q: points proposed (each seeing the earlier as pending) before evaluating, ``<= n_trials``.
        engine: the botorch engine's :class:`EngineSettings`. verbose: Optuna's INFO line per trial.

    Raises:
        ConfigError: a bad argument (named, with its value and what is allowed), ``f`` returned
            something not a number, or no finite value.

    Example::

        r = minimize(lambda x: float(((x - 0.3) ** 2).sum()), [(-1.0, 1.0), (-1.0, 1.0)], 20)
        r.best_value, r.best_x          # about 0 at (0.3, 0.3); 20 evaluations take a few seconds
    """
    box = as_box(bounds)
    _check_args(f, n_trials, q)
    d = len(box)
    names = [f"x_{i}" for i in range(d)]
    smp = make_sampler(sampler, bounds=box, names=names, seed=seed, acquisition=acquisition, log=log,
                       n_initial=max(2, min(2 * d + 1, n_trials // 4)) if n_initial is None else n_initial,
                       engine=engine)
    dists = {n: optuna.distributions.FloatDistribution(lo, hi, log=lg) for n, (lo, hi), lg
             in zip(names, box, list(log) if log is not None else [False] * d, strict=True)}
    with contextlib.nullcontext() if verbose else quiet_optuna():
        xs, values = _run(f, optuna.create_study(sampler=smp, direction="minimize"), dists, n_trials, q)
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        raise ConfigError("minimize: f returned no finite value")
    best = min(finite, key=lambda i: values[i])
    return MinimizeResult(best_x=torch.tensor(xs[best], dtype=torch.float64), best_value=values[best],
                          values=values, xs=torch.tensor(xs, dtype=torch.float64))


def _run(f: Callable, study: optuna.Study, dists: dict, n_trials: int, q: int) -> tuple[list, list]:
    """Ask ``q`` trials, evaluate and tell them, until ``n_trials``; the points and values in order."""
    xs: list[list[float]] = []
    values: list[float] = []
    while len(values) < n_trials:
        batch = [study.ask(dists) for _ in range(min(q, n_trials - len(values)))]
        for trial in batch:
            x = [trial.params[n] for n in dists]
            v = _number(f(torch.tensor(x, dtype=torch.float64)), x)
            xs.append(x)
            values.append(v)
            study.tell(trial, v if math.isfinite(v) else None,
                       state=None if math.isfinite(v) else optuna.trial.TrialState.FAIL)
    return xs, values


def _number(v: Any, x: list[float]) -> float:
    """``f``'s return as a float; anything but a number (or a one-element tensor) is a ConfigError."""
    if isinstance(v, (bool, str, bytes)) or v is None:
        raise ConfigError(f"minimize: f returned {v!r} at x={x}; f must return a number")
    try:
        return float(v)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"minimize: f returned {v!r} at x={x}; f must return a number") from None


def _check_args(f: Any, n_trials: Any, q: Any) -> None:
    """The arguments only ``minimize`` reads (``make_sampler`` checks the seed, sampler and space)."""
    if not callable(f):
        raise ConfigError(f"minimize(f={f!r}): f must be a callable taking a tensor and returning a number")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"minimize(n_trials={n_trials!r}): must be an integer >= 1")
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= n_trials:
        raise ConfigError(f"minimize(q={q!r}): must be an integer with 1 <= q <= n_trials ({n_trials})")


def as_box(bounds: Any) -> list[tuple[float, float]]:
    """``bounds`` as one ``(lo, hi)`` per dimension (finite, ``lo < hi``).

    A tensor or array is ``2 x d`` (lower row, upper row); a sequence of tuples is ``(lo, hi)``
    pairs; a nested list is pairs when it is ``d x 2`` and rows when it is ``2 x d``. A ``2 x 2``
    nested list is read the one way that gives a valid box; valid both ways it is ambiguous.
    """
    bad = ConfigError(f"minimize(bounds={bounds!r}): need [(lo, hi), ...] pairs or a 2 x d tensor "
                      "(lower bounds in row 0, upper in row 1), finite, with lo < hi")
    if isinstance(bounds, (str, bytes)) or bounds is None:
        raise bad
    try:
        b = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
    except (TypeError, ValueError):
        raise bad from None
    if b.dim() != 2 or 2 not in b.shape or not torch.isfinite(b).all() or b.numel() == 0:
        raise bad
    rows, pairs = b, b.T  # both 2 x d
    if isinstance(bounds, (Tensor, np.ndarray)):
        readings = [rows]
    elif all(isinstance(p, tuple) for p in bounds):
        readings = [pairs]
    else:
        readings = [r for r, ok in ((pairs, b.shape[1] == 2), (rows, b.shape[0] == 2)) if ok]
    valid = [r for r in readings if r.shape[0] == 2 and (r[0] < r[1]).all()]
    if len(valid) == 2 and not torch.equal(valid[0], valid[1]):
        raise ConfigError(f"minimize(bounds={bounds!r}): ambiguous with 2 dimensions (rows or (lo, hi) "
                          "pairs both make a box); pass tuples [(lo, hi), (lo, hi)] or a 2 x 2 tensor")
    if not valid:
        raise bad
    return [(float(lo), float(hi)) for lo, hi in valid[0].T.tolist()]
