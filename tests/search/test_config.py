"""Study files: a good one loads; each mistake is an error naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.search import StudyConfig, load_study

STUDIES = sorted((Path(__file__).parents[2] / "studies").glob("*.toml"))

GOOD = """
where = "act2"
[target]
preset = "gaussians-mlp3"
epochs = 3
[metanet]
hidden = 1
[search]
n_trials = 5
n_initial = 2
bounds = [-2, 2]
"""


ES = GOOD + 'sampler = "es"\n'


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_good_file(tmp_path):
    cfg = load_study(_write(tmp_path, GOOD))
    assert cfg.name == "s" and cfg.target == "gaussians-mlp3" and cfg.overrides == (("epochs", 3),)
    assert cfg.bounds == ((-2.0, 2.0),) * 4
    assert cfg.param_names == ["omega_0", "omega_1", "omega_2", "omega_3"]
    assert cfg.default_storage() == str(tmp_path / "s.journal")
    assert cfg.target_spec().epochs == 3


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_load(path):
    cfg = load_study(path, check_device=False)
    assert cfg.n_trials >= cfg.n_initial and cfg.num_params == (3 * cfg.hidden + 1) * max(1, len(cfg.sites))
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device = 'cuda'.* 0 CUDA device"):
            load_study(path)


def test_new_keys(tmp_path):
    text = GOOD.replace('where = "act2"', 'where = "act2"\nseeds = [0, 1, 2]\ncompile = true') + (
        "lr = [1e-3, 1.0]\n[validate]\nseeds = [100, 101]\ntop_k = 3\n")
    cfg = load_study(_write(tmp_path, text))
    assert cfg.seeds == (0, 1, 2) and cfg.seed == 0 and cfg.compile is True
    assert cfg.lr_bounds == (1e-3, 1.0) and cfg.param_names[-1] == "lr" and cfg.search_log[-1]
    assert cfg.validate_seeds == (100, 101) and cfg.validate_top_k == 3
    assert load_study(_write(tmp_path, GOOD.replace('where = "act2"', "seed = 4"))).seeds == (4,)


MULTI = """
seeds = [0, 1]
[[targets]]
preset = "gaussians-mlp3"
epochs = 3
where = "act2"
[[targets]]
preset = "digits-mlp"
epochs = 1
[search]
n_trials = 5
"""


def test_several_targets(tmp_path):
    cfg = load_study(_write(tmp_path, MULTI))
    assert [t.preset for t in cfg.targets] == ["gaussians-mlp3", "digits-mlp"] and cfg.multi_target
    assert cfg.targets[0].overrides == (("epochs", 3),) and cfg.targets[0].where == "act2"
    assert cfg.targets[1].where is None and cfg.target_spec(1).epochs == 1


def test_per_parameter_bounds(tmp_path):
    text = GOOD.replace("bounds = [-2, 2]", "bounds = [[-1, 1], [-2, 2], [-3, 3], [0, 1]]")
    assert load_study(_write(tmp_path, text)).bounds[2] == (-3.0, 3.0)


BAD = [
    ("[search]\nn_trials = 5\n", "missing key 'preset'"),
    (GOOD + "colour = 1\n", None),  # lands in [search]: unknown key
    (GOOD.replace("n_trials = 5", "n_trials = 0"), r"\[search\] n_trials = 0 .*integer in \[1, 100000\]"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nsampler = 'annealing'"), "sampler = 'annealing'.*botorch"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nacquisition = 'ucb'"), "acquisition = 'ucb'.*logei, qlogei"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nq = 4"), 'q = 4 .*needs acquisition = "qlogei"'),
    (GOOD.replace("bounds = [-2, 2]", "bounds = [2, -2]"), r"bounds\[0\] = \[2.0, -2.0\].*lo < hi"),
    (GOOD.replace("bounds = [-2, 2]", "bounds = [[-1, 1], [0, 1]]"), "2 .* pairs .* 3\\*hidden\\+1 = 4"),
    (GOOD.replace("bounds = [-2, 2]", 'bounds = "wide"'), "bounds = 'wide'.*\\[lo, hi\\]"),
    (GOOD.replace("hidden = 1", "hidden = 0"), r"\[metanet\] hidden = 0 .*integer in \[1, 64\]"),
    (GOOD.replace("hidden = 1", "hidden = 1\nwidth = 3"), r"\[metanet\].*unknown key 'width'.*act, hidden"),
    (GOOD.replace('where = "act2"', 'wher = "act2"'), "unknown key 'wher'"),
    (GOOD.replace("epochs = 3", "epochz = 3"), r"\[target\].*epochz"),
    (GOOD.replace('"gaussians-mlp3"', '"imagenet-vit"'), "imagenet-vit"),
    ("[target\n", "not valid TOML"),
    # seeds, lr, [validate], [[targets]]
    (GOOD.replace('where = "act2"', "seed = 0\nseeds = [0, 1]"), "give one of them"),
    (GOOD.replace('where = "act2"', "seeds = []"), r"seeds = \[\] .*list of distinct integer seeds"),
    (GOOD.replace('where = "act2"', "seeds = [0, 0]"), "listed twice"),
    (GOOD.replace('where = "act2"', "seeds = [0, -1]"), r"seeds = -1 .*integer in \[0, 4294967295\]"),
    (GOOD.replace('where = "act2"', "seeds = [true]"), r"seeds = True .*integer"),
    (GOOD.replace('where = "act2"', 'seeds = "012"'), "seeds = '012' .*list"),
    (GOOD.replace('where = "act2"', f"seed = {2**40}"), r"seed = 1099511627776 .*integer in"),
    (GOOD + "lr = [1.0, 0.001]\n", r"\[search\] lr = \[1, 0.001\].*lo < hi"),
    (GOOD + "lr = [0.0, 1.0]\n", r"\[search\] lr\[0\] = 0.0 .*number in \(0, 1000\]"),
    (GOOD + "lr = [1e-3, 1e300]\n", r"lr\[1\] = 1e\+300 .*\(0, 1000\]"),
    (GOOD + "lr = [1e-3, nan]\n", r"lr\[1\] = nan"),
    (GOOD + "lr = 0.1\n", r"\[search\] lr = 0.1 .*\[lo, hi\]"),
    (GOOD + "lr = [true, 1.0]\n", r"lr\[0\] = True"),
    (GOOD + "[validate]\nseeds = [0, 5]\n", r"\[validate\] seeds.*\[0\] also in the search seeds"),
    (GOOD + "[validate]\nseeds = [5]\ntop_k = 0\n", r"\[validate\] top_k = 0 .*integer in \[1, "),
    (GOOD + "[validate]\nseeds = [5]\nk = 3\n", r"\[validate\].*unknown key 'k'"),
    (MULTI + "[target]\npreset = 'digits-mlp'\n", r"either \[target\] or \[\[targets\]\]"),
    (MULTI.replace('preset = "digits-mlp"', 'preset = "gaussians-mlp3"'), "listed twice"),
    (MULTI.replace('preset = "digits-mlp"', 'name = "digits-mlp"'),
     r"\[\[targets\]\] #2.*missing key 'preset'"),
    (MULTI.replace("epochs = 1", "epochs = 1\nwhere = 'fc9'"),
     "where = 'fc9'.*does not fit target 'digits-mlp'"),
    ("targets = 3\n", "must be one or more \\[\\[targets\\]\\] tables"),
    # types, ranges, devices, storage, activations, where
    (GOOD.replace("epochs = 3", "hidden = 10000000000"), r"hidden = 10000000000 .*list of 1 to 16 widths"),
    (GOOD.replace("epochs = 3", f"hidden = [{10**18}]"), r"hidden = 1000000000000000000 .*\[1, 8192\]"),
    (GOOD.replace("epochs = 3", 'hidden = "16"'), r"hidden = '16' .*list of 1 to 16 widths"),
    (GOOD.replace("epochs = 3", 'name = "x"'), r"\[target\].*unknown key 'name'"),
    (GOOD.replace("epochs = 3", "lr = true"), r"\[target\] lr = True .*number"),
    (GOOD.replace("epochs = 3", "lr = 1e300"), r"\[target\] lr = 1e\+300 .*\(0, 1000\]"),
    (GOOD.replace("epochs = 3", "lr = -0.1"), r"\[target\] lr = -0.1 "),
    (GOOD.replace("epochs = 3", "lr = nan"), r"\[target\] lr = nan "),
    (GOOD.replace("epochs = 3", "epochs = 3.5"), r"\[target\] epochs = 3.5 .*integer"),
    (GOOD.replace("epochs = 3", "bias = 1"), r"\[target\] bias = 1 .*true or false"),
    (GOOD.replace("epochs = 3", "activation = 'swoosh'"), "swoosh"),
    (GOOD.replace("hidden = 1", "hidden = 1\nact = 'swoosh'"), r"\[metanet\] act = 'swoosh'"),
    (GOOD.replace("hidden = 1", f"hidden = {10**30}"), r"\[metanet\] hidden = 10{30} "),
    (GOOD.replace('where = "act2"', 'where = "act9"'), "where = 'act9'.*not fit target 'gaussians-mlp3'"),
    (GOOD.replace('where = "act2"', 'device = "bogus"'), "device = 'bogus'.*cpu, cuda or cuda:N"),
    (GOOD.replace('where = "act2"', "device = 1"), "device = 1 .*must be a string"),
    (GOOD + 'storage = ""\n', r"\[search\] storage = ''.*journal file path"),
    (GOOD + "storage = '.'\n", "is a directory"),
    (GOOD + "storage = 3\n", r"\[search\] storage = 3 "),
    (GOOD.replace('where = "act2"', "compile = 1"), "compile = 1 .*true or false"),
    (GOOD.replace("bounds = [-2, 2]", "bounds = [-2, 1e300]"), r"bounds\[1\] = 1e\+300"),
    (GOOD.replace('where = "act2"', "[x]\n" * 1), "unknown key 'x'"),
    ("a = " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply|not valid TOML"),
    # sampler = "es": population, sigma, step_size
    (ES + "population = 1\n", r"\[search\] population = 1 .*even integer in \[2, 1024\]"),
    (ES + "population = 7\n", r"population = 7 .*even integer"),
    (ES + "population = true\n", r"population = True .*even integer"),
    (ES + "sigma = 0\n", r"\[search\] sigma = 0 .*number in \(0, 1\]"),
    (ES + "sigma = -0.1\n", r"sigma = -0.1 .*\(0, 1\]"),
    (ES + "sigma = nan\n", r"sigma = nan "),
    (ES + "step_size = 2.0\n", r"\[search\] step_size = 2.0 .*\(0, 1\]"),
    (ES + "q = 3\n", r"q = 3 .*one population \(8\); leave q out"),
    (GOOD + "population = 8\n", r"population = 8 .*only used by sampler = \"es\""),
]


@pytest.mark.parametrize("text,match", BAD)
def test_bad_file_names_its_mistake(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match or r"\[search\].*unknown key 'colour'.*allowed keys") as err:
        load_study(p)
    if "TOML" not in (match or ""):
        assert str(p) in str(err.value)  # the file is named


def test_es_settings_and_defaults(tmp_path):
    cfg = load_study(_write(tmp_path, GOOD + 'sampler = "es"\n'))
    assert (cfg.population, cfg.sigma, cfg.step_size, cfg.q) == (8, 0.1, 0.1, 8)
    assert cfg.identity()["es"] == {"population": 8, "sigma": 0.1, "step_size": 0.1}
    text = GOOD + 'sampler = "es"\npopulation = 4\nsigma = 0.2\nstep_size = 0.3\n'
    cfg = load_study(_write(tmp_path, text))
    assert (cfg.population, cfg.sigma, cfg.step_size, cfg.q) == (4, 0.2, 0.3, 4)
    assert "es" not in load_study(_write(tmp_path, GOOD)).identity()


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_study("no/such/study.toml")


def test_not_text(tmp_path):
    p = tmp_path / "g.bfn"
    p.write_bytes(b"\x89BFN\x00\xff\xfe" * 10)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_study(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path)  # a directory


def test_config_in_code_is_validated():
    with pytest.raises(ConfigError, match="3\\*hidden\\+1 = 4"):
        StudyConfig(name="x", target="gaussians-mlp3", bounds=((0.0, 1.0),))
