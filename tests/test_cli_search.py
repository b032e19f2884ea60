"""``metabp search``, ``show`` and ``export`` end with one line saying whether g held up on held-out seeds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metabp._cli import main
from metabp._cli.search import heldout_verdict

SEEDS = [10, 11, 12]


def _summary(values):
    return {"mean": sum(values) / len(values), "std": 0.0, "seeds": SEEDS, "values": values}


def _study(g, backprop, tuned=None):
    """A stand-in for ``metabp.search.Study``: trial 7 validated with held-out ``g`` per seed."""
    trial = SimpleNamespace(number=7, user_attrs={"heldout_aulc": _summary(g)})
    controls = {"backprop": _summary(backprop)}
    if tuned:
        controls["tuned_lr"] = {**_summary(tuned), "lr": 0.01}
    return SimpleNamespace(best_heldout_trial=lambda: trial, heldout_controls=controls)


def test_backprop_beating_g_is_said_in_words():
    line = heldout_verdict(_study([0.21, 0.22, 0.23], [0.20, 0.22, 0.22]))
    # g - backprop = [0.01, 0, 0.01]: mean 0.00667, SE 0.00333 -> +2.0 SE
    assert line == ("held-out verdict on seeds [10, 11, 12]: g did not help; trial 7 (what `metabp export` "
                    "saves) 0.22 against plain backprop 0.21333 (g higher by 2.0 SE)")


@pytest.mark.parametrize("g, words", [
    ([0.10, 0.11, 0.12], "g helped, by more than 2 SE against every control"),
    ([0.19, 0.23, 0.21], "g is ahead, but within noise (under 2 SE) of a control"),
])
def test_g_ahead_of_every_control(g, words):
    line = heldout_verdict(_study(g, [0.20, 0.22, 0.22], tuned=[0.21, 0.23, 0.22]))
    assert f": {words}; trial 7 " in line and ", backprop with its lr tuned alone 0.22 (g lower by " in line


def test_a_study_without_validation_says_its_scores_are_biased():
    study = SimpleNamespace(best_heldout_trial=lambda: None, heldout_controls={})
    assert heldout_verdict(study).startswith("held-out verdict: none (no candidate validated; add [validate]")


STUDY = """
where = "act2"
seeds = [0, 1]
[target]
preset = "gaussians-mlp3"
epochs = 3
[search]
sampler = "random"
n_initial = 2
n_trials = 2
[validate]
seeds = [10, 11, 12]
top_k = 1
"""


def test_search_show_and_export_end_with_the_verdict(tmp_path, capsys, monkeypatch):
    from metabp.search import Study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(STUDY)
    assert main(["search", "s.toml"]) == 0
    verdict = heldout_verdict(Study("s.toml", create=False))
    assert verdict.startswith("held-out verdict on seeds [10, 11, 12]: ")
    assert capsys.readouterr().out.splitlines()[-1] == verdict
    assert main(["export", "s.toml", "-o", "g.bfn"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == verdict
    assert main(["show", "s.toml"]) == 0
    assert verdict in capsys.readouterr().out.splitlines()
