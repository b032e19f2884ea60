"""Workers: a killed worker loses nothing completed; several workers share one storage exactly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from metabp.search import Study, get_storage, retry_of

sys.path.insert(0, str(Path(__file__).parent))
from _worker import config, slow_evaluator  # noqa: E402

WORKER = str(Path(__file__).parent / "_worker.py")


def _spawn(storage: str, name: str, n_trials: int, sleep: float, sampler: str = "botorch"):
    return subprocess.Popen(
        [sys.executable, WORKER, storage, name, str(n_trials), str(sleep), sampler],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _trials(storage, name):
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_resume_after_kill_9_mid_trial(tmp_path):
    url = str(tmp_path / "s.journal")
    proc = _spawn(url, "killed", 7, 1.5)
    storage = get_storage(url)
    deadline = time.time() + 90
    while True:  # wait for >= 3 completed trials and one trial in training
        assert time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.1)
        try:
            trials = _trials(storage, "killed")
        except KeyError:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.params) == 4]
        if len(done) >= 3 and running:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    trials = _trials(get_storage(url), "killed")
    before = {t.number: (t.params, t.value) for t in trials if t.state == TrialState.COMPLETE}
    lost = [t for t in trials if t.state == TrialState.RUNNING]
    assert len(lost) == 1 and len(before) >= 3

    study = Study(config("killed", 7), storage=url, evaluate=slow_evaluator(0.0))
    study.optimize(progress=False)

    after = {t.number: t for t in study.trials}
    for number, (params, value) in before.items():  # every completed trial intact
        assert after[number].state == TrialState.COMPLETE
        assert after[number].params == params and after[number].value == value
    assert after[lost[0].number].state == TrialState.FAIL  # the dead worker's trial
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == lost[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == lost[0].params  # proposed again, the same point
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 7
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    # then validated, as `metabp search --resume` does: the top 2 and backprop on the held-out seeds
    top = sorted(study.completed(), key=lambda t: t.value)[:2]
    held = [t for t in study.completed() if "heldout_aulc" in t.user_attrs]
    assert {t.number for t in held} == {t.number for t in top}
    assert held[0].user_attrs["heldout_aulc"]["seeds"] == [50, 51]
    assert study.heldout_controls["backprop"]["values"] == pytest.approx([1.5, 1.51])


@pytest.mark.slow
def test_rdb_storage_uses_optunas_heartbeat(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    dead = Study(config("hb", 3), storage=url, evaluate=slow_evaluator(0.0), heartbeat_grace=1)
    trial = dead._claim()  # claimed and beaten once, then silent (as if its process were killed)
    for n in dead.config.param_names:
        trial.suggest_float(n, -1.0, 1.0)
    time.sleep(2.5)
    study = Study(config("hb", 3), storage=url, evaluate=slow_evaluator(0.0), heartbeat_grace=1)
    assert study.reap_stale() == [trial.number]
    study.optimize(progress=False, validate=False)
    retry = [t for t in study.trials if retry_of(t) == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trial.params
    assert len(study.completed()) == 3


def _check_workers(url: str, name: str, n_trials: int, workers: int = 2) -> None:
    procs = [_spawn(url, name, n_trials, 0.3) for _ in range(workers)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    trials = _trials(get_storage(url), name)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == n_trials  # the budget, exactly: nothing lost, nothing extra
    points = [tuple(round(v, 12) for v in t.params.values()) for t in done]
    assert len(set(points)) == n_trials  # no candidate trained twice
    assert all(len(t.params) == 4 for t in done)
    other = [t for t in trials if t.state != TrialState.COMPLETE]
    for t in other:  # only numbers past the budget: no two workers proposed the same point
        assert t.state == TrialState.FAIL and t.system_attrs.get("metabp:surplus")
        assert "seconds" not in t.user_attrs
    proposed = [t.system_attrs.get("metabp:proposal") for t in trials]
    assert sum(p is not None for p in proposed) >= n_trials - 4  # all but the start design, claimed
    pids = {t.system_attrs["metabp:worker"]["pid"] for t in done}
    assert len(pids) == workers  # every worker did part of the work


def test_two_workers_one_journal_file(tmp_path):
    _check_workers(str(tmp_path / "shared.journal"), "shared", 10)


@pytest.mark.slow
def test_four_workers_one_journal_file_never_collide(tmp_path):
    _check_workers(str(tmp_path / "four.journal"), "four", 20, workers=4)


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on a free local port; yields its base URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries absent (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("su") is None:
        pytest.skip("running as root without `su` to drop to the postgres user")
    data = tempfile.mkdtemp(prefix="metabp-pg-", dir="/tmp")
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def sh(cmd: str) -> None:
        full = ["su", "postgres", "-c", cmd] if as_root else ["bash", "-c", cmd]
        subprocess.run(full, check=True, capture_output=True, timeout=60)

    sh(f"{bindir}/initdb -D {data}/db -U postgres --auth=trust")
    sh(f"{bindir}/pg_ctl -D {data}/db -w -l {data}/log -o '-h 127.0.0.1 -p {port} -k {data}' start")
    try:
        sh(f"{bindir}/createdb -h 127.0.0.1 -p {port} -U postgres metabp")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/metabp"
    finally:
        sh(f"{bindir}/pg_ctl -D {data}/db -w -m immediate stop")
        shutil.rmtree(data, ignore_errors=True)


def test_four_workers_one_postgresql(postgres):
    _check_workers(postgres, "pg", 16, workers=4)
    assert "pg" in optuna.get_all_study_names(postgres)


def test_reading_a_missing_journal_creates_nothing(tmp_path):
    path = tmp_path / "never.journal"
    assert optuna.get_all_study_names(get_storage(str(path), create=False)) == []
    assert not path.exists()
    get_storage(str(path))  # the default creates it, as a worker needs
    assert path.exists()
