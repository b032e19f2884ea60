r"""The study: an Optuna study whose trials are candidate meta-network weights ``omega``.

Each trial is one candidate ``g_omega`` (params ``omega_i``, ``i < StudyConfig.num_params``, and ``lr`` when
searched) trained on the study's seeds and targets; its value (minimised) is ``_score.py``'s score.

- trial user attrs: ``per_seed`` (one dict per target and seed), ``step_losses`` (first target
  and seed), ``seconds``, ``diverged``;
- study user attrs: ``backprop`` (backprop's score on the search seeds, ``{mean, std, seeds,
  values, per_target}``), ``heldout_controls`` and one ``heldout_aulc:<number>`` per validated
  trial (``_validate.py``); :attr:`Study.trials` shows the latter as the trial's user attr
  ``heldout_aulc`` (Optuna does not let a finished trial's attrs change).

Workers: any number of processes may share one storage (``_workers.py`` fails dead workers'
trials and queues their points again). The budget counts completed, running and waiting trials; a
trial created past the budget by a race between workers is failed at once, before any parameter
is drawn (system attr ``metabp:surplus``), and of two workers that propose the same point at the
same moment one fails its twin and proposes again (``metabp:duplicate_of``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from metabp import MetaNet, PerSite
from metabp.exceptions import ConfigError

from . import _schema as schema
from ._config import StudyConfig
from ._load import load_study
from ._progress import progress_bar, quiet_optuna, split_line, time_split
from ._samplers import make_sampler
from ._score import Evaluator, backprop_aulcs, backprop_summary, score, train_evaluator, trains_backprop
from ._storage import HEARTBEAT_GRACE_S, get_storage
from ._validate import Candidate, ValidationRun, format_heldout, heldout_verdict, validate
from ._workers import CHECKED, Workers, duplicate_of


class Study:
    """A b-function search: candidates ``omega`` proposed by a sampler, scored by AULC, kept in Optuna.

    Args:
        config: a :class:`StudyConfig` or the path of a study file.
        storage: storage URL or object; default ``config.storage``, else a journal file beside the
            study file (safe for several worker processes on one machine).
        evaluate: an :class:`~metabp.search._score.Evaluator` (default :func:`train_evaluator`);
            tests pass cheap ones, a seed-free objective wrapped in ``CandidatesOnly``.
        heartbeat_grace: seconds after which a silent worker's RUNNING trial counts as dead.
        create: create the study if the storage lacks it (``False``: raise ``ConfigError``).

    Example::

        study = Study("studies/quickstart.toml")
        study.optimize()                  # resumes where it stopped, validates at the end
        study.export("best.bfn")          # the best held-out candidate
    """

    def __init__(self, config: StudyConfig | str | Path, storage: str | BaseStorage | None = None, *,
                 evaluate: Evaluator | None = None, heartbeat_grace: float = HEARTBEAT_GRACE_S,
                 create: bool = True) -> None:
        self.config = cfg = config if isinstance(config, StudyConfig) else load_study(config)
        self.storage_url = storage if storage is not None else cfg.default_storage()
        self.storage = get_storage(self.storage_url, grace_period=int(heartbeat_grace), create=create)
        exists = cfg.name in optuna.get_all_study_names(self.storage)
        if not create and not exists:
            raise ConfigError(f"no study named {cfg.name!r} in storage {self.storage_url}; run "
                              f"`metabp search {cfg.path or '<study file>'}` first (or pass its --storage)")
        self.sampler = make_sampler(cfg.sampler, bounds=cfg.search_bounds, names=cfg.param_names,
                                    n_initial=cfg.n_initial, seed=cfg.sampler_seed,
                                    acquisition=cfg.acquisition, log=cfg.search_log)
        with quiet_optuna():  # an existing study is only read: a refused open writes nothing
            self.optuna_study = (optuna.load_study if exists else optuna.create_study)(
                study_name=cfg.name, storage=self.storage, sampler=self.sampler,
                **({} if exists else {"direction": "minimize", "load_if_exists": True}))
        self._check_identity()
        self.workers = Workers(self.optuna_study, self.storage, grace=heartbeat_grace)
        self._evaluate, self.can_train_backprop = evaluate, evaluate is None or trains_backprop(evaluate)
        self.last_time_split: dict[str, float] = {}

    def _check_identity(self) -> None:
        ident, stored = self.config.identity(), self.optuna_study.user_attrs.get(schema.CONFIG)
        if stored is None:
            self.optuna_study.set_user_attr(schema.CONFIG, ident)
            self.optuna_study.set_user_attr(schema.SAMPLER, self.config.sampler)
            return
        # `sites` is in an identity only when set: a study stored with it differs from a file without
        for k in [*ident, *(["sites"] if "sites" in stored and "sites" not in ident else [])]:
            if stored.get(k) != ident.get(k):
                raise ConfigError(
                    f"study {self.config.name!r} in storage {self.storage_url!s} was created with "
                    f"{k} = {stored.get(k)!r}, the study file says {ident.get(k)!r}; use the original "
                    "settings or a new study name (name = ... in the study file)")

    # --- read ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluate is None:
            self._evaluate = train_evaluator(self.config)
        return self._evaluate

    @property
    def trials(self) -> list[FrozenTrial]:
        """Every trial (any state), in creation order; validated ones carry user attr ``heldout_aulc``."""
        attrs = self.optuna_study.user_attrs
        out = []
        for t in self.optuna_study.get_trials(deepcopy=False):
            held = attrs.get(schema.heldout_key(t.number))
            if held is not None:
                t = copy.copy(t)
                t.user_attrs = {**t.user_attrs, schema.HELDOUT_AULC: held}
            out.append(t)
        return out

    def completed(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def best_trial(self) -> FrozenTrial:
        """The completed trial with the lowest search score."""
        done = self.completed()
        if not done:
            raise ConfigError(f"study {self.name!r} has no completed trial yet; run `metabp search` first")
        return min(done, key=lambda t: (t.value, t.number))

    def best_heldout_trial(self) -> FrozenTrial | None:
        """The validated trial with the lowest held-out score (``None`` if none is validated)."""
        key = schema.HELDOUT_AULC
        held = [t for t in self.completed() if key in t.user_attrs]
        return min(held, key=lambda t: (t.user_attrs[key]["mean"], t.number)) if held else None

    @property
    def backprop(self) -> dict[str, Any] | None:
        """Backprop's score on the search seeds ``{mean, std, seeds, values, per_target}``, if measured."""
        return self.optuna_study.user_attrs.get(schema.BACKPROP)

    @property
    def heldout_controls(self) -> dict[str, Any]:
        """The controls' held-out scores: ``backprop`` and (lr searched) ``tuned_lr``."""
        return dict(self.optuna_study.user_attrs.get(schema.HELDOUT_CONTROLS) or {})

    def omega_of(self, trial: FrozenTrial | optuna.Trial) -> torch.Tensor:
        """The trial's ``omega`` (float64, ``num_params``)."""
        return torch.tensor([trial.params[schema.omega(i)] for i in range(self.config.num_params)],
                            dtype=torch.float64)

    def lr_of(self, trial: FrozenTrial | optuna.Trial) -> float | None:
        """The trial's learning rate (``None``: the targets' own)."""
        return float(trial.params[schema.LR]) if self.config.lr_bounds else None

    def bfn_of(self, trial: FrozenTrial) -> MetaNet | PerSite:
        """The trial's meta-network (with ``sites``: a ``PerSite``, site ``j`` the MetaNet of omega's
        ``j``-th chunk), ``meta`` filled with its provenance (and held-out score)."""
        cfg = self.config
        g = cfg.candidate(self.omega_of(trial))
        g.meta = {"study": self.name, "trial": trial.number, "score": trial.value,
                  "target": cfg.target, "targets": [t.preset for t in cfg.targets],
                  "overrides": dict(cfg.overrides), "where": cfg.where, "search_seeds": list(cfg.seeds),
                  "sampler": cfg.sampler, "study_file": Path(cfg.path).name if cfg.path else None,
                  **({"sites": list(cfg.sites)} if cfg.sites else {})}
        if not cfg.multi_target:  # one target: the score is a mean AULC (several: a ratio to backprop)
            g.meta["aulc"] = trial.value
        if cfg.lr_bounds:
            g.meta["lr"] = self.lr_of(trial)
        held = trial.user_attrs.get(schema.HELDOUT_AULC)
        if held is not None:
            g.meta.update(heldout_aulc={"mean": held["mean"], "std": held["std"]}, seeds=list(held["seeds"]))
        return g

    def best_bfn(self) -> MetaNet | PerSite:
        """The best held-out candidate's meta-network, else the best search score's."""
        return self.bfn_of(self.best_heldout_trial() or self.best_trial)

    def export(self, path: str | os.PathLike, *, trial: int | None = None) -> Path:
        """Save the best (held-out first) or trial number ``trial``'s b-function as a ``.bfn`` file.

        ``meta["chosen_by"]`` says why: ``"heldout_aulc"``, ``"search score"`` or ``"trial"``.
        """
        import metabp

        if trial is None:
            held = self.best_heldout_trial()
            g = self.bfn_of(held or self.best_trial)
            g.meta["chosen_by"] = "heldout_aulc" if held is not None else "search score"
        else:
            found = [t for t in self.completed() if t.number == trial]
            if not found:
                raise ConfigError(f"trial={trial}: no completed trial with that number in study "
                                  f"{self.name!r}")
            g = self.bfn_of(found[0])
            g.meta["chosen_by"] = "trial"
        return metabp.save(g, path)

    def time_split(self, trials: Sequence[FrozenTrial] | None = None) -> dict[str, float]:
        """Seconds spent training and proposing, summed over ``trials`` (default all)."""
        return time_split(self.trials if trials is None else trials)

    def reap_stale(self) -> list[int]:
        """Fail RUNNING trials of dead workers and queue their points again; returns their numbers."""
        return self.workers.reap_stale(self.config.param_names)

    # --- run ----------------------------------------------------------------------------------
    def optimize(self, n_trials: int | None = None, *, progress: bool = True, validate: bool = True) -> Study:
        """Run trials until the study's budget (``config.n_trials`` completed) is met, then validate.

        Resumes: completed trials count, dead workers' RUNNING trials are failed and re-proposed.
        ``n_trials`` caps how many new trials *this call* runs (Optuna's meaning). With
        ``acquisition = "qlogei"`` the ``q`` candidates of a batch train together. Backprop's
        score on the search seeds is measured once per study. When the budget is met and the study
        has held-out seeds (``[validate]``), :meth:`validate` runs (it skips what is stored).
        """
        if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int)
                                     or n_trials < 0):
            raise ConfigError(f"optimize(n_trials={n_trials!r}): must be an integer >= 0 or None")
        with quiet_optuna():
            self.reap_stale()
            done = self._occupied()[0]
            if done >= self.config.n_trials:
                if progress:
                    print(f"{self.name}: complete, {done}/{self.config.n_trials} trials; {self._best_text()}",
                          file=sys.stderr)
            else:
                if progress and self.backprop is None and self.can_train_backprop:
                    print(f"{self.name}: training plain backprop on seeds {list(self.config.seeds)} "
                          "(the baseline)", file=sys.stderr)
                self.ensure_backprop()
                self._run(math.inf if n_trials is None else n_trials, progress)
            if validate and self.config.validate_seeds and self._occupied()[0] >= self.config.n_trials:
                self.validate(progress=progress)
                if progress:
                    print(format_heldout(self), file=sys.stderr)
        return self

    def _run(self, cap: float, progress: bool) -> None:
        cfg, t_start, ran = self.config, time.perf_counter(), []
        bar = progress_bar(total=cfg.n_trials, enabled=progress, name=self.name)
        self._update_bar(bar)
        try:
            with self.workers.heartbeat():
                while len(ran) < cap:
                    self.reap_stale()
                    k = int(min(cfg.q, cfg.n_trials - self._occupied()[1], cap - len(ran)))
                    batch = self._ask_batch(k) if k > 0 else []
                    if not batch:
                        break
                    self._run_batch(batch)
                    ran.extend(t.number for t in batch)
                    self._update_bar(bar)
        finally:
            bar.close()
        self._report(ran, time.perf_counter() - t_start, progress)

    def ensure_backprop(self) -> dict[str, Any] | None:
        """Backprop's score on the search seeds, measured once per study (study user attr ``backprop``)."""
        stored = self.backprop
        if stored is not None and stored.get("seeds") == list(self.config.seeds):
            return stored
        if not self.can_train_backprop:
            return None
        aulcs = backprop_aulcs(self.config, self.evaluator, self.config.seeds)
        summary = backprop_summary(self.config, aulcs, self.config.seeds)
        self.optuna_study.set_user_attr(schema.BACKPROP, summary)
        return summary

    def validate(self, *, progress: bool = True) -> dict[str, Any]:
        """Train the top candidates and the controls on the held-out seeds (see ``_validate.py``)."""
        cfg, done = self.config, self.completed()
        top = [Candidate(t.number, t.value, self.bfn_of(t), self.lr_of(t))
               for t in sorted(done, key=lambda t: (t.value, t.number))[: cfg.validate_top_k]]
        with quiet_optuna():
            base = (self.ensure_backprop() or {}).get("per_target") if cfg.lr_bounds else None
            validate(ValidationRun(
                cfg, self.evaluator, top,
                self._held(done), self.heldout_controls, base, self.storage, self.optuna_study.set_user_attr),
                progress=progress)
        return {"trials": self._held(self.completed()), **self.heldout_controls}

    @staticmethod
    def _held(trials: Sequence[FrozenTrial]) -> dict[int, dict[str, Any]]:
        key = schema.HELDOUT_AULC
        return {t.number: t.user_attrs[key] for t in trials if key in t.user_attrs}

    def heldout_verdict(self) -> str | None:
        """One line: the best held-out candidate against the better control on the held-out seeds
        (``None`` before validation)."""
        best, controls = self.best_heldout_trial(), self.heldout_controls
        if best is None or schema.CONTROL_BACKPROP not in controls:
            return None
        return heldout_verdict(best.number, best.user_attrs[schema.HELDOUT_AULC], controls)

    def _occupied(self) -> tuple[int, int]:
        """(completed, completed + running + waiting) trial counts."""
        states = [t.state for t in self.optuna_study.get_trials(deepcopy=False)]
        done = states.count(TrialState.COMPLETE)
        return done, done + states.count(TrialState.RUNNING) + states.count(TrialState.WAITING)

    def _claim(self) -> optuna.Trial | None:
        """Ask for one trial within the budget (``None`` when the budget is taken)."""
        with warnings.catch_warnings():  # RDB heartbeat: recorded by self.workers, not study.optimize
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = self.optuna_study.ask()
        self.workers.claim(trial.number)
        live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        before = sum(1 for t in self.optuna_study.get_trials(deepcopy=False)
                     if t.number < trial.number and t.state in live)
        if before >= self.config.n_trials:  # a race with another worker: give the number back unused
            self.workers.set_system_attr(trial.number, schema.SURPLUS, True)
            self.optuna_study.tell(trial, state=TrialState.FAIL)
            self.workers.release(trial.number)
            return None
        return trial

    def _ask_batch(self, k: int) -> list[optuna.Trial]:
        cfg, batch, attempts = self.config, [], 0
        while len(batch) < k and attempts < 4 * k:
            attempts += 1
            t0 = time.perf_counter()
            trial = self._claim()
            if trial is None:
                break
            for name, (lo, hi), log in zip(cfg.param_names, cfg.search_bounds, cfg.search_log, strict=True):
                trial.suggest_float(name, lo, hi, log=log)
            self.workers.set_system_attr(trial.number, schema.PROPOSE_SECONDS, time.perf_counter() - t0)
            twin = self._duplicate_of(trial)
            if twin is not None:  # another worker proposed the same point at the same moment
                self.workers.set_system_attr(trial.number, schema.DUPLICATE_OF, twin)
                self.optuna_study.tell(trial, state=TrialState.FAIL)
                self.workers.release(trial.number)
                continue
            self.workers.set_system_attr(trial.number, CHECKED, True)
            batch.append(trial)
        return batch

    def _duplicate_of(self, trial: optuna.Trial) -> int | None:
        live = self.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        return duplicate_of(trial, live, self.config.param_names, self.config.search_bounds)

    def _run_batch(self, batch: list[optuna.Trial]) -> None:
        cfg = self.config
        gs = [cfg.candidate(self.omega_of(t)) for t in batch]
        lrs = [self.lr_of(t) for t in batch]
        base = (self.backprop or {}).get("per_target")
        try:
            scores = score(cfg, self.evaluator, gs, lrs, cfg.seeds, base)
        except BaseException as exc:
            for trial in batch:
                with contextlib.suppress(Exception):
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    self.workers.set_system_attr(trial.number, schema.ERROR, error)
                    self.optuna_study.tell(trial, state=TrialState.FAIL)
                self.workers.release(trial.number)
            raise
        for trial, s in zip(batch, scores, strict=True):
            trial.set_user_attr(schema.PER_SEED, s.per_seed)
            trial.set_user_attr(schema.STEP_LOSSES, s.step_losses)
            trial.set_user_attr(schema.DIVERGED, s.diverged)
            trial.set_user_attr(schema.SECONDS, s.seconds)
            self.optuna_study.tell(trial, s.value)
            self.workers.release(trial.number)

    # --- progress -----------------------------------------------------------------------------
    def _best_text(self) -> str:
        if not self.completed():
            return "no completed trial yet"
        best = self.best_trial
        text = f"best {best.value:.5g}" + (" (diverged)" if best.user_attrs.get(schema.DIVERGED) else "")
        if self.backprop is not None:
            text += f", backprop {self.backprop['mean']:.5g}"
        return text

    def _update_bar(self, bar: Any) -> None:
        bar.n = min(self._occupied()[0], bar.total)
        bar.set_postfix_str(self._best_text(), refresh=False)
        bar.refresh()

    def _report(self, ran: list[int], wall: float, progress: bool) -> None:
        numbers = set(ran)
        mine = [t for t in self.trials if t.number in numbers]
        split = self.time_split(mine)
        other = max(wall - split["training"] - split["proposing"], 0.0)
        self.last_time_split = {**split, "other": other, "wall": wall, "trials": len(mine)}
        if progress and mine and wall > 0:
            print(f"{split_line(self.name, self.last_time_split)}; {self._best_text()}", file=sys.stderr)
