r"""Held-out validation: the search's best candidates and two controls on seeds the search never saw.

A search ranks candidates on its ``seeds``; its best score is biased low (it fits those seeds'
noise). ``[validate] seeds`` gives independent seeds on which are trained, with the same kind of
score as the search (``_score.py``):

- the ``top_k`` candidates by search score (study user attr ``heldout_aulc:<number>``, shown by
  :attr:`Study.trials` as the trial's ``heldout_aulc``: ``{mean, std, seeds, values, per_seed}``);
- plain backprop at the targets' own lr (``heldout_controls["backprop"]``);
- when the study searches ``lr``: backprop with its lr tuned on the *search* seeds with the same
  trial budget (:func:`tune_grid`, every measured lr a trial of an Optuna study
  ``<name>:tuned_lr`` in the same storage), then scored on the held-out seeds
  (``heldout_controls["tuned_lr"]``, with its ``lr``).

The lr tuning is batched: a log grid over the range, then a finer grid around its best point,

.. math:: \mathrm{lr}^\star = \arg\min_{\mathrm{lr} \in G_1 \cup G_2}
          \frac{1}{|S|} \sum_{s \in S} \mathrm{score}_s(\mathrm{lr}),
          \quad |G_1| = \lceil n/2 \rceil,\ |G_2| = \lfloor n/2 \rfloor,

``batch`` lrs x seeds per trainer call, so ``n`` trials cost ``n`` trainings per seed and no proposal.

Every piece is stored as soon as it is measured, so a killed validation resumes where it stopped
(``metabp validate`` or ``metabp search --resume``). Validation runs in one process at a time.
:func:`validate` sees only a :class:`ValidationRun`: what the study passes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from metabp import BFunction, PerSite
from metabp.exceptions import ConfigError

from . import _schema as schema
from ._config import StudyConfig
from ._progress import progress_bar
from ._score import Evaluator, backprop_aulcs, backprop_summary, score, trains_backprop

HELDOUT = schema.HELDOUT_PREFIX
CONTROLS = ((schema.CONTROL_BACKPROP, "backprop"), (schema.CONTROL_TUNED_LR, "backprop, tuned lr"))


@dataclass(frozen=True)
class Candidate:
    """A trial to validate: its number, search score, b-function (a ``PerSite`` with one per site)
    and lr (``None``: the targets')."""

    number: int
    value: float
    bfn: BFunction | PerSite
    lr: float | None


@dataclass
class ValidationRun:
    """What validation needs from a study, and nothing else.

    Attributes:
        config: the study's configuration (seeds, held-out seeds, ``q``, lr range).
        evaluate: the study's evaluator.
        top: the ``top_k`` completed candidates by search score, best first.
        heldout: the held-out scores stored so far, by trial number.
        controls: the controls stored so far (``backprop``, ``tuned_lr``).
        search_backprop: backprop's ``per_target`` AULCs on the search seeds (``None`` if unknown).
        storage: where the ``<name>:tuned_lr`` study of the lr tuning lives.
        save: ``save(key, value)`` stores a study user attr at once (resume after a kill).
    """

    config: StudyConfig
    evaluate: Evaluator
    top: Sequence[Candidate]
    heldout: dict[int, dict[str, Any]]
    controls: dict[str, Any]
    search_backprop: dict[str, list[float]] | None
    storage: BaseStorage
    save: Callable[[str, Any], None]


def validate(run: ValidationRun, *, progress: bool = True) -> dict[str, Any]:
    """Validate (module docstring); ``{"trials": {number: heldout_aulc}, **controls}`` of ``run.top``."""
    cfg, seeds, controls = run.config, list(run.config.validate_seeds), dict(run.controls)
    if not seeds:
        raise ConfigError(f"study {cfg.name!r} has no held-out seeds; add a [validate] table, e.g. "
                          "seeds = [100, 101, 102, 103, 104] and top_k = 5, to the study file")
    if not run.top:
        raise ConfigError(f"study {cfg.name!r} has no completed trial yet; run `metabp search` first")
    if not trains_backprop(run.evaluate):
        raise ConfigError("validation trains plain backprop; this study's evaluator takes candidates only")
    if (controls.get(schema.CONTROL_BACKPROP) or {}).get("seeds") != seeds:
        aulcs = backprop_aulcs(cfg, run.evaluate, seeds)
        controls[schema.CONTROL_BACKPROP] = backprop_summary(cfg, aulcs, seeds)
        run.save(schema.HELDOUT_CONTROLS, controls)
    base = controls[schema.CONTROL_BACKPROP]["per_target"]
    if cfg.lr_bounds and (controls.get(schema.CONTROL_TUNED_LR) or {}).get("seeds") != seeds:
        lr = tune_lr(run, progress=progress)
        s = score(cfg, run.evaluate, [None], [lr], seeds, base)[0]
        controls[schema.CONTROL_TUNED_LR] = {**s.summary(seeds), "lr": lr}
        run.save(schema.HELDOUT_CONTROLS, controls)
    held = {c.number: h for c in run.top if (h := run.heldout.get(c.number)) and h.get("seeds") == seeds}
    todo = [c for c in run.top if c.number not in held]
    if todo:  # top_k x held-out seeds copies, one trainer call per target
        scores = score(cfg, run.evaluate, [c.bfn for c in todo], [c.lr for c in todo], seeds, base)
        for c, s in zip(todo, scores, strict=True):
            held[c.number] = {**s.summary(seeds), schema.PER_SEED: s.per_seed}
            run.save(schema.heldout_key(c.number), held[c.number])
    return {"trials": held, **controls}


def tune_lr(run: ValidationRun, *, progress: bool = True) -> float:
    """Backprop's best lr on the search seeds: :func:`tune_grid` with ``config.n_trials`` trials,
    each stored as a trial of ``<name>:tuned_lr`` as it is measured (a resumed run reuses them)."""
    cfg = run.config
    sub = optuna.create_study(study_name=f"{cfg.name}:tuned_lr", storage=run.storage, direction="minimize",
                              load_if_exists=True)
    dist = FloatDistribution(*cfg.lr_bounds, log=True)
    done = {float(t.params[schema.LR]): float(t.value)
            for t in sub.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if schema.LR in t.params}

    def measure(lrs: list[float]) -> list[float]:
        values = [s.value for s in score(cfg, run.evaluate, [None] * len(lrs), lrs, cfg.seeds,
                                         run.search_backprop)]
        for lr, v in zip(lrs, values, strict=True):
            sub.add_trial(optuna.trial.create_trial(params={schema.LR: lr}, distributions={schema.LR: dist},
                                                    value=v))
        return values

    with progress_bar(total=cfg.n_trials, enabled=progress, name=f"{cfg.name}: tune backprop lr") as bar:
        best, _, _ = tune_grid(measure, low=cfg.lr_bounds[0], high=cfg.lr_bounds[1], budget=cfg.n_trials,
                               batch=cfg.q, done=done, progress=bar.update)
    return best


def log_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` points equally spaced in ``log`` over ``[low, high]`` (ends included; one: the
    geometric mean).

    Example:
        >>> [round(x, 9) for x in log_grid(0.01, 1.0, 3)]
        [0.01, 0.1, 1.0]
    """
    if n == 1:
        return [math.sqrt(low * high)]
    a, b = math.log(low), math.log(high)
    inner = [min(max(math.exp(a + (b - a) * i / (n - 1)), low), high) for i in range(1, n - 1)]
    return [low, *inner, high]  # the ends exactly, whatever exp(log(x)) rounds to


def refine(points: Sequence[float], values: Sequence[float], low: float, high: float, n: int) -> list[float]:
    """``n`` new points around the best of ``points`` (ascending): between it and each neighbour
    (the range's end when it has none), half on each side, equally spaced in ``log``."""
    i = min(range(len(points)), key=lambda j: (_finite(values[j]), j))
    left = points[i - 1] if i > 0 else (low if points[i] > low else None)
    right = points[i + 1] if i + 1 < len(points) else (high if points[i] < high else None)
    n_left = 0 if left is None else n if right is None else n // 2
    return (log_grid(left, points[i], n_left + 2)[1:-1] if n_left else []) + (
        log_grid(points[i], right, n - n_left + 2)[1:-1] if n - n_left else [])


def tune_grid(measure: Callable[[list[float]], Sequence[float]], *, low: float, high: float, budget: int,
              batch: int, done: dict[float, float] | None = None,
              progress: Callable[[int], Any] | None = None) -> tuple[float, float, list[tuple[float, float]]]:
    """Minimise over ``x`` in ``[low, high]`` (log scale) with ``budget`` evaluations: a log grid of
    ``ceil(budget / 2)`` points, then :func:`refine` with the rest (the module docstring).

    Args:
        measure: ``measure(xs) -> values``, one call per chunk of at most ``batch`` points.
        done: values measured before (a resumed run): those points are not measured again.
        progress: called with the number of points after each chunk.

    Returns:
        ``(best_x, best_value, [(x, value), ...])`` over the ``budget`` points, grid first.
    """
    if not 0 < low < high:
        raise ConfigError(f"tuning range [{low}, {high}]: need 0 < low < high")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget={budget!r}: tuning needs an int >= 1 of trials")
    known = dict(done or {})
    first = log_grid(low, high, (budget + 1) // 2)
    values = _measure(measure, first, known, batch, progress)
    second = refine(first, values, low, high, budget - len(first)) if budget > len(first) else []
    values += _measure(measure, second, known, batch, progress)
    history = list(zip(first + second, values, strict=True))
    best = min(range(budget), key=lambda j: (_finite(history[j][1]), j))
    return history[best][0], history[best][1], history


def _measure(measure: Callable, xs: list[float], known: dict[float, float], batch: int,
             progress: Callable[[int], Any] | None) -> list[float]:
    todo = [x for x in xs if _stored(known, x) is None]
    if progress is not None and len(todo) < len(xs):
        progress(len(xs) - len(todo))
    for at in range(0, len(todo), max(int(batch), 1)):
        chunk = todo[at:at + max(int(batch), 1)]
        known.update(zip(chunk, (float(v) for v in measure(chunk)), strict=True))
        if progress is not None:
            progress(len(chunk))
    return [_stored(known, x) for x in xs]


def _stored(known: dict[float, float], x: float) -> float | None:
    if x in known:
        return known[x]
    return next((v for k, v in known.items() if math.isclose(k, x, rel_tol=1e-12)), None)


def _finite(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def format_heldout(study: Any) -> str:
    """Lines: each validated trial's and each control's held-out score (mean ± std) of ``study``
    (a :class:`~metabp.search.Study`; its public ``name``, ``completed()``, ``heldout_controls``)."""
    controls = study.heldout_controls
    seeds = (controls.get(schema.CONTROL_BACKPROP) or {}).get("seeds", [])
    lines = [f"{study.name}: held-out seeds {seeds}"]
    for t in sorted(study.completed(), key=lambda t: t.number):
        h = t.user_attrs.get(schema.HELDOUT_AULC)
        if h is not None:
            lines.append(f"  trial {t.number:>4}  search {t.value:.5g}  "
                         f"held-out {h['mean']:.5g} ± {h['std']:.2g}")
    for key, label in CONTROLS:
        c = controls.get(key)
        if c is not None:
            extra = f" (lr {c['lr']:.3g})" if "lr" in c else ""
            lines.append(f"  {label}{extra}: held-out {c['mean']:.5g} ± {c['std']:.2g}")
    return "\n".join(lines)


def heldout_verdict(number: int, held: dict[str, Any], controls: dict[str, Any]) -> str:
    """One line: the best held-out candidate (trial ``number``, its ``held`` score) against the
    better control, by the paired difference over the held-out seeds (``z`` = mean / SE)."""
    label, c = min(((lab, controls[k]) for k, lab in CONTROLS if k in controls), key=lambda lc: lc[1]["mean"])
    d = [a - b for a, b in zip(held["values"], c["values"], strict=True)]
    mean = math.fsum(d) / len(d)
    se = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else 0.0
    z = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    winner = f"g (trial {number})" if mean < 0 else label
    if mean == 0:
        words = "a tie"
    else:
        words = f"{winner} wins by {abs(mean):.4g} ({abs(z):.1f} SE{', within noise' if abs(z) < 2 else ''})"
    return (f"held-out verdict: g (trial {number}) {held['mean']:.5g} vs {label} {c['mean']:.5g} "
            f"on {len(d)} seeds: {words}")
