r"""Tuning the baselines of :func:`metabp.analysis.compare`: a learning rate per optimizer.

Each baseline gets ``budget`` trials, the number of candidates the study scored; a trial trains
on every tuning seed (the study's search seeds) and scores the mean AULC over them, as a study
candidate does, so every method spends the same number of training runs. The learning rate is
searched log-uniformly by Optuna's TPE:

.. math:: \mathrm{lr}^\star = \arg\min_{\mathrm{lr} \in [lo, hi]}
          \frac{1}{|S|} \sum_{s \in S} \mathrm{AULC}_s(\mathrm{lr}).
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
    """Minimise ``objective(x)`` over ``x`` log-uniform in ``[low, high]`` with Optuna's TPE.

    Args:
        objective: one trial at ``x``, returning its score (mean AULC).
        low, high: the range, ``0 < low < high``.
        budget: number of evaluations (trials).
        seed: the sampler's seed.
        name: the parameter's name in the Optuna study.
        progress: called after each evaluation (e.g. a tqdm bar's ``update``).

    Returns:
        ``(best_x, best_value, [(x, value), ...])`` in evaluation order.
    """
    import optuna

    if not 0 < low < high:
        raise ConfigError(f"tuning range [{low}, {high}] for {name}: need 0 < low < high")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget={budget!r}: tuning needs an int >= 1 of trials")
    history: list[tuple[float, float]] = []

    def _f(trial: optuna.Trial) -> float:
        x = trial.suggest_float(name, low, high, log=True)
        value = float(objective(x))
        history.append((x, value))
        if progress is not None:
            progress()
        return value if math.isfinite(value) else 1e300

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no per-trial lines; restored below
    try:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(_f, n_trials=budget)
    finally:
        optuna.logging.set_verbosity(before)
    return float(study.best_params[name]), float(study.best_value), history


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
) -> list[Tuned]:
    """"lr tuned alone" (``spec``'s optimizer, lr in ``lr_range``, default ``spec.lr`` times
    ``MULTIPLIER_RANGE``) and each of ``optimizers`` with its lr in ``LR_RANGES``, ``budget``
    trials each over ``seeds``; ``bar.update()`` after each trial."""
    step = bar.update if bar is not None else None
    lo, hi = lr_range if lr_range is not None else tuple(spec.lr * m for m in MULTIPLIER_RANGE)
    jobs = [("lr tuned alone", "control", spec.optimizer, lo, hi)]
    jobs += [(f"{name} (tuned lr)", "baseline", name, *LR_RANGES[name]) for name in optimizers]
    out = []
    for label, kind, optimizer, low, high in jobs:
        if bar is not None:
            bar.set_postfix_str(f"tuning {label}")
        best, _, _ = tune_lr(
            lambda lr, o=optimizer: mean_aulc(dataclasses.replace(spec, optimizer=o, lr=lr), None, None,
                                              seeds, device=device, data_dir=data_dir),
            low=low, high=high, budget=budget, seed=seeds[0], progress=step)
        tuned = dataclasses.replace(spec, optimizer=optimizer, lr=best)
        out.append(Tuned(label, kind, tuned, None, budget, f"lr in [{low:.3g}, {high:.3g}]"))
    return out
