"""benchmarks/_suite_report.py: the tie rule of the search-efficiency table and its summary line."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from _suite_report import budget_table, tied_best  # noqa: E402

LOW = [1.0, 2.0, 3.0, 4.0, 5.0]


def test_best_is_the_lowest_median_and_separated_seeds_are_not_tied():
    best, tied = tied_best({"a": [6.0, 7.0, 8.0, 9.0, 10.0], "b": LOW})
    assert (best, tied) == ("b", set())  # exact two-sided p = 2/252 = 0.0079


def test_tie_boundary_follows_the_exact_mann_whitney_p_value():
    top = [6.0, 7.0, 8.0, 9.0, 10.0]
    # one swapped pair more: U 2 -> 3, p 0.032 -> 0.056, across 0.05
    assert tied_best({"best": [1.0, 2.0, 3.0, 4.0, 7.5], "other": top}) == ("best", set())
    assert tied_best({"best": [1.0, 2.0, 3.0, 4.0, 8.5], "other": top}) == ("best", {"other"})


def test_three_seeds_each_can_never_be_told_apart():
    # the smallest exact two-sided p with 3 against 3 is 2/20 = 0.1
    assert tied_best({"a": [1.0, 2.0, 3.0], "b": [40.0, 50.0, 60.0]}) == ("a", {"b"})


def test_identical_seeds_are_tied_and_the_first_name_wins_equal_medians():
    assert tied_best({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}) == ("a", {"b"})


def _runs(problem: str, per_sampler: dict[str, list[float]]) -> list[dict]:
    return [{"problem": problem, "sampler": s, "seed": i, "values": [v] * 30}
            for s, vs in per_sampler.items() for i, v in enumerate(vs)]


def test_table_marks_best_bold_tied_with_a_sign_and_counts_botorch():
    far = [6.0, 7.0, 8.0, 9.0, 10.0]
    runs = _runs("p1", {"botorch": LOW, "gp": [1.0, 2.0, 3.0, 4.0, 8.5]})
    runs += _runs("p2", {"botorch": far, "gp": LOW})
    optima = {"p1": 0.0, "p1/dim": 2, "p2": 0.0, "p2/dim": 3}
    lines = budget_table(runs, optima, ["botorch", "gp"], 30)
    assert "| p1 | 2 | 5 | **3 [2, 4]** | ≈ 3 [2, 4] |" in lines
    assert "| p2 | 3 | 5 | 8 [7, 9] | **3 [2, 4]** |" in lines
    assert "botorch best or tied-best on 1 of 2 functions; not on: p2" in lines
    assert budget_table(runs, optima, ["botorch", "gp"], 60) == []  # no run reached 60
