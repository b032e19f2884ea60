"""One ``g`` per site at the analyses' front door: a dict becomes a ``metabp.PerSite``, and a
``PerSite`` takes no ``where`` (its sites say where each ``g`` goes)."""

from __future__ import annotations

from typing import Any

from metabp import as_per_site, is_per_site
from metabp.exceptions import ConfigError


def per_site(bfn: Any, where: str | None) -> tuple[Any, list[str]]:
    """``bfn`` (a dict of b-functions as a ``PerSite``) and its sites (``[]`` unless one per site).

    Raises:
        ConfigError: ``where`` is given with a ``PerSite``.
    """
    bfn = as_per_site(bfn)
    if not is_per_site(bfn):
        return bfn, []
    if where is not None:
        raise ConfigError(f"where={where!r} with a PerSite: its sites {list(bfn)} say where each g goes; "
                          "leave where at None")
    return bfn, list(bfn)
