"""metabp.analysis: what a b-function does, in numbers and pictures.

* :func:`gradient_alignment` / :func:`alignment_run`: cosine per layer between the true backprop
  gradient and the gradient a patched model applies.
* :func:`compare` / :func:`compare_study`: a b-function against plain backprop, each baseline
  optimizer with a tuned learning rate, and a tuned learning-rate multiplier, over seeds.
* :func:`report` / :func:`report_study`: ``index.md`` with a study's findings and figures.

This package reaches into ``metabp.targets`` and ``metabp.search``; nothing in the core imports it.

Example::

    from metabp.analysis import compare_study, report_study
    compare_study("studies/quickstart.toml", seeds=5, output="report/")
    report_study("studies/quickstart.toml", output="report/")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metabp.analysis._alignment import (
    AlignmentTrace,
    alignment_over_training,
    cosine_by_layer,
    gradient_alignment,
)
from metabp.analysis._compare import BASELINES, LR_RANGES, Comparison, MethodResult, compare, tune_lr
from metabp.analysis._report import alignment_run, report, trial_bfn


def _open_study(study: Any, storage: str | None) -> Any:
    from metabp.search import Study

    return study if hasattr(study, "optuna_study") else Study(study, storage=storage)


def baseline_studies(study: Any) -> dict[str, list]:
    """Other studies in ``study``'s storage with the same target, site, seed and search space.

    They are the random/TPE/... baseline searches of the same problem; keys are their sampler
    (``"random"``), values their trials.
    """
    import optuna

    ident = study.optuna_study.user_attrs.get("metabp:config")
    out: dict[str, list] = {}
    if ident is None:
        return out
    storage = study.optuna_study._storage
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name == study.name or summary.user_attrs.get("metabp:config") != ident:
            continue
        sampler = summary.user_attrs.get("metabp:sampler", summary.study_name)
        label = sampler if sampler not in out else f"{sampler} ({summary.study_name})"
        other = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[label] = other.get_trials(deepcopy=False)
    return out


def compare_study(
    study: Any,
    *,
    storage: str | None = None,
    seeds: int = 5,
    budget: int | None = None,
    optimizers: list[str] | None = None,
    output: str | os.PathLike | None = "report",
    device: str | None = None,
    progress: bool = False,
) -> Comparison:
    """:func:`compare` for a study: its best ``g``, target and budget.

    Args:
        study: a study file path, a ``StudyConfig`` or a ``metabp.search.Study``.
        storage: the study's storage URL (default: the study file's own).
        seeds: number of evaluation seeds; they are ``seed+1 .. seed+seeds`` for the study's
            training ``seed``, so no method is scored on the seed it was tuned (or searched) on.
        budget: training runs to tune each baseline; default the study's completed trials.
        optimizers: baselines; default all ten.
        output: folder for ``compare.md``, ``compare.csv``, ``compare_loss.png`` (None: none).
        device: training device; default the study's.
        progress: a tqdm bar.
    """
    from metabp.exceptions import ConfigError

    st = _open_study(study, storage)
    cfg = st.config
    if not st.completed():
        raise ConfigError(f"study {st.name!r} has no completed trials; run `metabp search` first")
    if int(seeds) < 1:
        raise ConfigError(f"seeds={seeds!r}: give at least 1 evaluation seed")
    return compare(
        cfg.target_spec(), st.best_bfn(), where=cfg.where,
        budget=int(budget) if budget is not None else len(st.completed()),
        seeds=[cfg.seed + 1 + i for i in range(int(seeds))], tune_seed=cfg.seed, optimizers=optimizers,
        output=output, label=f"best g (trial {st.best_trial.number})", device=device or cfg.device,
        data_dir=cfg.data_dir, progress=progress,
    )


def report_study(
    study: Any,
    *,
    storage: str | None = None,
    output: str | os.PathLike = "report",
    top: int = 10,
    alignment: bool = True,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """:func:`report` for a study: writes ``output/index.md`` and returns its path."""
    st = _open_study(study, storage)
    cfg = st.config
    return report(
        st.trials, spec=cfg.target_spec(), output=output, where=cfg.where, hidden=cfg.hidden, act=cfg.act,
        name=st.name, sampler=cfg.sampler, baselines=baseline_studies(st), seed=cfg.seed, top=top,
        alignment=alignment, device=device or cfg.device, data_dir=cfg.data_dir, progress=progress,
    )


__all__ = [
    "gradient_alignment", "alignment_over_training", "alignment_run", "cosine_by_layer", "AlignmentTrace",
    "compare", "compare_study", "tune_lr", "Comparison", "MethodResult", "BASELINES", "LR_RANGES",
    "report", "report_study", "trial_bfn", "baseline_studies",
]
