"""``minimize``: the proposal engine on any black-box function (no training runs involved)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
import torch
from torch import Tensor

from metabp.exceptions import ConfigError

from ._samplers import SAMPLERS, make_sampler


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
    bounds: Tensor | list[list[float]],
    n_trials: int,
    seed: int = 0,
    sampler: str = "botorch",
    *,
    n_initial: int | None = None,
    acquisition: str = "logei",
    log: Sequence[bool] | None = None,
) -> MinimizeResult:
    """Minimise ``f`` over the box ``bounds`` with ``n_trials`` evaluations.

    Args:
        f: takes a 1-D float64 tensor of ``d`` values, returns a float.
        bounds: ``2 x d``: lower bounds in row 0, upper in row 1.
        n_trials: number of evaluations.
        seed: the sampler's seed.
        sampler: a name in :data:`SAMPLERS` (``botorch``, ``random``, ``tpe``, ``gp``, ``cmaes``).
        n_initial: initial (Sobol / random) points; default ``max(2, min(2 d + 1, n_trials // 4))``.
        acquisition: ``logei`` or ``qlogei`` (botorch only).
        log: one bool per dimension, True where it is searched on a log scale (bounds > 0).

    Raises:
        ConfigError: a bad argument (named, with its value and what is allowed), or ``f`` never
            returned a finite value.

    Example::

        r = minimize(lambda x: float(((x - 0.3) ** 2).sum()), [[-1.0, -1.0], [1.0, 1.0]], 20)
        r.best_value, r.best_x          # about 0 at (0.3, 0.3); 20 evaluations take a few seconds
    """
    b = torch.as_tensor(bounds, dtype=torch.float64)
    if b.dim() != 2 or b.shape[0] != 2 or not (b[0] < b[1]).all():
        raise ConfigError(f"minimize(bounds={b.tolist()}): need a 2 x d tensor with lower < upper row-wise")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"minimize(n_trials={n_trials!r}): must be an integer >= 1")
    if sampler not in SAMPLERS:
        raise ConfigError(f"minimize(sampler={sampler!r}): choose one of {', '.join(SAMPLERS)}")
    d = b.shape[1]
    if n_initial is None:
        n_initial = max(2, min(2 * d + 1, n_trials // 4))
    names = [f"x_{i}" for i in range(d)]
    box = [(float(lo), float(hi)) for lo, hi in b.T.tolist()]
    study = optuna.create_study(
        sampler=make_sampler(sampler, bounds=box, names=names, n_initial=n_initial, seed=seed,
                             acquisition=acquisition, log=log),
        direction="minimize",
    )
    log = list(log) if log is not None else [False] * d
    values: list[float] = []
    xs: list[list[float]] = []

    def objective(trial: optuna.Trial) -> float:
        x = [trial.suggest_float(n, lo, hi, log=lg) for n, (lo, hi), lg in zip(names, box, log, strict=True)]
        v = float(f(torch.tensor(x, dtype=torch.float64)))
        xs.append(x)
        values.append(v)
        return v if math.isfinite(v) else float("nan")  # non-finite -> FAIL, ignored by samplers

    study.optimize(objective, n_trials=n_trials, catch=())
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        raise ConfigError("minimize: f returned no finite value")
    best = min(finite, key=lambda i: values[i])
    return MinimizeResult(
        best_x=torch.tensor(xs[best], dtype=torch.float64),
        best_value=values[best],
        values=values,
        xs=torch.tensor(xs, dtype=torch.float64),
    )
