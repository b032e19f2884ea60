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
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from metabp.exceptions import ConfigError

#: Seconds between heartbeats of a worker's running trials (RDB: Optuna's, journal: ours).
HEARTBEAT_S = 15
#: A RUNNING trial whose worker is silent this long counts as dead.
HEARTBEAT_GRACE_S = 120


def get_storage(url: str | BaseStorage | None, *, grace_period: int = HEARTBEAT_GRACE_S) -> BaseStorage:
    """Open the storage at ``url`` (see the module table); ``grace_period``: RDB heartbeat grace."""
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
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
