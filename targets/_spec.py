"""Target presets: a frozen, validated :class:`TargetSpec` per named target, and its model and data.

A target is the network whose training scores a b-function. ``get_target(name, **overrides)``
returns the preset with any field replaced; ``build_model(spec, seed)`` and
``load_data(spec, data_dir)`` give the pieces :func:`metabp.targets.train` puts together.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from metabp.exceptions import ConfigError
from metabp.targets._amp import check_amp, check_channels_last, with_options
from metabp.targets._data import Data
from metabp.targets._init import check_init, initialize
from metabp.targets._net_common import check_activation
from metabp.targets._optim import check_lr, check_optimizer

# dataset -> (input shape of one example, number of classes)
DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "gaussians": ((2,), 2),
    "digits": ((64,), 10),
    "mnist1d": ((1, 40), 10),
    "fashion": ((1, 28, 28), 10),
    "fashion32": ((1, 32, 32), 10),  # Fashion-MNIST zero-padded to 32 x 32 (SimpleNet's input size)
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}
NETWORKS = ("mlp", "lenet", "cnn1d", "simplenet")
DEFAULT_MAX_LOSS = 100.0
# limits that keep a typo from asking for terabytes or years
MAX_EPOCHS = 100_000
MAX_EXAMPLES = 100_000_000  # batch_size, train_size
MAX_WIDTH = 65_536  # one hidden layer of an mlp
MAX_LAYERS = 64
MAX_WIDTH_MULTIPLIER = 64.0  # simplenet's width


@dataclass(frozen=True)
class TargetSpec:
    """Everything that defines one target's training run (besides the seed and the b-function).

    Attributes:
        name: the preset's name (kept when fields are overridden).
        dataset: ``gaussians``, ``digits``, ``mnist1d``, ``fashion``, ``fashion32`` (padded to
            32 x 32), ``mnist`` or ``cifar10``.
        network: ``mlp``, ``lenet``, ``cnn1d`` or ``simplenet``.
        optimizer: one of :data:`metabp.targets.OPTIMIZERS` (``adam``, ``sgd``, ...).
        lr: learning rate, finite and > 0.
        epochs: passes over the training set, >= 1.
        batch_size: examples per step; ``None`` is full batch (one step an epoch).
        init: ``he``, ``uniform`` (1/sqrt(fan_in)), ``glorot`` (alias ``normalized``) or ``default``.
        where: the preset's patch site for the b-function (``"act2"``: the activation after fc2).
        activation: the hidden units' activation (``relu``, ``tanh``, ...).
        feedback: ``None`` or a mode for ``metabp.feedback(model, mode)`` (feedback alignment, ...).
        trainable: ``None`` (all parameters train) or a glob of parameter names (``"fc2.*"``);
            the others are frozen.
        max_loss: the divergence cap: a step loss above it, or NaN/inf, stops the run as diverged.
        hidden: hidden widths of an ``mlp``.
        bias: whether linear/conv layers have biases.
        width: channel multiplier of ``simplenet`` (1.0 = the published network).
        train_size: use only the first ``train_size`` training examples (``None``: all).
        amp: ``None`` (float32), ``"bf16"`` or ``"fp16"``: the forward pass under autocast (see
            ``metabp.targets._amp``); off by default, unmeasured on a GPU.
        channels_last: conv weights in channels-last memory (``lenet``, ``simplenet`` only).
    """

    name: str
    dataset: str
    network: str
    optimizer: str = "adam"
    lr: float = 0.001
    epochs: int = 1
    batch_size: int | None = None
    init: str = "he"
    where: str = "act1"
    activation: str = "relu"
    feedback: str | None = None
    trainable: str | None = None
    max_loss: float = DEFAULT_MAX_LOSS
    hidden: tuple[int, ...] = (100, 100)
    bias: bool = True
    width: float = 1.0
    train_size: int | None = None
    amp: str | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        for key in ("name", "dataset", "network"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{key}={getattr(self, key)!r} must be a string")
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset={self.dataset!r} is not known; choose one of {', '.join(DATASETS)}")
        if self.network not in NETWORKS:
            raise ConfigError(f"network={self.network!r} is not known; choose one of {', '.join(NETWORKS)}")
        object.__setattr__(self, "optimizer", check_optimizer(self.optimizer))
        object.__setattr__(self, "lr", check_lr(self.lr))
        object.__setattr__(self, "init", check_init(self.init))
        object.__setattr__(self, "activation", check_activation(self.activation))
        object.__setattr__(self, "hidden", _hidden(self.hidden))
        check_amp(self.amp)
        check_channels_last(self.channels_last, self.network)
        _int_in("epochs", self.epochs, MAX_EPOCHS)
        for key in ("batch_size", "train_size"):
            if getattr(self, key) is not None:
                _int_in(key, getattr(self, key), MAX_EXAMPLES)
        _number_in("max_loss", self.max_loss, 0.0, math.inf)
        _number_in("width", self.width, 0.0, MAX_WIDTH_MULTIPLIER)
        if not isinstance(self.bias, bool):
            raise ConfigError(f"bias={self.bias!r} must be true or false")
        if not isinstance(self.where, str):
            raise ConfigError(f"where={self.where!r} must be an activation name such as 'act2'")
        for key in ("feedback", "trainable"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}={value!r} must be a string or None")

    @property
    def in_shape(self) -> tuple[int, ...]:
        return DATASETS[self.dataset][0]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset][1]


def _int_in(key: str, value: object, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{key}={value!r} must be an int in [1, {most}]")


def _number_in(key: str, value: object, above: float, most: float) -> None:
    """``value`` a real number (not a bool) with ``above < value <= most``, and finite."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not above < value <= most):
        raise ConfigError(f"{key}={value!r} must be a finite number > {above:g}"
                          + (f" and <= {most:g}" if math.isfinite(most) else ""))


def _hidden(value: object) -> tuple[int, ...]:
    """Hidden widths as a tuple of ints in ``[1, MAX_WIDTH]`` (a list or tuple, not a string)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"hidden={value!r} must be a list of ints such as [32, 32], not a "
                          f"{type(value).__name__}")
    if not value or len(value) > MAX_LAYERS or any(
            isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_WIDTH for h in value):
        raise ConfigError(f"hidden={value!r} must be a non-empty list of at most {MAX_LAYERS} ints in "
                          f"[1, {MAX_WIDTH}]")
    return tuple(value)


PRESETS: dict[str, TargetSpec] = {s.name: s for s in (
    # implicit-learning-rate paper, section 3.1: Input -> FC1 -> ReLU -> FC2 -> ReLU -> FC3, no biases,
    # Adam 0.1, full batch, 100 epochs
    TargetSpec("gaussians-mlp3", "gaussians", "mlp", optimizer="adam", lr=0.1, epochs=100,
               batch_size=None, where="act2", hidden=(16, 16), bias=False),
    TargetSpec("digits-mlp", "digits", "mlp", optimizer="adam", lr=0.01, epochs=10, batch_size=64,
               where="act2", hidden=(32, 32)),
    # MNIST-1D's baselines: Adam 1e-2, batch 100 (Greydanus 2020)
    TargetSpec("mnist1d-mlp", "mnist1d", "mlp", optimizer="adam", lr=0.01, epochs=50, batch_size=100,
               where="act2", hidden=(100, 100)),
    TargetSpec("mnist1d-cnn", "mnist1d", "cnn1d", optimizer="adam", lr=0.01, epochs=50, batch_size=100,
               where="act2"),
    TargetSpec("fashion-mlp", "fashion", "mlp", optimizer="adam", lr=0.001, epochs=2, batch_size=128,
               where="act2", hidden=(256, 256)),
    TargetSpec("fashion-lenet", "fashion", "lenet", optimizer="adam", lr=0.001, epochs=2,
               batch_size=128, where="act3"),
    TargetSpec("mnist-mlp", "mnist", "mlp", optimizer="adam", lr=0.001, epochs=2, batch_size=128,
               where="act2", hidden=(256, 256)),
    TargetSpec("mnist-lenet", "mnist", "lenet", optimizer="adam", lr=0.001, epochs=2, batch_size=128,
               where="act3"),
    # implicit-learning-rate paper, section 3.2: SimpleNet, Adadelta lr 0.01, 5 epochs, the b-function
    # in one conv block's ReLU
    TargetSpec("cifar10-simplenet", "cifar10", "simplenet", optimizer="adadelta", lr=0.01, epochs=5,
               batch_size=128, where="act4"),
    # the same protocol on Fashion-MNIST padded to 32 x 32 (one channel)
    TargetSpec("fashion-simplenet", "fashion32", "simplenet", optimizer="adadelta", lr=0.01, epochs=5,
               batch_size=128, where="act4"),
)}

FIELDS = tuple(f.name for f in dataclasses.fields(TargetSpec))


def list_targets() -> list[str]:
    """Names of the presets ``get_target`` knows."""
    return list(PRESETS)


def get_target(name: str | TargetSpec, /, **overrides: object) -> TargetSpec:
    """The preset ``name`` with ``overrides`` replacing its fields (validated).

    Example:
        >>> spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=20)
        >>> spec.optimizer, spec.lr, spec.epochs, spec.where
        ('sgd', 0.5, 20, 'act2')
    """
    if isinstance(name, TargetSpec):
        base = name
    elif isinstance(name, str) and name in PRESETS:
        base = PRESETS[name]
    else:
        raise ConfigError(f"target={name!r} is not known; choose one of {', '.join(PRESETS)}")
    unknown = [k for k in overrides if k not in FIELDS or k == "name"]
    if unknown:
        raise ConfigError(
            f"get_target({base.name!r}): unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(f for f in FIELDS if f != 'name')}"
        )
    return dataclasses.replace(base, **overrides)


# ----------------------------------------------------------------------------- model and data
def _factory(spec: TargetSpec) -> Callable[[], nn.Module]:
    from metabp.targets._net_cnn1d import cnn1d
    from metabp.targets._net_lenet import lenet
    from metabp.targets._net_mlp import mlp
    from metabp.targets._net_simplenet import simplenet

    shape, classes, act = spec.in_shape, spec.num_classes, spec.activation
    return {
        "mlp": lambda: mlp(shape, classes, hidden=spec.hidden, activation=act, bias=spec.bias),
        "lenet": lambda: lenet(shape, classes, activation=act),
        "cnn1d": lambda: cnn1d(shape, classes, activation=act),
        "simplenet": lambda: simplenet(shape, classes, activation=act, width=spec.width),
    }[spec.network]


def build_model(spec: TargetSpec, seed: int = 0) -> nn.Sequential:
    """The target network with its initial weights for ``seed`` (the same for every candidate),
    its forward under ``spec.amp`` and its conv weights channels-last if ``spec.channels_last``.

    Construction runs under a forked global RNG seeded with ``seed``; the named ``init`` then
    draws from a ``torch.Generator`` seeded with ``seed``. The global RNG is left untouched.
    """
    if spec.network in ("lenet",) and spec.in_shape != (1, 28, 28):
        raise ConfigError(f"network='lenet' needs 28x28 images, dataset={spec.dataset!r} has {spec.in_shape}")
    if spec.network == "cnn1d" and len(spec.in_shape) != 2:
        raise ConfigError(f"network='cnn1d' needs 1-D signals, dataset={spec.dataset!r} has {spec.in_shape}")
    if spec.network == "simplenet" and len(spec.in_shape) != 3:
        raise ConfigError(f"network='simplenet' needs images, dataset={spec.dataset!r} has {spec.in_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _factory(spec)()
    initialize(model, spec.init, torch.Generator().manual_seed(seed))
    return with_options(model, spec.amp, spec.channels_last)


def load_data(spec: TargetSpec, data_dir: str | os.PathLike | None = None) -> Data:
    """The dataset of ``spec`` in memory (cached per process); ``DataError`` if files are missing."""
    from metabp.targets import _data_cifar10, _data_digits, _data_gaussians, _data_idx, _data_mnist1d

    data = {
        "gaussians": lambda: _data_gaussians.load_gaussians(),
        "digits": lambda: _data_digits.load_digits(),
        "mnist1d": lambda: _data_mnist1d.load_mnist1d(),
        "fashion": lambda: _data_idx.load_fashion(data_dir),
        "fashion32": lambda: _data_idx.load_fashion(data_dir, pad_to=32),
        "mnist": lambda: _data_idx.load_mnist(data_dir),
        "cifar10": lambda: _data_cifar10.load_cifar10(data_dir),
    }[spec.dataset]()
    if spec.train_size is not None and spec.train_size < len(data.y_train):
        data = Data(data.x_train[: spec.train_size], data.y_train[: spec.train_size], data.x_test,
                    data.y_test, data.num_classes)
    return data


__all__ = ["TargetSpec", "PRESETS", "get_target", "list_targets", "build_model", "load_data",
           "DATASETS", "NETWORKS", "DEFAULT_MAX_LOSS"]
