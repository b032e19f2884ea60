"""Selecting modules of a model by name, glob, index, or a list of these (``where=...``)."""

from __future__ import annotations

import fnmatch
import numbers
from collections.abc import Sequence
from typing import Any

from torch import nn

from metabp.exceptions import PatchError

Selector = str | int | Sequence[str | int]
ALLOWED = "a module name, a glob such as 'act*', an integer index, or a non-empty list of these"


def selectors(where: Any) -> list[str | int]:
    """``where`` as a list of names/globs and indices (Python or numpy integers); :class:`PatchError`
    for anything else (None, floats, bools, an empty list, nested lists)."""
    items = [where] if isinstance(where, (str, numbers.Integral)) else where
    if not isinstance(items, (list, tuple)) or not items:
        raise PatchError(f"where={where!r}: must be {ALLOWED}")
    for sel in items:
        if isinstance(sel, bool) or not isinstance(sel, (str, numbers.Integral)):
            raise PatchError(f"where={where!r}: {sel!r} is not a name, glob or index; must be {ALLOWED}")
    return [sel if isinstance(sel, str) else int(sel) for sel in items]


def select(found: dict[str, nn.Module], where: Selector, *, noun: str, plural: str,
           label: str = "where=") -> dict[str, nn.Module]:
    """The modules of ``found`` (name -> module, in module order) that ``where`` picks.

    ``where`` is a qualified name, a glob (``"act*"``), an index into ``found`` (``-1`` is the
    last), or a list of these; the result keeps module order. An unknown name, an index out of
    range, or a ``where`` of another type is a :class:`PatchError`; the message names the selector
    after ``label`` and lists the names there are.

    Example:
        >>> found = {"0": nn.Linear(2, 2), "1": nn.ReLU(), "2": nn.Tanh()}
        >>> list(select(found, ["2", 1], noun="module", plural="modules"))
        ['1', '2']
    """
    names = list(found)
    chosen: set[str] = set()
    for sel in selectors(where):
        if isinstance(sel, int):
            if not -len(names) <= sel < len(names):
                raise PatchError(
                    f"{label}{sel!r} is out of range: the model has {len(names)} {plural} "
                    f"({', '.join(names)})"
                )
            chosen.add(names[sel])
        else:
            hits = [n for n in names if n == sel or fnmatch.fnmatchcase(n, sel)]
            if not hits:
                raise PatchError(
                    f"{label}{sel!r} matches no {noun}; the model's {plural} are: {', '.join(names)}"
                )
            chosen.update(hits)
    return {n: found[n] for n in names if n in chosen}
