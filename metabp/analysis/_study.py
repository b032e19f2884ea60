"""The analyses for a stored study: :func:`compare_study`, :func:`report_study`, baseline searches.

They read the study through the public ``metabp.search.Study`` (its config, trials, held-out
scores and controls) and Optuna's public API, and call :func:`~metabp.analysis.compare` and
:func:`~metabp.analysis.report` with the study's target, seeds and budget.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from metabp import is_per_site
from metabp.analysis._compare import Comparison, compare
from metabp.analysis._report import ReportFiles, report
from metabp.analysis._report_data import ReportRequest
from metabp.exceptions import ConfigError


def open_study(study: Any, storage: str | None = None) -> Any:
    """``study`` as a ``metabp.search.Study``: a study file path, a ``StudyConfig`` or a Study."""
    from metabp.search import Study

    return study if hasattr(study, "optuna_study") else Study(study, storage=storage, create=False)


def baseline_studies(study: Any) -> dict[str, list]:
    """Other studies in ``study``'s storage with the same configuration (target, seeds, search space).

    They are the random/TPE/... baseline searches of the same problem; keys are their sampler
    (``"random"``), values their trials.
    """
    import optuna

    from metabp.search import schema

    ident = study.optuna_study.user_attrs.get(schema.CONFIG)
    out: dict[str, list] = {}
    if ident is None:
        return out
    for summary in optuna.get_all_study_summaries(study.storage, include_best_trial=False):
        if summary.study_name == study.name or summary.user_attrs.get(schema.CONFIG) != ident:
            continue
        sampler = summary.user_attrs.get(schema.SAMPLER, summary.study_name)
        label = sampler if sampler not in out else f"{sampler} ({summary.study_name})"
        other = optuna.load_study(study_name=summary.study_name, storage=study.storage)
        out[label] = other.get_trials(deepcopy=False)
    return out


def heldout_seeds(cfg: Any, seeds: int | Sequence[int]) -> list[int]:
    """Evaluation seeds for ``compare``: ``seeds`` ints the search never used, or the ``seeds``
    seeds right above every search and validation seed of the study."""
    used = set(cfg.seeds) | set(getattr(cfg, "validate_seeds", ()))
    if isinstance(seeds, bool) or not isinstance(seeds, (int, Sequence)) or isinstance(seeds, str):
        raise ConfigError(f"seeds={seeds!r}: give a number of held-out seeds (int >= 1) or a list of ints")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds!r}: give at least 1 evaluation seed")
        start = max(used) + 1
        return list(range(start, start + seeds))
    both = sorted(set(seeds) & set(cfg.seeds))
    if both:
        raise ConfigError(f"seeds={list(seeds)!r}: {both} are search seeds of the study; held-out seeds must "
                          f"differ from {list(cfg.seeds)}")
    return list(seeds)


def _target(cfg: Any, target: str | None) -> tuple[Any, str]:
    names = [t.name for t in cfg.targets]
    index = 0 if target is None else names.index(target) if target in names else -1
    if index < 0:
        raise ConfigError(f"target={target!r} is not a target of this study; its targets: {', '.join(names)}")
    spec = cfg.target_spec(index)
    return spec, cfg.targets[index].where or spec.where


def compare_study(
    study: Any,
    *,
    storage: str | None = None,
    seeds: int | Sequence[int] = 5,
    budget: int | None = None,
    optimizers: list[str] | None = None,
    target: str | None = None,
    output: str | os.PathLike | None = "report",
    lr_sweep: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> Comparison:
    """:func:`compare` for a study: the ``g`` ``metabp export`` picks, the study's target and budget.

    The ``g`` row is the best held-out candidate when the study was validated, else the best
    search score; when the study searched ``lr``, it trains at that trial's lr ("g + its lr"),
    and "lr tuned alone" searches the study's lr range. Baselines are tuned on the search seeds.

    Args:
        study: a study file path, a ``StudyConfig`` or a ``metabp.search.Study``.
        storage: the study's storage URL (default: the study file's own).
        seeds: held-out evaluation seeds: a number ``n`` (the ``n`` seeds right above every search
            and validation seed, which neither the search nor the choice of ``g`` saw) or a list.
        budget: trials to tune each baseline; default the study's completed trials.
        optimizers: baselines; default all ten.
        target: which of the study's targets (preset name); default the first.
        output: folder for ``compare.md``, ``compare.csv``, ``compare_loss.png`` (None: none).
        lr_sweep: also train g and plain backprop at this many lrs around the tuned ones (0: none).
        device: training device; default the study's.
        progress: a tqdm bar.
    """
    st = open_study(study, storage)
    cfg = st.config
    done = st.completed()
    if not done:
        raise ConfigError(f"study {st.name!r} has no completed trials; run `metabp search` first")
    held = st.best_heldout_trial()
    trial = held or st.best_trial
    lr = st.lr_of(trial)
    how = "best held-out" if held is not None else "best search score"
    label = f"g{' + its lr' if lr is not None else ''} (trial {trial.number}, {how})"
    spec, where = _target(cfg, target)
    budget = int(budget) if budget is not None else len(done)
    g = st.bfn_of(trial)
    where = None if is_per_site(g) else where
    return compare(spec, g, where=where, budget=budget, seeds=heldout_seeds(cfg, seeds),
                   tune_seeds=list(cfg.seeds), optimizers=optimizers, bfn_lr=lr, lr_range=cfg.lr_bounds,
                   output=output, label=label, lr_sweep=lr_sweep, device=device or cfg.device,
                   data_dir=cfg.data_dir, progress=progress)


def report_study(
    study: Any,
    *,
    storage: str | None = None,
    output: str | os.PathLike = "report",
    top: int = 10,
    alignment: bool = True,
    device: str | None = None,
    progress: bool = False,
) -> ReportFiles:
    """:func:`report` for a study: writes ``output/index.md`` and its PNGs, returns their paths."""
    st = open_study(study, storage)
    cfg = st.config
    spec, where = _target(cfg, None)
    sites = tuple(getattr(cfg, "sites", ()) or ())
    request = ReportRequest(spec, where=None if sites else where, sites=sites, hidden=cfg.hidden, act=cfg.act,
                            name=st.name,
                            sampler=cfg.sampler, seeds=list(cfg.seeds), backprop=st.backprop,
                            controls=st.heldout_controls, multi_target=cfg.multi_target,
                            baselines=baseline_studies(st), top=top, alignment=alignment,
                            device=device or cfg.device, data_dir=cfg.data_dir, progress=progress)
    return report(st.trials, request, output)
