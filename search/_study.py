r"""The study: an Optuna study whose trials are candidate meta-network weights ``omega``.

Each trial is one candidate ``g_omega`` (params ``omega_0 .. omega_{P-1}``) trained on the target;
its value is the area under the training-loss curve,

.. math:: \mathrm{AULC}(\omega) = \frac{1}{T} \sum_{t=1}^{T} L_t(\theta_t; g_\omega),

the mean per-step training loss (``metabp.targets``), to be minimised; its user attrs keep
``step_losses``, ``epoch_losses``, ``diverged``, ``seconds`` (training) and ``test_accuracy``.
A diverged run is scored by the targets' finite penalty AULC, recorded like any other.

Workers. Any number of processes (``Study.optimize`` in each) may share one storage. Each worker
marks the trials it runs with its host, process id and a heartbeat; a RUNNING trial whose process
is gone (same host) or whose heartbeat is older than ``heartbeat_grace`` seconds (another host) is
marked FAIL by whichever worker notices first, and its point is enqueued again, so a killed worker
loses nothing completed and its unfinished points are proposed again. The budget counts
completed, running and waiting trials; a trial created past the budget by a race between workers
is failed at once, before any parameter is drawn (system attr ``metabp:surplus``), and of two
workers that propose the same point at the same moment one fails its twin and proposes again
(``metabp:duplicate_of``), so no point is trained twice.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from metabp import MetaNet
from metabp.exceptions import ConfigError

from ._config import StudyConfig, load_study
from ._samplers import make_sampler
from ._storage import get_storage

#: Seconds between a worker's heartbeats on its running trials.
HEARTBEAT_S = 15.0
#: A RUNNING trial from another host is stale after this many seconds without a heartbeat.
HEARTBEAT_GRACE_S = 120.0
#: Score given to a run whose AULC is not finite when the targets layer gave no penalty.
FALLBACK_PENALTY = 1e3

_WORKER = "metabp:worker"
_HEARTBEAT = "metabp:heartbeat"
_PROPOSE = "metabp:propose_seconds"
_CHECKED = "metabp:checked"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Evaluation:
    """What one candidate's training returns (``metabp.targets.Run`` has these fields)."""

    aulc: float
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")
    diverged: bool = False
    seconds: float = 0.0


#: Trains candidates: ``evaluate([g_1, ..., g_k]) -> [run_1, ..., run_k]`` (Run-like objects).
Evaluator = Callable[[list[MetaNet]], Sequence[Any]]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` from /proc (``None``: process gone or zombie); ``""`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _this_worker() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _proc_start(pid) or ""}


def _worker_alive(worker: dict[str, Any]) -> bool | None:
    """``True``/``False`` when ``worker`` ran on this machine, ``None`` when it is another host."""
    if worker.get("host") != socket.gethostname() or worker.get("boot") != _boot_id():
        return None
    pid = int(worker.get("pid", -1))
    start = _proc_start(pid)
    if start is None:
        return False
    if start == "":  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return start == worker.get("start", start)


def _finite_list(xs: Sequence[float] | None) -> list[float | None]:
    return [float(x) if math.isfinite(float(x)) else None for x in (xs or [])]


def _penalty() -> float:
    try:
        import metabp.targets as t
    except ImportError:
        return FALLBACK_PENALTY
    for name in ("DIVERGED_AULC", "DIVERGED_PENALTY"):
        if isinstance(getattr(t, name, None), int | float):
            return float(getattr(t, name))
    return FALLBACK_PENALTY


def train_evaluator(cfg: StudyConfig) -> Evaluator:
    """The default evaluator: ``metabp.targets.train`` (one) / ``train_many`` (a batch)."""
    from metabp.targets import train, train_many

    spec = cfg.target_spec()
    kw = {"device": cfg.device, "data_dir": cfg.data_dir}

    def evaluate(gs: list[MetaNet]) -> Sequence[Any]:
        if len(gs) == 1:
            return [train(spec, bfn=gs[0], where=cfg.where, seed=cfg.seed, **kw)]
        return train_many(spec, gs, where=cfg.where, seed=cfg.seed, **kw)

    return evaluate


class Study:
    """A b-function search: candidates ``omega`` proposed by a sampler, scored by AULC, kept in Optuna.

    Args:
        config: a :class:`StudyConfig` or the path of a study file.
        storage: storage URL or object; default ``config.storage``, else a journal file beside the
            study file (safe for several worker processes on one machine).
        evaluate: trains candidates (default :func:`train_evaluator`); tests pass cheap functions.
        heartbeat_grace: seconds after which another host's silent RUNNING trial counts as dead.
        create: create the study if the storage lacks it (``False``: raise ``ConfigError``).

    Example:
        >>> study = Study("studies/quickstart.toml")          # doctest: +SKIP
        >>> study.optimize()                                  # doctest: +SKIP
        >>> g = study.best_bfn(); study.export("best.bfn")    # doctest: +SKIP
    """

    def __init__(
        self,
        config: StudyConfig | str | Path,
        storage: str | BaseStorage | None = None,
        *,
        evaluate: Evaluator | None = None,
        heartbeat_grace: float = HEARTBEAT_GRACE_S,
        create: bool = True,
    ) -> None:
        self.config = config if isinstance(config, StudyConfig) else load_study(config)
        cfg = self.config
        self.storage_url = storage if storage is not None else cfg.default_storage()
        self._storage = get_storage(self.storage_url)
        if not create and cfg.name not in optuna.get_all_study_names(self._storage):
            raise ConfigError(
                f"no study named {cfg.name!r} in storage {self.storage_url}; run `metabp search "
                f"{cfg.path or '<study file>'}` first (or pass the --storage it used)"
            )
        self.sampler = make_sampler(
            cfg.sampler,
            bounds=cfg.bounds,
            names=cfg.param_names,
            n_initial=cfg.n_initial,
            seed=cfg.sampler_seed,
            acquisition=cfg.acquisition,
        )
        self.optuna_study = optuna.create_study(
            study_name=cfg.name,
            storage=self._storage,
            sampler=self.sampler,
            direction="minimize",
            load_if_exists=True,
        )
        self._check_identity()
        self._evaluate = evaluate
        self.heartbeat_grace = float(heartbeat_grace)
        self._worker = _this_worker()
        self._mine: dict[int, int] = {}  # trial_id -> number, trials this process runs now
        self._lock = threading.Lock()
        self.last_time_split: dict[str, float] = {}

    # --- identity -----------------------------------------------------------------------------
    def _check_identity(self) -> None:
        key = "metabp:config"
        ident = self.config.identity()
        stored = self.optuna_study.user_attrs.get(key)
        if stored is None:
            self.optuna_study.set_user_attr(key, ident)
            self.optuna_study.set_user_attr("metabp:sampler", self.config.sampler)
            return
        for k, v in ident.items():
            if stored.get(k) != v:
                raise ConfigError(
                    f"study {self.config.name!r} in storage {self.storage_url!s} was created with "
                    f"{k} = {stored.get(k)!r}, the study file says {v!r}; use the original settings "
                    "or a new study name (name = ... in the study file)"
                )

    # --- read ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def trials(self) -> list[FrozenTrial]:
        """Every trial (any state), in creation order."""
        return self.optuna_study.get_trials(deepcopy=False)

    def completed(self) -> list[FrozenTrial]:
        return self.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    @property
    def best_trial(self) -> FrozenTrial:
        """The completed trial with the lowest AULC."""
        if not self.completed():
            raise ConfigError(f"study {self.name!r} has no completed trial yet; run `metabp search` first")
        return self.optuna_study.best_trial

    def omega_of(self, trial: FrozenTrial) -> torch.Tensor:
        """The trial's ``omega`` (float64, ``num_params``)."""
        return torch.tensor([trial.params[n] for n in self.config.param_names], dtype=torch.float64)

    def bfn_of(self, trial: FrozenTrial) -> MetaNet:
        """The trial's meta-network, ``meta`` filled with its provenance."""
        g = MetaNet(self.config.hidden, self.config.act, omega=self.omega_of(trial))
        g.meta = {
            "study": self.name,
            "score": trial.value,
            "trial": trial.number,
            "target": self.config.target,
            "overrides": dict(self.config.overrides),
            "where": self.config.where,
            "seed": self.config.seed,
            "sampler": self.config.sampler,
            "study_file": self.config.path,
        }
        return g

    def best_bfn(self) -> MetaNet:
        """The best trial's meta-network (``meta``: study, score, trial, target, where, ...)."""
        return self.bfn_of(self.best_trial)

    def export(self, path: str | os.PathLike, *, trial: int | None = None) -> Path:
        """Save the best (or trial number ``trial``) b-function as a ``.bfn`` file."""
        import metabp

        if trial is None:
            g = self.best_bfn()
        else:
            found = [t for t in self.trials if t.number == trial]
            if not found or found[0].state != TrialState.COMPLETE:
                raise ConfigError(
                    f"trial={trial}: no completed trial with that number in study {self.name!r}"
                )
            g = self.bfn_of(found[0])
        return metabp.save(g, path)

    def time_split(self, trials: Sequence[FrozenTrial] | None = None) -> dict[str, float]:
        """Seconds spent training and proposing, summed over ``trials`` (default all)."""
        trials = self.trials if trials is None else trials
        return {
            "training": sum(float(t.user_attrs.get("seconds") or 0.0) for t in trials),
            "proposing": sum(float(t.system_attrs.get(_PROPOSE) or 0.0) for t in trials),
        }

    # --- workers ------------------------------------------------------------------------------
    def reap_stale(self) -> list[int]:
        """Fail RUNNING trials of dead workers and enqueue their points again; returns their numbers."""
        reaped = []
        now = time.time()
        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in self._mine:
                continue
            worker = t.system_attrs.get(_WORKER)
            if worker is None:  # created by ask() but never claimed: trust it for the grace period
                beat = t.datetime_start.timestamp() if t.datetime_start else now
                alive = None
            else:
                beat = float(t.system_attrs.get(_HEARTBEAT, now))
                alive = _worker_alive(worker)
            if alive is None:
                alive = now - beat < self.heartbeat_grace
            if alive:
                continue
            try:
                changed = self._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # finished meanwhile, or another worker failed it first
            if not changed:
                continue
            reaped.append(t.number)
            names = self.config.param_names
            if all(n in t.params for n in names):
                self.optuna_study.enqueue_trial(
                    {n: t.params[n] for n in names}, user_attrs={"retry_of": t.number}
                )
        return reaped

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with self._lock:
                    ids = list(self._mine)
                for tid in ids:
                    with contextlib.suppress(Exception):  # finished meanwhile: nothing to do
                        self._storage.set_trial_system_attr(tid, _HEARTBEAT, time.time())

        thread = threading.Thread(target=beat, daemon=True, name="metabp-heartbeat")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _occupied(self) -> tuple[int, int]:
        """(completed, completed + running + waiting) trial counts."""
        done = busy = 0
        for t in self.optuna_study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                done += 1
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
                busy += 1
        return done, busy

    def _claim(self, budget: int) -> optuna.Trial | None:
        """Ask for one trial within the budget (``None`` when the budget is taken)."""
        trial = self.optuna_study.ask()
        tid = trial._trial_id
        self._storage.set_trial_system_attr(tid, _WORKER, self._worker)
        self._storage.set_trial_system_attr(tid, _HEARTBEAT, time.time())
        before = sum(
            1
            for t in self.optuna_study.get_trials(deepcopy=False)
            if t.number < trial.number
            and t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        )
        if before >= budget:  # a race with another worker: give the number back unused
            self._storage.set_trial_system_attr(tid, "metabp:surplus", True)
            self.optuna_study.tell(trial, state=TrialState.FAIL)
            return None
        with self._lock:
            self._mine[tid] = trial.number
        return trial

    # --- run ----------------------------------------------------------------------------------
    def optimize(self, n_trials: int | None = None, *, progress: bool = True) -> Study:
        """Run trials until the study's budget (``config.n_trials`` completed) is met.

        Resumes: completed trials count, dead workers' RUNNING trials are failed and re-proposed.
        ``n_trials`` caps how many new trials *this call* runs (Optuna's meaning). With
        ``acquisition = "qlogei"`` the ``q`` candidates of a batch are trained together
        (``train_many``). At the end prints how time split between training and proposing.
        """
        cfg = self.config
        evaluate = self._evaluate or train_evaluator(cfg)
        budget = cfg.n_trials
        cap = math.inf if n_trials is None else int(n_trials)
        if cap < 0:
            raise ConfigError(f"optimize(n_trials={n_trials}): must be >= 0 or None")
        t_start = time.perf_counter()
        ran: list[int] = []
        self.reap_stale()
        done, _ = self._occupied()
        bar = _progress(total=budget, initial=min(done, budget), enabled=progress, name=self.name)
        self._update_bar(bar)
        try:
            with self._heartbeat():
                while len(ran) < cap:
                    self.reap_stale()
                    _, busy = self._occupied()
                    k = int(min(cfg.q, budget - busy, cap - len(ran)))
                    if k <= 0:
                        break
                    batch = self._ask_batch(k, budget)
                    if not batch:
                        break
                    self._run_batch(batch, evaluate)
                    ran.extend(t.number for t, _ in batch)
                    self._update_bar(bar)
        finally:
            bar.close()
        self._report(ran, time.perf_counter() - t_start, progress)
        return self

    def _ask_batch(self, k: int, budget: int) -> list[tuple[optuna.Trial, float]]:
        batch: list[tuple[optuna.Trial, float]] = []
        attempts = 0
        while len(batch) < k and attempts < 4 * k:
            attempts += 1
            t0 = time.perf_counter()
            trial = self._claim(budget)
            if trial is None:
                break
            for name, (lo, hi) in zip(self.config.param_names, self.config.bounds, strict=True):
                trial.suggest_float(name, lo, hi)
            dt = time.perf_counter() - t0
            self._storage.set_trial_system_attr(trial._trial_id, _PROPOSE, dt)
            twin = self._duplicate_of(trial)
            if twin is not None:  # another worker proposed the same point at the same moment
                self._storage.set_trial_system_attr(trial._trial_id, "metabp:duplicate_of", twin)
                self.optuna_study.tell(trial, state=TrialState.FAIL)
                self._release(trial)
                continue
            self._storage.set_trial_system_attr(trial._trial_id, _CHECKED, True)
            batch.append((trial, dt))
        return batch

    def _duplicate_of(self, trial: optuna.Trial) -> int | None:
        """Number of a live trial with (numerically) the same point that wins over ``trial``.

        Two workers proposing at the same moment from the same data can draw the same point: each
        writes its point, then reads the others'. Of two twins the one that reads second sees the
        other; it yields when the other is already checked or has the lower number, so exactly one
        of the two is trained. Params are compared relative to the box: ``max |dx| / width < 1e-6``.
        """
        names = self.config.param_names
        width = [hi - lo for lo, hi in self.config.bounds]
        mine = [trial.params[n] for n in names]
        for t in self.optuna_study.get_trials(deepcopy=False):
            if t.number == trial.number or t.state not in (TrialState.RUNNING, TrialState.WAITING):
                continue
            if not all(n in t.params for n in names):
                continue
            if max(abs(t.params[n] - m) / w for n, m, w in zip(names, mine, width, strict=True)) < 1e-6:
                if t.state == TrialState.WAITING or t.system_attrs.get(_CHECKED) or t.number < trial.number:
                    return t.number
        return None

    def _run_batch(self, batch: list[tuple[optuna.Trial, float]], evaluate: Evaluator) -> None:
        names = self.config.param_names
        gs = [
            MetaNet(self.config.hidden, self.config.act,
                    omega=[trial.params[n] for n in names])
            for trial, _ in batch
        ]
        try:
            runs = list(evaluate(gs))
            if len(runs) != len(gs):
                raise RuntimeError(f"evaluator returned {len(runs)} runs for {len(gs)} candidates")
        except BaseException as exc:
            for trial, _ in batch:
                with contextlib.suppress(Exception):
                    self._storage.set_trial_system_attr(
                        trial._trial_id, "metabp:error", f"{type(exc).__name__}: {exc}"[:2000]
                    )
                    self.optuna_study.tell(trial, state=TrialState.FAIL)
                self._release(trial)
            raise
        for (trial, _), run in zip(batch, runs, strict=True):
            value = float(run.aulc)
            diverged = bool(getattr(run, "diverged", False))
            if not math.isfinite(value):
                value, diverged = _penalty(), True
            for key in ("step_losses", "epoch_losses"):
                trial.set_user_attr(key, _finite_list(getattr(run, key, None)))
            acc = float(getattr(run, "test_accuracy", float("nan")))
            trial.set_user_attr("test_accuracy", acc if math.isfinite(acc) else None)
            trial.set_user_attr("diverged", diverged)
            trial.set_user_attr("seconds", float(getattr(run, "seconds", 0.0)))
            self.optuna_study.tell(trial, value)
            self._release(trial)

    def _release(self, trial: optuna.Trial) -> None:
        with self._lock:
            self._mine.pop(trial._trial_id, None)

    def _update_bar(self, bar: Any) -> None:
        done = self.completed()
        bar.n = min(len(done), bar.total)
        if done:
            bar.set_postfix_str(f"best AULC {min(t.value for t in done):.5g}", refresh=False)
        bar.refresh()

    def _report(self, ran: list[int], wall: float, progress: bool) -> None:
        mine = [t for t in self.trials if t.number in set(ran)]
        split = self.time_split(mine)
        other = max(wall - split["training"] - split["proposing"], 0.0)
        self.last_time_split = {**split, "other": other, "wall": wall, "trials": len(mine)}
        if progress and wall > 0:
            pct = {k: 100 * v / wall for k, v in split.items()}
            print(
                f"{self.name}: {len(mine)} trials in {wall:.1f} s: training {split['training']:.1f} s "
                f"({pct['training']:.0f}%), proposing {split['proposing']:.1f} s ({pct['proposing']:.0f}%), "
                f"other {other:.1f} s",
                file=sys.stderr,
            )


def _progress(*, total: int, initial: int, enabled: bool, name: str):
    from tqdm.auto import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tqdm(total=total, initial=initial, disable=not enabled, desc=name, unit="trial",
                    dynamic_ncols=True, file=sys.stderr)
