"""Bad input at the targets' public surface raises a named ConfigError (argument, value, what is allowed)."""

import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.targets import get_target, train, train_many

GAUSS = get_target("gaussians-mlp3", epochs=1)


@pytest.mark.parametrize("overrides, pattern", [
    ({"lr": True}, r"Invalid learning rate: True \(lr must be a finite number > 0\)"),
    ({"lr": 0.0}, r"Invalid learning rate: 0\.0"),
    ({"lr": float("inf")}, r"Invalid learning rate: inf"),
    ({"lr": "0.1"}, r"Invalid learning rate: '0\.1'"),
    ({"epochs": True}, r"epochs=True must be an int in \[1, 100000\]"),
    ({"epochs": 10**9}, r"epochs=1000000000 must be an int in \[1, 100000\]"),
    ({"batch_size": 0}, r"batch_size=0 must be an int in \[1, 100000000\]"),
    ({"batch_size": 10**12}, r"batch_size=1000000000000 must be an int"),
    ({"train_size": -5}, r"train_size=-5 must be an int"),
    ({"hidden": "16"}, r"hidden='16' must be a list of ints such as \[32, 32\], not a str"),
    ({"hidden": 16}, r"hidden=16 must be a list of ints"),
    ({"hidden": [16, True]}, r"hidden=\[16, True\] must be a non-empty list of at most 64 ints in "
                             r"\[1, 65536\]"),
    ({"hidden": [10**30]}, r"hidden=\[10+\] must be a non-empty list"),
    ({"hidden": [16.5]}, r"hidden=\[16\.5\] must be a non-empty list"),
    ({"max_loss": True}, r"max_loss=True must be a finite number > 0"),
    ({"max_loss": 0}, r"max_loss=0 must be a finite number > 0"),
    ({"width": float("nan")}, r"width=nan must be a finite number > 0 and <= 64"),
    ({"bias": 1}, r"bias=1 must be true or false"),
    ({"activation": "linear"}, r"activation='linear' is not a target network activation; choose one of relu"),
    ({"activation": 3}, r"activation=3 must be a name such as 'relu'"),
    ({"where": 2}, r"where=2 must be an activation name"),
    ({"name": "x"}, r"unknown key\(s\) 'name'"),
])
def test_bad_overrides_are_named(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_target("digits-mlp", **overrides)


def test_good_overrides_are_canonical():
    spec = get_target("digits-mlp", hidden=[8, 4], activation="swish", lr=1)
    assert spec.hidden == (8, 4) and spec.activation == "silu" and spec.lr == 1.0
    assert train(get_target("gaussians-mlp3", epochs=2, activation="swish"), seed=0).step_losses


@pytest.mark.parametrize("name", [["digits-mlp"], None, 3])
def test_a_target_name_that_is_not_a_string_is_named(name):
    with pytest.raises(ConfigError, match=r"target=.* is not known; choose one of gaussians-mlp3"):
        get_target(name)


@pytest.mark.parametrize("fn", [train, lambda spec, **kw: train_many(spec, [None], **kw)],
                         ids=["train", "many"])
@pytest.mark.parametrize("kw, pattern", [
    ({"seed": 2**63}, r"seed=9223372036854775808 must be an int in \[0, 2\*\*63 - 1\]"),
    ({"seed": -1}, r"seed=-1 must be an int"),
    ({"seed": True}, r"seed=True must be an int"),
    ({"seed": 1.0}, r"seed=1\.0 must be an int"),
    ({"device": "bogus"}, r"device='bogus' is not a device; available here: cpu"),
    ({"device": 3.5}, r"device=3\.5 is not a device"),
    ({"compile": "yes"}, r"compile='yes' must be True or False"),
    ({"progress": "x"}, r"progress='x' must be True or False"),
    ({"data_dir": 3}, r"data_dir=3 must be a directory path \(a string\) or None"),
    ({"threads": True}, r"threads=True must be 'auto', None or an int >= 1"),
])
def test_bad_run_arguments_are_named(fn, kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        fn(GAUSS, **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_devices_there_are():
    with pytest.raises(ConfigError, match=r"device='cuda' is not available here; available: cpu"):
        train(GAUSS, device="cuda")
    with pytest.raises(ConfigError, match=r"device='cuda:1' is not available here"):
        train_many(GAUSS, [None, None], device="cuda:1")
