"""One g per site: ``sites = [...]`` in a study file, omega's layout, PerSite candidates, export."""

from __future__ import annotations

import json

import pytest
import torch

import metabp
from metabp._cli import main
from metabp.exceptions import ConfigError
from metabp.search import CandidatesOnly, Evaluation, Study, StudyConfig, TargetEntry, hypergrad, load_study
from metabp.search._score import score, train_evaluator

HEAD = '[target]\npreset = "gaussians-mlp3"\nepochs = 2\n'
TINY = """
sites = ["act1", "act2"]
seeds = [0]
target = {preset = "gaussians-mlp3", epochs = 2}
search = {sampler = "random", n_initial = 2, n_trials = 2}
validate = {seeds = [10], top_k = 1}
"""


def study_file(tmp_path, text: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sites_lay_out_omega_site_by_site(tmp_path):
    cfg = load_study(study_file(tmp_path, 'sites = ["act1", "act2"]\n' + HEAD + "[metanet]\nhidden = 2\n"))
    assert cfg.sites == ("act1", "act2") and cfg.site_params == 7 and cfg.num_params == 14
    assert cfg.param_names == [f"omega_{i}" for i in range(14)]
    assert cfg.bounds == ((-5.0, 5.0),) * 14
    assert cfg.identity()["sites"] == ["act1", "act2"]
    assert "sites" not in load_study(study_file(tmp_path, HEAD, "plain.toml")).identity()  # stored identity


def test_bounds_per_weight_repeat_for_each_site_or_give_one_per_omega_entry(tmp_path):
    four = [[-1, 1], [-2, 2], [-3, 3], [-4, 4]]
    cfg = load_study(study_file(tmp_path, f'sites = ["act1", "act2"]\n{HEAD}[search]\nbounds = {four}\n'))
    assert cfg.bounds == tuple((float(a), float(b)) for a, b in four) * 2
    eight = [[-k, k] for k in range(1, 9)]
    cfg = load_study(study_file(tmp_path, f'sites = ["act1", "act2"]\n{HEAD}[search]\nbounds = {eight}\n'))
    assert cfg.bounds == tuple((float(a), float(b)) for a, b in eight)
    assert cfg.search_bounds[4:] == [(-5.0, 5.0), (-6.0, 6.0), (-7.0, 7.0), (-8.0, 8.0)]


@pytest.mark.parametrize("top, table, match", [
    ("sites = []", "", r"sites = \[\] .*1 to 64 activation names"),
    ('sites = "act1"', "", r"sites = 'act1' .*must be a list"),
    ("sites = [1, 2]", "", r"sites = \[1, 2\] .*must be a list"),
    ('sites = ["act1", ""]', "", r"must be a list"),
    ('sites = ["act1", "act1"]', "", r"a site is listed twice"),
    ('sites = ["act1"]\nwhere = "act2"', "", r"where = 'act2' and sites = \['act1'\].*give one of them"),
    ('sites = ["act1"]', 'where = "act2"\n', r"\[target\] where = 'act2' and sites"),
    ('sites = ["act1", "act9"]', "", r"site.*does not fit target 'gaussians-mlp3'.*'act9' matches no"),
    ('sites = ["act*", "act2"]', "", r"sites 'act\*' and 'act2' both select activation 'act2'"),
    ('sites = ["act1", "act2"]', "[search]\nbounds = [[-1, 1], [-1, 1]]\n",
     r"bounds .*2 \(lo, hi\) pairs for 8 omega entries.*8 pairs or 4"),
])
def test_bad_sites_are_named(tmp_path, top, table, match):
    text = f'{top}\n[target]\npreset = "gaussians-mlp3"\n{table}'  # `table` continues [target]
    with pytest.raises(ConfigError, match=match):
        load_study(study_file(tmp_path, text))


def test_sites_exclude_where_in_targets_tables_and_in_code(tmp_path):
    text = 'sites = ["act1"]\n[[targets]]\npreset = "gaussians-mlp3"\nwhere = "act2"\n'
    with pytest.raises(ConfigError, match=r"\[\[targets\]\] #1 where = 'act2' and sites"):
        load_study(study_file(tmp_path, text))
    base = dict(name="t", target="gaussians-mlp3", bounds=((-1.0, 1.0),) * 4, sites=("act1",))
    with pytest.raises(ConfigError, match=r"^where = 'act2' and sites = \['act1'\]"):
        StudyConfig(**base, where="act2")
    with pytest.raises(ConfigError, match=r"\[\[targets\]\] gaussians-mlp3 where = 'act1' and sites"):
        StudyConfig(**base, targets=(TargetEntry("gaussians-mlp3", (), "act1"),))
    with pytest.raises(ConfigError, match="1 to 64 activation names"):
        StudyConfig(**{**base, "sites": ("act1", 2)})


def test_bfn_of_is_a_per_site_of_omega_chunks_in_site_order():
    seen = []

    def objective(gs):
        seen.extend(gs)
        return [Evaluation(aulc=float(g["act1"].omega.sum() - g["act2"].omega.sum())) for g in gs]

    cfg = StudyConfig(name="t", target="gaussians-mlp3", sites=("act2", "act1"), bounds=((-2.0, 2.0),) * 4,
                      sampler="random", n_initial=2, n_trials=3)
    study = Study(cfg, storage="memory", evaluate=CandidatesOnly(objective))
    study.optimize(progress=False)
    assert len(seen) == 3 and all(metabp.is_per_site(g) for g in seen)
    for trial, passed in zip(study.completed(), seen, strict=True):
        omega, g = study.omega_of(trial), study.bfn_of(trial)
        assert metabp.is_per_site(g) and list(g) == ["act2", "act1"]  # the order of `sites`
        assert torch.equal(g["act2"].omega, omega[:4]) and torch.equal(g["act1"].omega, omega[4:])
        assert torch.equal(passed["act2"].omega, omega[:4]) and torch.equal(passed["act1"].omega, omega[4:])
        assert g.meta["trial"] == trial.number and g.meta["sites"] == ["act2", "act1"]
        assert g.meta["where"] is None and g.meta["score"] == trial.value


def test_equal_chunks_score_exactly_like_one_shared_g_at_the_same_sites():
    box = ((-2.0, 2.0),) * 4
    shared = StudyConfig(name="a", target="gaussians-mlp3", overrides=(("epochs", 2),), where="act*",
                         bounds=box, seeds=(0, 1))
    per_site = shared.replace(name="b", where=None, targets=(), sites=("act1", "act2"))
    w = torch.tensor([0.7, -0.2, 1.3, 0.4], dtype=torch.float64)
    one = score(shared, train_evaluator(shared), [shared.candidate(w)], [None], shared.seeds, None)[0]
    two = score(per_site, train_evaluator(per_site), [per_site.candidate(torch.cat([w, w])),
                                                      per_site.candidate(torch.cat([w, -w]))],
                [None, None], per_site.seeds, None)
    assert two[0].values == one.values and two[0].value == one.value
    assert two[1].values != one.values  # the second site's chunk is its own g


def test_a_tiny_per_site_study_runs_validates_and_exports(tmp_path, capsys):
    path = study_file(tmp_path, TINY)
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    assert "omega act1 [" in out and ", act2 [" in out
    study = Study(str(path), create=False)
    held = study.best_heldout_trial()
    assert held is not None and study.heldout_controls["backprop"]["seeds"] == [10]
    assert main(["export", str(path), "-o", str(tmp_path / "g.bfn")]) == 0
    g, want = metabp.load(tmp_path / "g.bfn"), study.bfn_of(held)
    assert metabp.is_per_site(g) and list(g) == list(want) == ["act1", "act2"]
    assert all(torch.equal(g[s].omega, want[s].omega) for s in want)
    assert g.meta == {**want.meta, "chosen_by": "heldout_aulc"}
    capsys.readouterr()
    assert main(["show", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sites"] == {"act1": [f"omega_{i}" for i in range(4)],
                            "act2": [f"omega_{i}" for i in range(4, 8)]}
    assert main(["show", str(path)]) == 0
    assert "site act2: its own g, omega_4 .. omega_7" in capsys.readouterr().out


def test_an_unknown_site_is_one_line_exit_2(tmp_path, capsys):
    path = study_file(tmp_path, TINY.replace('"act2"]', '"act7"]'))
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'act7' matches no activation" in err
    assert not list(tmp_path.glob("*.journal"))


def test_hypergrad_names_a_per_site_g():
    g = metabp.PerSite({"act1": metabp.MetaNet(1), "act2": metabp.MetaNet(1)})
    with pytest.raises(ConfigError, match=r"g=PerSite: .*one g per site is not supported"):
        hypergrad("gaussians-mlp3", g, unroll=2)


@pytest.mark.parametrize("first, then", [(("act1",), ()), ((), ("act1",))], ids=["dropped", "added"])
def test_a_stored_study_refuses_a_file_that_drops_or_adds_sites(tmp_path, first, then):
    """One g at act1 (sites) or at the target's own where: the same omega, only sites tell them apart."""
    cfg = StudyConfig(name="t", target="gaussians-mlp3", bounds=((-1.0, 1.0),) * 4, sites=first)
    storage = str(tmp_path / "t.journal")
    Study(cfg, storage=storage)
    with pytest.raises(ConfigError, match=r"created with sites = .*, the study file says"):
        Study(cfg.replace(sites=then), storage=storage)
    Study(cfg, storage=storage, create=False)  # the same settings open it


@pytest.mark.parametrize("bounds, match", [
    (((-1.0, "a"),) * 4, r"bounds\[0\] = \(-1.0, 'a'\): must be \[lo, hi\] numbers"),
    (((-1.0, True),) * 4, r"bounds\[0\] = \(-1.0, True\): must be \[lo, hi\] numbers"),
    (None, r"bounds: None for 8 omega entries"),
    (((-1.0, 1.0),) * 3, r"bounds: 3 \(lo, hi\) pairs for 8 omega entries.*8 pairs or 4 \(repeated"),
])
def test_bad_bounds_in_code_are_named(bounds, match):
    with pytest.raises(ConfigError, match=match):
        StudyConfig(name="t", target="gaussians-mlp3", bounds=bounds, sites=("act1", "act2"))


MULTI = """
sites = ["act1", "act2"]
seeds = [0]
[[targets]]
preset = "gaussians-mlp3"
epochs = 1
[[targets]]
preset = "digits-mlp"
epochs = 1
train_size = 200
"""


def test_several_targets_score_a_per_site_g_on_each_of_them(tmp_path):
    """Equal chunks score as one g shared by both sites, on every target (ratios to the same backprop)."""
    cfg = load_study(study_file(tmp_path, MULTI))
    shared = cfg.replace(name="shared", sites=(), bounds=cfg.bounds[:4],
                         targets=tuple(t.__class__(t.preset, t.overrides, "act*") for t in cfg.targets))
    w = torch.tensor([0.7, -0.2, 1.3, 0.4], dtype=torch.float64)
    backprop = {"gaussians-mlp3": [2.0], "digits-mlp": [3.0]}
    per_site = score(cfg, train_evaluator(cfg), [cfg.candidate(torch.cat([w, w]))], [None], [0], backprop)[0]
    one = score(shared, train_evaluator(shared), [shared.candidate(w)], [None], [0], backprop)[0]
    assert per_site.value == one.value and len(per_site.per_seed) == 2  # one row per target
    bad = MULTI.replace('"act2"]', '"act3"]').replace("digits-mlp", "mnist1d-cnn")
    with pytest.raises(ConfigError, match=r"sites = .*'act3'.*does not fit target 'gaussians-mlp3'"):
        load_study(study_file(tmp_path, bad, "bad.toml"))
