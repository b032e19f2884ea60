"""``metabp search``, ``show`` and ``export`` end with one line saying whether g held up on held-out seeds."""

from __future__ import annotations

import pytest

from metabp._cli import main
from metabp._cli.search import NO_VERDICT

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
"""
VALIDATE = """
[validate]
seeds = [10, 11, 12]
top_k = 1
"""


@pytest.mark.parametrize("validated", [True, False])
def test_search_show_and_export_end_with_the_verdict(tmp_path, capsys, monkeypatch, validated):
    from metabp.search import Study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(STUDY + (VALIDATE if validated else ""))
    assert main(["search", "s.toml"]) == 0
    verdict = Study("s.toml", create=False).heldout_verdict()
    if validated:
        assert verdict.startswith("held-out verdict: g (trial ") and " on 3 seeds: " in verdict
    else:
        assert verdict is None
        verdict = NO_VERDICT
    assert capsys.readouterr().out.splitlines()[-1] == verdict
    assert main(["export", "s.toml", "-o", "g.bfn"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == verdict
    assert main(["show", "s.toml"]) == 0
    assert (verdict in capsys.readouterr().out.splitlines()) is validated  # show: only once validated
