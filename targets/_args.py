"""Checks of the run arguments ``train`` and ``train_many`` share: the spec, b-functions, seeds,
learning rates, the device."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Sequence

import torch

from metabp import BFunction, PerSite, as_per_site
from metabp.exceptions import ConfigError, MetabpError
from metabp.targets._optim import check_lr
from metabp.targets._spec import TargetSpec

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; the signed range is portable


def check_spec(spec: object) -> TargetSpec:
    """``spec`` if it is a :class:`TargetSpec`; ``ConfigError`` otherwise."""
    if not isinstance(spec, TargetSpec):
        raise ConfigError(f"spec={spec!r} is not a TargetSpec; build one with get_target(name)")
    return spec


def check_bfn(bfn: object, name: str = "bfn") -> BFunction | PerSite | None:
    """``bfn`` if it is a b-function, a ``PerSite`` (a dict ``{site: g}`` becomes one) or ``None``
    (plain backprop); ``ConfigError`` naming ``name`` otherwise."""
    try:
        bfn = as_per_site(bfn)
    except MetabpError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if bfn is not None and not isinstance(bfn, BFunction | PerSite):
        raise ConfigError(f"{name}={bfn!r} is not a b-function (MetaNet, Derivative, Scaled), a "
                          "PerSite {site: b-function}, or None")
    return bfn


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2**63 - 1]``; ``ConfigError`` naming ``name`` otherwise (bools too)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"{name}={seed!r} must be an int in [0, 2**63 - 1]")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"{name}={seed!r} must be an int in [0, 2**63 - 1]")
    return int(seed)


def check_seeds(seed: object, copies: int) -> list[int]:
    """One seed per copy: an int for every copy, or a sequence of ``copies`` ints.

    Example:
        >>> check_seeds(3, 2), check_seeds([0, 1], 2)
        ([3, 3], [0, 1])
    """
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, torch.Tensor)) and not hasattr(
            seed, "__array__"):
        return [check_seed(seed)] * copies
    seeds = [v.item() if isinstance(v, torch.Tensor) else v for v in seed]
    if len(seeds) != copies:
        raise ConfigError(f"seed={list(seed)!r} has {len(seeds)} entries; train_many needs one int or "
                          f"one seed per b-function ({copies})")
    return [check_seed(v, f"seed[{k}]") for k, v in enumerate(seeds)]


def check_lrs(lr: object, copies: int, default: float) -> list[float]:
    """One learning rate per copy: ``None`` (``default`` for every copy), a number for every copy,
    or a sequence of ``copies`` numbers, each finite and > 0.

    Example:
        >>> check_lrs(None, 2, 0.01), check_lrs(0.1, 2, 0.01), check_lrs([0.1, 1], 2, 0.01)
        ([0.01, 0.01], [0.1, 0.1], [0.1, 1.0])
    """
    if lr is None:
        return [float(default)] * copies
    if isinstance(lr, torch.Tensor) and lr.dim() == 0:
        lr = lr.item()
    if isinstance(lr, (numbers.Number, str, bytes)) or not isinstance(lr, Iterable):
        return [check_lr(lr)] * copies
    lrs = [v.item() if isinstance(v, torch.Tensor) and v.dim() == 0 else v for v in lr]
    if len(lrs) != copies:
        raise ConfigError(f"lr={list(lr)!r} has {len(lrs)} entries; train_many needs one number or "
                          f"one learning rate per b-function ({copies})")
    return [check_lr(v, f"lr[{k}]") for k, v in enumerate(lrs)]


def check_flag(value: object, name: str) -> bool:
    """``value`` if it is a bool; ``ConfigError`` naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be True or False")
    return value


def check_data_dir(data_dir: object) -> object:
    """``data_dir`` if it is ``None``, a string or a path; ``ConfigError`` otherwise."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir={data_dir!r} must be a directory path (a string) or None")
    return data_dir


def check_callbacks(callbacks: object) -> tuple[Callable, ...]:
    """``callbacks`` as a tuple of callables; ``ConfigError`` naming the one that is not."""
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise ConfigError(f"callbacks={callbacks!r} must be a list of functions cb(event)")
    out = tuple(callbacks)
    for k, cb in enumerate(out):
        if not callable(cb):
            raise ConfigError(f"callbacks[{k}]={cb!r} is not callable; a callback is a function cb(event)")
    return out


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; ``ConfigError`` naming what is available."""
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        available.append("mps")
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device={device!r} is not a device; available here: "
                          f"{', '.join(available)}") from None
    ok = dev.type == "cpu" or (
        dev.type == "cuda" and torch.cuda.is_available()
        and (dev.index is None or dev.index < torch.cuda.device_count())
    ) or (dev.type == "mps" and torch.backends.mps.is_available())
    if not ok:
        raise ConfigError(f"device={device!r} is not available here; available: {', '.join(available)}")
    return dev


__all__ = ["check_spec", "check_bfn", "check_seed", "check_seeds", "check_lrs", "check_device", "check_flag",
           "check_callbacks", "check_data_dir", "MAX_SEED"]
