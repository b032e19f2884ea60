"""Worker liveness: which RUNNING trials belong to a dead worker, failed and proposed again.

Any number of processes may run one study. A worker marks each trial it runs with its identity
(host, boot id, process id and start time, system attr ``metabp:worker``) and keeps a heartbeat on
it. A RUNNING trial whose worker is dead is marked FAIL by whichever worker notices first, and its
point is queued again, so a killed worker loses nothing completed and no point is dropped.

- **RDB storage** (SQLite, PostgreSQL, MySQL): Optuna's own heartbeat. The storage is opened with
  ``heartbeat_interval`` and a ``RetryHeartbeatStaleTrialCallback`` (``_storage.py``); this module
  records beats with ``storage.record_heartbeat`` and reaps with ``optuna.storages.fail_stale_trials``.
  A retried trial names its original in system attr ``failed_trial``.
- **Journal file** (the default; in-memory): Optuna has no heartbeat for these. A journal file is
  shared by processes on one machine, where ``/proc`` says at once whether a worker's process is
  alive: after ``kill -9`` the next worker re-proposes the lost point immediately instead of after a
  grace period (minutes, with a heartbeat alone). That is the measured need this code keeps; a
  heartbeat in system attr ``metabp:heartbeat`` covers workers on another host (a shared
  filesystem). A retried trial names its original in user attr ``retry_of``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ._schema import CHECKED, HEARTBEAT, WORKER
from ._storage import HEARTBEAT_GRACE_S, HEARTBEAT_S


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


def this_worker() -> dict[str, Any]:
    """This process's identity: host, boot id, pid and the pid's start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _proc_start(pid) or ""}


def worker_alive(worker: dict[str, Any]) -> bool | None:
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


def _rdb_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


class Workers:
    """The trials this process runs in ``study``, their heartbeat, and reaping of dead workers'.

    Args:
        study: the Optuna study.
        storage: its storage (the object it was created with).
        grace: seconds without a heartbeat after which another host's RUNNING trial is dead.
    """

    def __init__(self, study: optuna.Study, storage: BaseStorage, *, grace: float = HEARTBEAT_GRACE_S):
        self.study, self.storage, self.grace = study, storage, float(grace)
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.rdb = _rdb_heartbeat(storage)
        self.me = this_worker()
        self._mine: set[int] = set()  # trial ids this process runs now
        self._lock = threading.Lock()

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def set_system_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_system_attr(self.trial_id(number), key, value)

    def claim(self, number: int) -> None:
        """Mark trial ``number`` as this worker's and beat once."""
        tid = self.trial_id(number)
        self.storage.set_trial_system_attr(tid, WORKER, self.me)
        self._beat(tid)
        with self._lock:
            self._mine.add(tid)

    def release(self, number: int) -> None:
        with self._lock:
            self._mine.discard(self.trial_id(number))

    def _beat(self, tid: int) -> None:
        if self.rdb:
            self.storage.record_heartbeat(tid)
        else:
            self.storage.set_trial_system_attr(tid, HEARTBEAT, time.time())

    @contextlib.contextmanager
    def heartbeat(self, interval: float = HEARTBEAT_S) -> Iterator[None]:
        """Beat on this worker's running trials every ``interval`` seconds while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                with self._lock:
                    ids = list(self._mine)
                for tid in ids:
                    with contextlib.suppress(Exception):  # finished meanwhile: nothing to do
                        self._beat(tid)

        thread = threading.Thread(target=beat, daemon=True, name="metabp-heartbeat")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def reap_stale(self, names: Sequence[str]) -> list[int]:
        """Fail RUNNING trials of dead workers and queue their points again; their numbers."""
        if self.rdb:
            before = {t.number for t in self._running()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            return sorted(before - {t.number for t in self._running()})
        reaped = []
        for t in self._running():
            if self._alive(t):
                continue
            try:
                changed = self.storage.set_trial_state_values(self.trial_id(t.number), TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # finished meanwhile, or another worker failed it first
            if not changed:
                continue
            reaped.append(t.number)
            if all(n in t.params for n in names):
                self.study.enqueue_trial({n: t.params[n] for n in names}, user_attrs={"retry_of": t.number})
        return reaped

    def _running(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def _alive(self, t: FrozenTrial) -> bool:
        with self._lock:
            if self.trial_id(t.number) in self._mine:
                return True
        now = time.time()
        worker = t.system_attrs.get(WORKER)
        if worker is None:  # created by ask() but never claimed: trust it for the grace period
            beat, alive = (t.datetime_start.timestamp() if t.datetime_start else now), None
        else:
            beat, alive = float(t.system_attrs.get(HEARTBEAT, now)), worker_alive(worker)
        return (now - beat < self.grace) if alive is None else alive


def duplicate_of(trial: Any, live: Sequence[FrozenTrial], names: Sequence[str],
                 bounds: Sequence[tuple[float, float]]) -> int | None:
    """Number of a live trial with (numerically) the same point that wins over ``trial``.

    Two workers proposing at the same moment from the same data can draw the same point (the
    botorch sampler proposes under a study-wide lock and does not; the others may): each writes
    its point, then reads the others'. Of two twins the one that reads second sees the
    other; it yields when the other is already checked (system attr ``metabp:checked``), is
    waiting, or has the lower number, so exactly one of the two is trained. Params are compared
    relative to the box: ``max |dx| / width < 1e-6``.
    """
    width = [hi - lo for lo, hi in bounds]
    mine = [trial.params[n] for n in names]
    for t in live:
        if t.number == trial.number or not all(n in t.params for n in names):
            continue
        if max(abs(t.params[n] - m) / w for n, m, w in zip(names, mine, width, strict=True)) < 1e-6:
            if t.state == TrialState.WAITING or t.system_attrs.get(CHECKED) or t.number < trial.number:
                return t.number
    return None


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (journal: ``retry_of``; RDB: ``failed_trial``)."""
    number = trial.user_attrs.get("retry_of")
    return trial.system_attrs.get("failed_trial") if number is None else number
