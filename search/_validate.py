"""Held-out validation: the search's best candidates and two controls on seeds the search never saw.

A search ranks candidates on its ``seeds``; its best score is biased low (it fits those seeds'
noise). ``[validate] seeds`` gives independent seeds on which are trained, with the same kind of
score as the search (``_score.py``):

- the ``top_k`` candidates by search score (study user attr ``heldout_aulc:<number>``, shown by
  :attr:`Study.trials` as the trial's ``heldout_aulc``: ``{mean, std, seeds, values, per_seed}``);
- plain backprop at the targets' own lr (``heldout_controls["backprop"]``);
- when the study searches ``lr``: backprop with its lr tuned on the *search* seeds with the same
  trial budget (an Optuna study ``<name>:tuned_lr`` in the same storage, same sampler, log scale),
  then scored on the held-out seeds (``heldout_controls["tuned_lr"]``, with its ``lr``).

Every piece is stored as soon as it is measured, so a killed validation resumes where it stopped
(``metabp validate`` or ``metabp search --resume``). Validation runs in one process at a time.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from metabp.exceptions import ConfigError

from ._samplers import make_sampler
from ._score import backprop_aulcs, backprop_summary, score

if TYPE_CHECKING:
    from ._study import Study

HELDOUT = "heldout_aulc:"


def validate(study: Study, *, progress: bool = True) -> dict[str, Any]:
    """Validate ``study`` (module docstring); ``{"trials": {number: heldout_aulc}, **controls}``."""
    cfg = study.config
    seeds = list(cfg.validate_seeds)
    if not seeds:
        raise ConfigError(f"study {study.name!r} has no held-out seeds; add a [validate] table, e.g. "
                          "seeds = [100, 101, 102, 103, 104] and top_k = 5, to the study file")
    if not study.completed():
        raise ConfigError(f"study {study.name!r} has no completed trial yet; run `metabp search` first")
    if not study.can_train_backprop:
        raise ConfigError("validation trains plain backprop; this study's evaluator takes candidates only")
    controls = study.heldout_controls
    if (controls.get("backprop") or {}).get("seeds") != seeds:
        aulcs = backprop_aulcs(cfg, study.evaluator, seeds)
        controls["backprop"] = backprop_summary(cfg, aulcs, seeds)
        study.optuna_study.set_user_attr("heldout_controls", controls)
    base = controls["backprop"]["per_target"]
    if cfg.lr_bounds and (controls.get("tuned_lr") or {}).get("seeds") != seeds:
        lr = tune_lr(study, progress=progress)
        s = score(cfg, study.evaluator, [None], [lr], seeds, base)[0]
        controls["tuned_lr"] = {**s.summary(seeds), "lr": lr}
        study.optuna_study.set_user_attr("heldout_controls", controls)
    top = sorted(study.completed(), key=lambda t: (t.value, t.number))[: cfg.validate_top_k]
    todo = [t for t in top if (t.user_attrs.get("heldout_aulc") or {}).get("seeds") != seeds]
    if todo:
        gs = [study.bfn_of(t) for t in todo]
        scores = score(cfg, study.evaluator, gs, [study.lr_of(t) for t in todo], seeds, base)
        for t, s in zip(todo, scores, strict=True):
            held = {**s.summary(seeds), "per_seed": s.per_seed}
            study.optuna_study.set_user_attr(f"{HELDOUT}{t.number}", held)
    held = {t.number: t.user_attrs["heldout_aulc"] for t in study.completed()
            if "heldout_aulc" in t.user_attrs}
    return {"trials": held, **study.heldout_controls}


def tune_lr(study: Study, *, progress: bool = True) -> float:
    """Backprop's best lr on the search seeds, ``config.n_trials`` trials (resumes what is stored)."""
    cfg = study.config
    sampler = make_sampler(cfg.sampler, bounds=[cfg.lr_bounds], names=["lr"],
                           n_initial=min(cfg.n_initial, cfg.n_trials), seed=cfg.sampler_seed, log=[True])
    sub = optuna.create_study(study_name=f"{cfg.name}:tuned_lr", storage=study.storage, sampler=sampler,
                              direction="minimize", load_if_exists=True)
    study_id = study.storage.get_study_id_from_name(sub.study_name)
    for t in sub.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed run
        study.storage.set_trial_state_values(
            study.storage.get_trial_id_from_study_id_trial_number(study_id, t.number), TrialState.FAIL)
    base = (study.ensure_backprop() or {}).get("per_target")
    from tqdm.auto import tqdm

    done = len(sub.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    with tqdm(total=cfg.n_trials, initial=done, disable=not progress, desc=f"{cfg.name}: tune backprop lr",
              unit="trial", file=sys.stderr, dynamic_ncols=True) as bar:
        while done < cfg.n_trials:
            with warnings.catch_warnings():  # an RDB storage's heartbeat is for study.optimize
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = sub.ask()
            lr = trial.suggest_float("lr", *cfg.lr_bounds, log=True)
            s = score(cfg, study.evaluator, [None], [lr], cfg.seeds, base)[0]
            sub.tell(trial, s.value)
            done += 1
            bar.update(1)
            bar.set_postfix_str(f"best {sub.best_value:.5g} at lr {sub.best_params['lr']:.3g}", refresh=False)
    return float(sub.best_params["lr"])


def format_heldout(study: Study) -> str:
    """Lines: each validated trial's and each control's held-out score (mean ± std)."""
    controls = study.heldout_controls
    seeds = (controls.get("backprop") or {}).get("seeds", [])
    lines = [f"{study.name}: held-out seeds {seeds}"]
    for t in sorted(study.completed(), key=lambda t: t.number):
        h = t.user_attrs.get("heldout_aulc")
        if h is not None:
            lines.append(f"  trial {t.number:>4}  search {t.value:.5g}  "
                         f"held-out {h['mean']:.5g} ± {h['std']:.2g}")
    for name, label in (("backprop", "backprop"), ("tuned_lr", "backprop, tuned lr")):
        c = controls.get(name)
        if c is not None:
            extra = f" (lr {c['lr']:.3g})" if "lr" in c else ""
            lines.append(f"  {label}{extra}: held-out {c['mean']:.5g} ± {c['std']:.2g}")
    return "\n".join(lines)
