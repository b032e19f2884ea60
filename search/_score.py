r"""A candidate's score: its AULC over the study's seeds (and targets), and backprop's beside it.

For one target the score of ``g`` is its mean AULC over the seeds :math:`S`,

.. math:: s(g) = \frac{1}{|S|} \sum_{s \in S} \mathrm{AULC}(g; s).

With several targets :math:`T` it is the mean ratio to plain backprop on the same target and seed,

.. math:: s(g) = \frac{1}{|T||S|} \sum_{t \in T} \sum_{s \in S}
          \frac{\mathrm{AULC}_t(g; s)}{\mathrm{AULC}_t(\mathrm{backprop}; s)},

so each target weighs the same whatever its loss scale (backprop scores 1). Candidates x seeds
train as one batched model (``train_many`` with one seed and one learning rate per copy): one
call per target for a whole batch, whatever the candidates' lrs. A diverged run is scored by the
targets layer's finite penalty AULC.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from metabp import BFunction, PerSite
from metabp.exceptions import ConfigError

from ._config import StudyConfig


@dataclass
class Evaluation:
    """What one training run returns (``metabp.targets.Run`` has these fields); for test evaluators."""

    aulc: float
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")
    diverged: bool = False
    seconds: float = 0.0


class RunLike(Protocol):
    """What an evaluator returns per copy (``metabp.targets.Run`` and :class:`Evaluation` are such).
    Only ``aulc`` is required; ``step_losses``, ``test_accuracy``, ``diverged`` and ``seconds`` are
    read when present."""

    aulc: float


LR = float | Sequence[float | None] | None


class Evaluator(Protocol):
    """Trains copies: ``evaluate(gs, seeds, target=i, lr=lr) -> runs``, one :class:`RunLike` per copy.

    Copy ``k`` is ``gs[k]`` (``None``: plain backprop) on seed ``seeds[k]`` of target ``i``, at
    learning rate ``lr[k]`` (``lr`` ``None``, or an entry ``None``: the target's own lr; one float:
    every copy). An evaluator that cannot train plain backprop (a seed-free objective, see
    :class:`CandidatesOnly`) has ``trains_backprop = False``; the study then keeps no baseline.
    """

    def __call__(self, gs: Sequence[BFunction | PerSite | None], seeds: Sequence[int], *, target: int = 0,
                 lr: LR = None) -> Sequence[RunLike]: ...


@dataclass
class Score:
    """One candidate's score and the runs behind it.

    Attributes:
        value: the score (see the module docstring).
        values: the score per seed (mean over targets), in the order of the seeds.
        per_seed: one dict per target and seed: target, seed, aulc, backprop_aulc, diverged,
            test_accuracy.
        step_losses: the first target and seed's loss curve (non-finite losses as ``None``).
        seconds: training seconds summed over the runs.
        diverged: whether any run diverged.
    """

    value: float
    values: list[float]
    per_seed: list[dict[str, Any]]
    step_losses: list[float | None]
    seconds: float
    diverged: bool

    def summary(self, seeds: Sequence[int]) -> dict[str, Any]:
        """``{mean, std, seeds, values}`` (std over seeds, n-1 denominator; 0 for one seed)."""
        return summarize(self.values, seeds)


def summarize(values: Sequence[float], seeds: Sequence[int]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": math.fsum(values) / len(values), "std": std, "seeds": list(seeds),
            "values": list(values)}


def train_evaluator(cfg: StudyConfig) -> Evaluator:
    """The default evaluator: one ``metabp.targets.train_many`` call, one seed and lr per copy."""
    from metabp.targets import train_many

    from ._load import check_device_exists

    check_device_exists(cfg.device)
    specs = [cfg.target_spec(i) for i in range(len(cfg.targets))]

    def evaluate(gs: Sequence[BFunction | PerSite | None], seeds: Sequence[int], *, target: int = 0,
                 lr: LR = None) -> Sequence[Any]:
        spec = specs[target]
        if lr is not None and not isinstance(lr, numbers.Real):
            lr = [spec.lr if a is None else a for a in lr]
        return train_many(spec, list(gs), where=cfg.targets[target].where, seed=list(seeds), lr=lr,
                          device=cfg.device, data_dir=cfg.data_dir, compile=cfg.compile)

    return evaluate


class CandidatesOnly:
    """An :class:`Evaluator` from a seed-free objective ``f(gs) -> runs`` (tests, benchmarks): it
    ignores seeds, targets and lrs, and cannot train plain backprop (``trains_backprop = False``)."""

    trains_backprop = False

    def __init__(self, f: Callable[[list], Sequence[RunLike]]) -> None:
        self.f = f

    def __call__(self, gs: Sequence[BFunction | PerSite | None], seeds: Sequence[int], *, target: int = 0,
                 lr: LR = None) -> Sequence[RunLike]:
        return self.f(list(gs))


def trains_backprop(evaluate: Evaluator) -> bool:
    """Whether ``evaluate`` can train plain backprop (its ``trains_backprop``, default True)."""
    return bool(getattr(evaluate, "trains_backprop", True))


def backprop_aulcs(cfg: StudyConfig, evaluate: Evaluator, seeds: Sequence[int]) -> dict[str, list[float]]:
    """Plain backprop's AULC per target (at its own lr), one per seed in ``seeds``."""
    out = {}
    for i, entry in enumerate(cfg.targets):
        runs = _call(evaluate, [None] * len(seeds), list(seeds), i, None)
        out[entry.name] = [float(r.aulc) for r in runs]
    return out


def backprop_summary(cfg: StudyConfig, aulcs: dict[str, list[float]], seeds: Sequence[int]) -> dict:
    """Backprop's own score on ``seeds`` in the study's units (AULC; 1 for ratios)."""
    if cfg.multi_target:
        values = [1.0] * len(seeds)
    else:
        values = aulcs[cfg.targets[0].name]
    return {**summarize(values, seeds), "per_target": aulcs}


def score(cfg: StudyConfig, evaluate: Evaluator, gs: Sequence[BFunction | PerSite | None],
          lrs: Sequence[float | None], seeds: Sequence[int],
          backprop: dict[str, list[float]] | None) -> list[Score]:
    """Score candidates ``gs`` (with their lrs) on ``seeds``; ``backprop``: per target, backprop's
    AULC per seed (needed with several targets, else only recorded beside each run)."""
    if cfg.multi_target and backprop is None:
        raise ConfigError("several targets: scores are ratios to backprop, which was not measured")
    seeds, n = list(seeds), len(seeds)
    rows: list[list[dict[str, Any]]] = [[] for _ in gs]
    curves: list[list[float | None]] = [[] for _ in gs]
    secs = [0.0] * len(gs)
    copy_lrs = None if all(a is None for a in lrs) else [lrs[i] for i in range(len(gs)) for _ in seeds]
    for ti, entry in enumerate(cfg.targets):
        runs = _call(evaluate, [g for g in gs for _ in seeds], seeds * len(gs), ti, copy_lrs)
        for i in range(len(gs)):
            for k, seed in enumerate(seeds):
                run = runs[i * n + k]
                base = backprop[entry.name][k] if backprop else None
                rows[i].append(_row(entry.name, seed, run, base))
                secs[i] += float(getattr(run, "seconds", 0.0) or 0.0)
                if ti == 0 and k == 0:
                    curves[i] = _finite_list(getattr(run, "step_losses", None))
    return [_score(cfg, r, seeds, c, s) for r, c, s in zip(rows, curves, secs, strict=True)]


def _score(cfg: StudyConfig, rows: list[dict[str, Any]], seeds: list[int], curve: list, secs: float) -> Score:
    per_seed: list[float] = []
    for seed in seeds:
        mine = [r for r in rows if r["seed"] == seed]
        if cfg.multi_target:
            per_seed.append(math.fsum(r["aulc"] / max(r["backprop_aulc"], 1e-12) for r in mine) / len(mine))
        else:
            per_seed.append(mine[0]["aulc"])
    value = math.fsum(per_seed) / len(per_seed)
    return Score(value, per_seed, rows, curve, secs, any(r["diverged"] for r in rows))


def _row(target: str, seed: int, run: Any, base: float | None) -> dict[str, Any]:
    acc = float(getattr(run, "test_accuracy", float("nan")))
    return {"target": target, "seed": int(seed), "aulc": float(run.aulc), "backprop_aulc": base,
            "diverged": bool(getattr(run, "diverged", False)),
            "test_accuracy": acc if math.isfinite(acc) else None}


def _call(evaluate: Evaluator, gs: list, seeds: list[int], target: int, lr: list | None) -> list:
    runs = list(evaluate(gs, seeds, target=target, lr=lr))
    if len(runs) != len(gs):
        raise RuntimeError(f"evaluator returned {len(runs)} runs for {len(gs)} copies")
    bad = [k for k, r in enumerate(runs) if not math.isfinite(float(r.aulc))]
    if bad:  # metabp.targets scores a divergence finitely; only another evaluator gets here
        raise RuntimeError(f"evaluator returned a non-finite AULC for copy {bad[0]} (seed {seeds[bad[0]]}); "
                           "score a diverged run with a finite penalty")
    return runs


def _finite_list(xs: Sequence[float] | None) -> list[float | None]:
    return [float(x) if math.isfinite(float(x)) else None for x in (xs or [])]


__all__ = ["Evaluation", "Evaluator", "RunLike", "CandidatesOnly", "Score", "score", "train_evaluator",
           "trains_backprop", "backprop_aulcs", "backprop_summary", "summarize"]
