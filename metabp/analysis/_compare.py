r"""Is a learned b-function just a learning rate? The best ``g`` against tuned baselines.

On one target, side by side, every row trained on the same held-out seeds:

1. plain backprop with the target's optimizer and learning rate;
2. the b-function under test, patched at ``where``; when the study searched the learning rate
   with ``g`` ("g + its lr"), at that lr;
3. "lr tuned alone": plain backprop with the target's optimizer and only its lr tuned;
4. each baseline optimizer (``sgd`` ... ``amsgrad``) with its lr tuned.

Rows 3 and 4 are tuned with the study's budget (see :mod:`metabp.analysis._tuning`) on the
study's search seeds; the held-out seeds are seeds no tuning and no search saw. The verdict
compares ``g`` with "lr tuned alone" and with the best other row by the paired difference of
their AULCs over the held-out seeds, in standard errors (:mod:`metabp.analysis._stats`).

How to read it depends on the target's optimizer (:data:`metabp._implicit_lr.SCALE_NOTE`):
"lr tuned alone" is the control a ``g`` must beat to do something a constant cannot.

The three steps are separate functions: :func:`~metabp.analysis._tuning.tune_methods`
(tuning), :func:`evaluate` (training every row on the held-out seeds) and
:mod:`metabp.analysis._compare_output` (table, verdict, CSV and figure).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from metabp import BFunction, PerSite, is_per_site
from metabp.analysis._compare_output import to_markdown, write
from metabp.analysis._compare_result import Comparison, MethodResult
from metabp.analysis._lr_sweep import lr_sweep as run_sweep
from metabp.analysis._per_site import per_site
from metabp.analysis._tuning import BASELINES, Tuned, tune_methods
from metabp.exceptions import ConfigError


def evaluate(methods: Sequence[Tuned], seeds: Sequence[int], *, where: str | None = None, device: str = "cpu",
             data_dir: Any = None, bar: Any = None) -> list[MethodResult]:
    """Train every method on every seed (one batched run per method); rows in method order."""
    from metabp.targets import train_many

    rows = []
    for m in methods:
        if bar is not None:
            bar.set_postfix_str(f"{m.label}: held-out seeds")
        site = where if m.bfn is not None and not is_per_site(m.bfn) else None
        runs = train_many(m.spec, [m.bfn] * len(seeds), site, seed=list(seeds), device=device,
                          data_dir=data_dir)
        if bar is not None:
            bar.update(len(seeds))
        rows.append(MethodResult(m.label, m.kind, m.spec.optimizer, m.spec.lr, runs, m.tuning_runs, m.note))
    return rows


def _check(optimizers: Sequence[str] | None, seeds: Sequence[int], tune_seeds: Any, budget: Any,
           lr_sweep: Any):
    optimizers = list(BASELINES if optimizers is None else optimizers)
    unknown = [o for o in optimizers if o not in BASELINES]
    if unknown:
        raise ConfigError(f"optimizers={unknown!r} unknown; choose from {', '.join(BASELINES)}")
    tune_seeds = [tune_seeds] if isinstance(tune_seeds, int) else list(tune_seeds)
    for key, value in (("seeds", seeds), ("tune_seeds", tune_seeds)):
        if not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
            raise ConfigError(f"{key}={list(value)!r}: give a non-empty list of ints >= 0")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget={budget!r}: give the trials each baseline may spend tuning, an int >= 1")
    if isinstance(lr_sweep, bool) or not isinstance(lr_sweep, int) or lr_sweep == 1 or lr_sweep < 0:
        raise ConfigError(f"lr_sweep={lr_sweep!r}: give the number of swept lrs, an int >= 2 (0: no sweep)")
    return optimizers, [int(s) for s in seeds], tune_seeds


def _fixed_rows(spec: Any, bfn: BFunction | PerSite | None, bfn_lr: float | None, label: str) -> list[Tuned]:
    """Plain backprop and (when given) ``bfn``, at ``bfn_lr`` when it was searched with it."""
    rows = [Tuned("plain backprop", "plain", spec)]
    if bfn is not None:
        g_spec = spec if bfn_lr is None else dataclasses.replace(spec, lr=float(bfn_lr))
        rows.append(Tuned(label, "bfn", g_spec, bfn, note="lr searched with g" if bfn_lr is not None else ""))
    return rows


def compare(
    spec: Any,
    bfn: BFunction | PerSite | None,
    *,
    where: str | None = None,
    budget: int,
    seeds: Sequence[int] = (1, 2, 3, 4, 5),
    tune_seeds: int | Sequence[int] = (0,),
    optimizers: Sequence[str] | None = None,
    bfn_lr: float | None = None,
    lr_range: tuple[float, float] | None = None,
    output: str | os.PathLike | None = None,
    label: str = "best g",
    lr_sweep: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> Comparison:
    """Tune the baselines, train every row on ``seeds``, and (if ``output``) write the table.

    Args:
        spec: a ``metabp.targets.TargetSpec`` (its optimizer and lr are "plain backprop").
        bfn: the b-function under test (or a ``metabp.PerSite``, one per site); None: baselines only.
        where: patch site; None for the spec's own (and for a ``PerSite``: its sites patch).
        budget: trials to tune each baseline's lr and "lr tuned alone" (the study's trials).
        seeds: held-out evaluation seeds (each row trains once per seed).
        tune_seeds: the seeds a tuning trial averages over (the study's search seeds).
        optimizers: baselines to tune; default all ten of :data:`BASELINES`.
        bfn_lr: the lr searched together with ``bfn`` (the row is then "g + its lr").
        lr_range: where "lr tuned alone" searches (the study's lr range); default
            ``spec.lr`` times ``MULTIPLIER_RANGE``.
        output: folder for ``compare.md``, ``compare.csv``, ``compare_loss.png``.
        label: the row name of ``bfn``.
        lr_sweep: this many lrs around the tuned ones for ``bfn`` and backprop on ``seeds`` (0: none).
        device, data_dir: passed to ``metabp.targets.train_many``.
        progress: a tqdm bar over every training run.
    """
    from tqdm.auto import tqdm

    optimizers, seeds, tune_seeds = _check(optimizers, seeds, tune_seeds, budget, lr_sweep)
    bfn, sites = per_site(bfn, where)
    runs = (2 + len(optimizers) + (bfn is not None) * (1 + 2 * lr_sweep)) * len(seeds)
    bar = tqdm(total=budget * (len(optimizers) + 1) + runs, desc="compare", unit="run", disable=not progress)
    rows = _fixed_rows(spec, bfn, bfn_lr, label)
    rows += tune_methods(spec, optimizers=optimizers, budget=budget, seeds=tune_seeds, lr_range=lr_range,
                         device=device, data_dir=data_dir, bar=bar)
    results = evaluate(rows, seeds, where=where, device=device, data_dir=data_dir, bar=bar)
    lrs = {r.kind: r.lr for r in results}
    sweep = None if not lr_sweep or bfn is None else run_sweep(
        spec, bfn, g_lr=lrs["bfn"], tuned_lr=lrs["control"], seeds=seeds, tune_seeds=tune_seeds, n=lr_sweep,
        where=where, device=device, data_dir=data_dir, bar=bar)
    bar.close()
    results.sort(key=lambda r: (r.aulc[0], r.label))
    result = Comparison(results, spec.optimizer, seeds, budget, tune_seeds, getattr(spec, "name", "target"),
                        where, sweep=sweep, sites=sites)
    result.markdown = to_markdown(result)
    if output is not None:
        result.files = write(result, output)
    return result
