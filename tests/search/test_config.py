"""Study files: a good one loads; each mistake is an error naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    cfg = load_study(path)
    assert cfg.n_trials >= cfg.n_initial and cfg.num_params == 3 * cfg.hidden + 1


def test_per_parameter_bounds(tmp_path):
    text = GOOD.replace("bounds = [-2, 2]", "bounds = [[-1, 1], [-2, 2], [-3, 3], [0, 1]]")
    assert load_study(_write(tmp_path, text)).bounds[2] == (-3.0, 3.0)


BAD = [
    ("[search]\nn_trials = 5\n", "missing key 'preset'"),
    (GOOD + "colour = 1\n", None),  # lands in [search]: unknown key
    (GOOD.replace("n_trials = 5", "n_trials = 0"), r"\[search\] n_trials = 0 .*integer >= 1"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nsampler = 'annealing'"), "sampler = 'annealing'.*botorch"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nacquisition = 'ucb'"), "acquisition = 'ucb'.*logei, qlogei"),
    (GOOD.replace("n_trials = 5", "n_trials = 5\nq = 4"), 'q = 4 .*needs acquisition = "qlogei"'),
    (GOOD.replace("bounds = [-2, 2]", "bounds = [2, -2]"), r"bounds\[0\] = \[2.0, -2.0\].*lo < hi"),
    (GOOD.replace("bounds = [-2, 2]", "bounds = [[-1, 1], [0, 1]]"), "2 .* pairs .* 3\\*hidden\\+1 = 4"),
    (GOOD.replace("bounds = [-2, 2]", 'bounds = "wide"'), "bounds = 'wide'.*\\[lo, hi\\]"),
    (GOOD.replace("hidden = 1", "hidden = 0"), r"\[metanet\] hidden = 0 .*integer >= 1"),
    (GOOD.replace("hidden = 1", "hidden = 1\nwidth = 3"), r"\[metanet\].*unknown key 'width'.*act, hidden"),
    (GOOD.replace('where = "act2"', 'wher = "act2"'), "unknown key 'wher'"),
    (GOOD.replace("epochs = 3", "epochz = 3"), r"\[target\].*epochz"),
    (GOOD.replace('"gaussians-mlp3"', '"imagenet-vit"'), "imagenet-vit"),
    ("[target\n", "not valid TOML"),
]


@pytest.mark.parametrize("text,match", BAD)
def test_bad_file_names_its_mistake(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match or r"\[search\].*unknown key 'colour'.*allowed keys") as err:
        load_study(p)
    if "TOML" not in (match or ""):
        assert str(p) in str(err.value)  # the file is named


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_study("no/such/study.toml")


def test_config_in_code_is_validated():
    with pytest.raises(ConfigError, match="3\\*hidden\\+1 = 4"):
        StudyConfig(name="x", target="gaussians-mlp3", bounds=((0.0, 1.0),))
