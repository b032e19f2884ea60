r"""Tuning the baselines of :func:`metabp.analysis.compare`: a learning rate per optimizer.

Each baseline gets ``budget`` trials, the number of candidates the study scored; a trial trains
on every tuning seed (the study's search seeds) and scores the mean AULC over them, as a study
candidate does, so every method spends the same number of training runs. The learning rate is
searched on a log scale by :func:`metabp.search.tune_grid` (a log grid of half the budget, then a
finer grid around its best point), the study's held-out control's method:

.. math:: \mathrm{lr}^\star = \arg\min_{\mathrm{lr} \in G_1 \cup G_2}
          \frac{1}{|S|} \sum_{s \in S} \mathrm{AULC}_s(\mathrm{lr}).

The trials train in batches: ``batch`` lrs x the seeds per ``train_many`` call, one lr per copy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from metabp.exceptions import ConfigError

BASELINES = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamax",
             "nadam", "amsgrad")
# Log-uniform tuning ranges. Four decades around the usual learning rates of each family;
# Adadelta's lr multiplies an already unit-scaled step (torch default 1.0), so its range sits higher.
LR_RANGES: dict[str, tuple[float, float]] = {name: (1e-4, 1.0) for name in BASELINES}
LR_RANGES["adadelta"] = (1e-2, 1e2)
MULTIPLIER_RANGE = (1e-2, 1e2)  # "lr tuned alone" without a study lr range: spec.lr times this


@dataclass
class Tuned:
    """A method after tuning: what it trains with and what tuning cost.

    Attributes:
        label: row name, e.g. ``"adam (tuned lr)"``.
        kind: ``plain``, ``bfn``, ``control`` (the target's optimizer, lr tuned alone) or ``baseline``.
        spec: the ``TargetSpec`` it trains (optimizer and lr set).
        bfn: the b-function patched in (``None``: plain backprop).
        tuning_runs: trials spent tuning it (each over every tuning seed; 0 when nothing was tuned).
        note: e.g. the searched range.
    """

    label: str
    kind: str
    spec: Any
    bfn: Any = None
    tuning_runs: int = 0
    note: str = ""


def tune_lr(
    objective: Callable[[float], float],
    *,
    low: float,
    high: float,
    budget: int,
    seed: int = 0,
    name: str = "lr",
    progress: Callable[[], None] | None = None,
) -> tuple[float, float, list[tuple[float, float]]]:
    """Minimise ``objective(x)`` over ``x`` in ``[low, high]`` (log scale), ``budget`` evaluations,
    with :func:`metabp.search.tune_grid` (one point at a time; :func:`tune_methods` batches them).

    Args:
        objective: one trial at ``x``, returning its score (mean AULC).
        low, high: the range, ``0 < low < high``.
        budget: number of evaluations (trials).
        seed: unused (the grid is deterministic); kept so that existing calls still work.
        name: the parameter's name, in error messages.
        progress: called after each evaluation (e.g. a tqdm bar's ``update``).

    Returns:
        ``(best_x, best_value, [(x, value), ...])`` in evaluation order.
    """
    from metabp.search import tune_grid

    def measure(xs: list[float]) -> list[float]:
        values = [float(objective(x)) for x in xs]
        for _ in xs:
            if progress is not None:
                progress()
        return values

    if not 0 < low < high:
        raise ConfigError(f"tuning range [{low}, {high}] for {name}: need 0 < low < high")
    return tune_grid(measure, low=low, high=high, budget=budget, batch=1)


def batch_aulcs(spec: Any, lrs: Sequence[float], seeds: Sequence[int], *, device: str,
                data_dir: Any) -> list[float]:
    """Plain backprop's mean AULC over ``seeds`` at each of ``lrs``: one ``train_many`` call of
    ``len(lrs) x len(seeds)`` copies, copy ``(i, s)`` at ``lrs[i]`` on seed ``s``."""
    from metabp.targets import train_many

    n = len(seeds)
    runs = train_many(spec, [None] * (len(lrs) * n), None, seed=[s for _ in lrs for s in seeds],
                      lr=[a for a in lrs for _ in seeds], device=device, data_dir=data_dir)
    return [math.fsum(r.aulc for r in runs[i * n:(i + 1) * n]) / n for i in range(len(lrs))]


def mean_aulc(spec: Any, bfn: Any, where: str | None, seeds: Sequence[int], *, device: str,
              data_dir: Any) -> float:
    """Mean AULC of ``bfn`` (``None``: plain backprop) on ``spec`` over ``seeds``, one batched run."""
    from metabp.targets import train_many

    runs = train_many(spec, [bfn] * len(seeds), where, seed=list(seeds), device=device, data_dir=data_dir)
    return math.fsum(r.aulc for r in runs) / len(runs)


def tune_methods(
    spec: Any,
    *,
    optimizers: Sequence[str],
    budget: int,
    seeds: Sequence[int],
    lr_range: tuple[float, float] | None = None,
    device: str = "cpu",
    data_dir: Any = None,
    bar: Any = None,
    batch: int = 8,
) -> list[Tuned]:
    """"lr tuned alone" (``spec``'s optimizer, lr in ``lr_range``, default ``spec.lr`` times
    ``MULTIPLIER_RANGE``) and each of ``optimizers`` with its lr in ``LR_RANGES``, ``budget``
    trials each over ``seeds``, ``batch`` lrs per ``train_many`` call; ``bar.update(n)`` after
    each call of ``n`` trials."""
    from metabp.search import tune_grid

    step = bar.update if bar is not None else None
    lo, hi = lr_range if lr_range is not None else tuple(spec.lr * m for m in MULTIPLIER_RANGE)
    jobs = [("lr tuned alone", "control", spec.optimizer, lo, hi)]
    jobs += [(f"{name} (tuned lr)", "baseline", name, *LR_RANGES[name]) for name in optimizers]
    out = []
    for label, kind, optimizer, low, high in jobs:
        if bar is not None:
            bar.set_postfix_str(f"tuning {label}")
        best, _, _ = tune_grid(
            lambda lrs, o=optimizer: batch_aulcs(dataclasses.replace(spec, optimizer=o), lrs, seeds,
                                                 device=device, data_dir=data_dir),
            low=low, high=high, budget=budget, batch=batch, progress=step)
        tuned = dataclasses.replace(spec, optimizer=optimizer, lr=best)
        out.append(Tuned(label, kind, tuned, None, budget, f"lr in [{low:.3g}, {high:.3g}]"))
    return out
