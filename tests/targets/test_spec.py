import dataclasses
import math

import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.targets import PRESETS, build_model, get_target, list_targets
from metabp.targets._init import initialize


def test_presets_listed_and_valid():
    names = list_targets()
    for expected in ("gaussians-mlp3", "digits-mlp", "mnist1d-mlp", "mnist1d-cnn", "fashion-mlp",
                     "fashion-lenet", "mnist-mlp", "mnist-lenet", "cifar10-simplenet", "fashion-simplenet"):
        assert expected in names
    for name in names:
        assert get_target(name) == PRESETS[name]


def test_overrides_replace_fields_and_keep_the_rest():
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=20)
    assert (spec.optimizer, spec.lr, spec.epochs) == ("sgd", 0.5, 20)
    assert (spec.name, spec.where, spec.batch_size, spec.bias) == ("gaussians-mlp3", "act2", None, False)
    assert get_target("digits-mlp", hidden=[8, 4]).hidden == (8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lr = 1.0  # frozen


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'learning_rate'.*allowed keys: .*\blr\b"):
        get_target("gaussians-mlp3", learning_rate=0.1)


@pytest.mark.parametrize("overrides, pattern", [
    ({"lr": -1.0}, r"Invalid learning rate: -1\.0"),
    ({"lr": float("nan")}, r"Invalid learning rate: nan"),
    ({"optimizer": "lbfgs"}, r"optimizer='lbfgs' is not known; choose one of sgd, momentum"),
    ({"epochs": 0}, r"epochs=0 must be an int in \[1, 100000\]"),
    ({"batch_size": 2.5}, r"batch_size=2\.5 must be an int in \[1, "),
    ({"init": "orthogonal"}, r"init='orthogonal' is not known; choose one of he, uniform, glorot"),
    ({"activation": "swoosh"}, r"activation='swoosh' is not known"),
    ({"max_loss": float("inf")}, r"max_loss=inf must be a finite number > 0"),
    ({"hidden": []}, r"hidden=\[\] must be a non-empty list"),
])
def test_bad_values_are_named(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_target("digits-mlp", **overrides)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match=r"target='imagenet' is not known; choose one of gaussians-mlp3"):
        get_target("imagenet")


def test_gaussians_mlp3_is_the_paper_network():
    model = build_model(get_target("gaussians-mlp3"), seed=0)
    assert [n for n, _ in model.named_children()] == ["fc1", "act1", "fc2", "act2", "fc3"]
    assert all(n.endswith("weight") for n, _ in model.named_parameters())  # no biases
    assert isinstance(model.act2, torch.nn.ReLU)


def test_same_seed_same_weights_and_global_rng_untouched():
    spec = get_target("digits-mlp")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_model(spec, 0), build_model(spec, 0), build_model(spec, 1)
    assert torch.equal(torch.rand(1), before)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


@pytest.mark.parametrize("init", ["he", "uniform", "glorot", "normalized"])
def test_inits_follow_their_formula(init):
    fan_in, fan_out = 400, 300
    layer = torch.nn.Linear(fan_in, fan_out)
    initialize(layer, init, torch.Generator().manual_seed(0))
    w = layer.weight
    assert torch.count_nonzero(layer.bias) == 0
    if init == "he":
        assert abs(w.std().item() - math.sqrt(2 / fan_in)) < 0.02 * math.sqrt(2 / fan_in)
    else:
        bound = 1 / math.sqrt(fan_in) if init == "uniform" else math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.99 * bound
