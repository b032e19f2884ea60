"""CPU threads while training: one context manager, and the choice ``threads="auto"`` makes."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from metabp.exceptions import ConfigError
from metabp.targets._spec import TargetSpec, build_model

SMALL_TARGET_PARAMS = 1_000_000  # below this many parameters "auto" trains with 1 thread


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave it), restoring it after.

    Example:
        >>> before = torch.get_num_threads()
        >>> with num_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recommended_threads(spec: TargetSpec, device: str | torch.device = "cpu") -> int | None:
    """Threads for training ``spec`` on ``device``: 1 for small CPU targets, else ``None`` (torch's).

    Small networks (under ``SMALL_TARGET_PARAMS`` parameters) are bound by per-op overhead, so a
    second thread buys little; with one thread per run, several runs (or study workers) share
    the cores without contending. ``benchmarks/train_many.py`` measures 1 thread against all.
    Large ones use every core.
    """
    if torch.device(device).type != "cpu":
        return None
    return 1 if _num_params(spec) < SMALL_TARGET_PARAMS else None


@functools.lru_cache(maxsize=64)
def _num_params(spec: TargetSpec) -> int:
    return sum(p.numel() for p in build_model(spec, 0).parameters())


def resolve_threads(threads: int | str | None, spec: TargetSpec, device: str | torch.device) -> int | None:
    """``threads`` as ``num_threads`` takes it: ``"auto"`` -> :func:`recommended_threads`."""
    if threads == "auto":
        return recommended_threads(spec, device)
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        return threads
    raise ConfigError(f"threads={threads!r} must be 'auto', None or an int >= 1")


__all__ = ["num_threads", "recommended_threads", "resolve_threads", "SMALL_TARGET_PARAMS"]
