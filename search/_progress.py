"""What a study shows while it runs: Optuna kept quiet, a tqdm bar, and where the time went.

A study's wall time splits into training (the trials' ``seconds``: for a batch, the batched
run's wall time shared among its copies), proposing (system attr ``metabp:propose_seconds``: the
sampler's time to draw each point) and other (the rest: storage, bookkeeping).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from . import _schema as schema

PROPOSE = schema.PROPOSE_SECONDS


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's log level at WARNING while the block runs, restored after."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def progress_bar(*, total: int, enabled: bool, name: str) -> Any:
    """A tqdm bar over trials on stderr (``enabled=False``: a silent one)."""
    from tqdm.auto import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tqdm(total=total, disable=not enabled, desc=name, unit="trial", dynamic_ncols=True,
                    file=sys.stderr)


def time_split(trials: Sequence[FrozenTrial]) -> dict[str, float]:
    """Seconds spent training and proposing, summed over ``trials``."""
    return {"training": sum(float(t.user_attrs.get(schema.SECONDS) or 0.0) for t in trials),
            "proposing": sum(float(t.system_attrs.get(PROPOSE) or 0.0) for t in trials)}


def split_line(name: str, split: dict[str, float]) -> str:
    """``name: N trials in W s: training T s (x%), proposing P s (y%), other O s`` for a
    :func:`time_split` with ``other``, ``wall`` and ``trials`` added."""
    wall = split["wall"]
    pct = {k: 100 * split[k] / wall for k in ("training", "proposing")}
    return (f"{name}: {split['trials']} trials in {wall:.1f} s: training {split['training']:.1f} s "
            f"({pct['training']:.0f}%), proposing {split['proposing']:.1f} s ({pct['proposing']:.0f}%), "
            f"other {split['other']:.1f} s")
