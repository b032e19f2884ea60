"""Selecting modules of a model by name, glob, index, or a list of these (``where=...``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from metabp.exceptions import PatchError

Selector = str | int | Sequence[str | int]


def select(found: dict[str, nn.Module], where: Selector, *, noun: str, plural: str) -> dict[str, nn.Module]:
    """The modules of ``found`` (name -> module, in module order) that ``where`` picks.

    ``where`` is a qualified name, a glob (``"act*"``), an index into ``found`` (``-1`` is the
    last), or a list of these; the result keeps module order. An unknown name or an index out of
    range is a :class:`PatchError` that lists the names there are.
    """
    names = list(found)
    selectors = [where] if isinstance(where, (str, int)) else list(where)
    chosen: set[str] = set()
    for sel in selectors:
        if isinstance(sel, int):
            if not -len(names) <= sel < len(names):
                raise PatchError(
                    f"where={sel!r} is out of range: the model has {len(names)} {plural} "
                    f"({', '.join(names)})"
                )
            chosen.add(names[sel])
        else:
            hits = [n for n in names if n == sel or fnmatch.fnmatchcase(n, sel)]
            if not hits:
                raise PatchError(
                    f"where={sel!r} matches no {noun}; the model's {plural} are: {', '.join(names)}"
                )
            chosen.update(hits)
    return {n: found[n] for n in names if n in chosen}
