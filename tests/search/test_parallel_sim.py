"""benchmarks/parallel_workers.py's simulation: asynchronous workers ask as trials finish, batches
ask together."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import parallel_workers as pw  # noqa: E402


def _asked_after(run: dict) -> list[int]:
    return sorted(k for k, _ in run["staged"])


def test_asynchronous_workers_ask_one_trial_per_finish():
    """3 workers, 12 trials: trials 4..12 are each asked when one more trial has finished."""
    run = pw.run("random", 0, d=2, trials=12, workers=3, n_initial=3)
    assert len(run["values"]) == 12
    assert _asked_after(run) == list(range(1, 10))
    assert len(run["gaps"]) == 9  # each asked while the two other workers still ran


def test_synchronous_batches_ask_after_the_whole_batch():
    run = pw.run("random", 0, d=2, trials=12, workers=3, n_initial=3, batch=True)
    assert _asked_after(run) == [3, 3, 3, 6, 6, 6, 9, 9, 9]


def test_stage_table_groups_proposals_by_what_they_knew():
    runs = [{"variant": "a", "staged": [(0, 5.0), (9, 7.0), (10, 1.0), (35, 2.0)]},
            {"variant": "b", "staged": [(12, 3.0)]}]
    lines = pw.stage_table(runs, ["a", "b"])
    assert lines[0] == "| sampler | 0-9 completed | 10-19 completed | 20-29 completed | 30+ completed |"
    assert lines[2] == "| a | 6.0 (2) | 1.0 (1) | - | 2.0 (1) |"
    assert lines[3] == "| b | - | 3.0 (1) | - | - |"


@pytest.mark.parametrize("batch", [False, True])
def test_pending_aware_proposals_never_repeat_a_running_point(batch):
    run = pw.run("botorch", 0, d=3, trials=14, workers=4, n_initial=4, batch=batch)
    assert len(run["values"]) == 14
    assert min(run["gaps"]) > 1e-3


def test_ratio_interval_brackets_the_ratio_and_is_a_point_for_constant_seeds():
    lo, hi = pw.ratio_interval([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # every resample has ratio 2
    lo, hi = pw.ratio_interval([1.0, 9.0, 2.0, 8.0], [2.0, 2.0, 2.0, 2.0])
    assert lo < 5.0 / 2.0 < hi
