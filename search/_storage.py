"""Storage by URL: where a study's trials live.

=================================================  ==========================================
``memory`` / ``:memory:``                           in this process only (tests, ``minimize``)
``path/to/file.journal`` or ``journal:///path``    Optuna journal file: safe for several
                                                    processes on one machine (the default)
``sqlite:///file.db``                               SQLite (one process at a time is safest)
``postgresql+psycopg://user@host:port/db``          any SQLAlchemy URL Optuna's RDBStorage takes:
``mysql+pymysql://...``                             workers on many machines
=================================================  ==========================================

An RDB storage records Optuna's own heartbeat: a RUNNING trial whose worker has not beaten for
``grace_period`` seconds is failed by ``optuna.storages.fail_stale_trials`` and its point queued
again (``RetryHeartbeatStaleTrialCallback``). A journal file has no heartbeat in Optuna; workers on
it are watched by ``_workers.py``.

Workers propose one at a time: :func:`proposal_lock` holds a study-wide lock while a worker reads
the pending points and writes its own proposal (a lock file beside a journal file, a PostgreSQL
advisory lock, a process lock for the rest), so two workers never propose from the same pending set.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from metabp.exceptions import ConfigError

#: Seconds between heartbeats of a worker's running trials (RDB: Optuna's, journal: ours).
HEARTBEAT_S = 15
#: A RUNNING trial whose worker is silent this long counts as dead.
HEARTBEAT_GRACE_S = 120


#: journal storages opened by :func:`get_storage` -> their lock file for :func:`proposal_lock`
_LOCK_FILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_THREAD_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_storage(url: str | BaseStorage | None, *, grace_period: int = HEARTBEAT_GRACE_S,
                create: bool = True) -> BaseStorage:
    """Open the storage at ``url`` (see the module table); ``grace_period``: RDB heartbeat grace.

    ``create=False`` only reads: a journal file that does not exist is not created (an empty
    in-memory storage stands for it, holding no study).
    """
    if isinstance(url, BaseStorage):
        return url
    if url is None or url in ("memory", ":memory:"):
        return optuna.storages.InMemoryStorage()
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"storage={url!r}: give an Optuna storage URL or a journal file path")
    if url.startswith("journal://"):
        url = url[len("journal://"):]
    if "://" in url:
        return _rdb(url, grace_period=grace_period)
    path = Path(url)
    if path.is_dir():
        raise ConfigError(f"storage={url!r} is a directory; give a journal file path such as study.journal")
    if not create and not path.exists():
        return optuna.storages.InMemoryStorage()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(path)))
        _LOCK_FILES[storage] = str(path) + ".propose.lock"
        return storage
    except OSError as exc:
        raise ConfigError(f"storage={url!r}: cannot open the journal file ({exc.strerror or exc})") from None


def _rdb(url: str, *, grace_period: int, attempts: int = 5) -> BaseStorage:
    """RDBStorage, retried: workers starting at once on an empty database race to create its
    tables (the loser's ``CREATE TABLE`` fails; on a retry it finds them made)."""
    import time

    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    for i in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeat and its retry callback are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_S,
                    grace_period=max(int(grace_period), 1),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
                )
        except (IntegrityError, ProgrammingError) as exc:
            if i == attempts - 1:
                raise _cannot_open(url, exc) from exc
            time.sleep(0.2 * (i + 1))
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise _cannot_open(url, exc) from exc
    raise AssertionError("unreachable")


def _cannot_open(url: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"storage={url!r}: cannot open ({type(exc).__name__}: {exc}); check the URL, that the server "
        "runs and the driver is installed (postgresql+psycopg needs `pip install metabp[postgres]`)"
    )


@contextlib.contextmanager
def proposal_lock(storage: BaseStorage, study_name: str) -> Iterator[None]:
    """Hold ``study_name``'s proposal lock in ``storage`` while the block runs (see the module text).

    Journal file (opened by :func:`get_storage`): ``flock`` on ``<journal>.propose.lock``;
    PostgreSQL: ``pg_advisory_lock`` on a key from the study name; otherwise a lock of this process.
    """
    thread_lock = _THREAD_LOCKS.setdefault(storage, threading.Lock())
    with thread_lock:
        lock_file = _LOCK_FILES.get(storage)
        if lock_file is not None:
            with _flock(lock_file):
                yield
            return
        rdb = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
        engine = getattr(rdb, "engine", None)
        if engine is not None and engine.dialect.name == "postgresql":
            with _pg_advisory_lock(engine, zlib.crc32(study_name.encode())):
                yield
            return
        yield


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_advisory_lock(engine, key: int) -> Iterator[None]:
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
