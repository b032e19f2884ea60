"""The result of :func:`metabp.analysis.explain`: the rows trained and the forms fitted.

For one ``g`` per site (a ``metabp.PerSite``) each site's ``g`` has its own description and
fitted forms (``descriptions``, ``site_forms``); a row of ``forms`` is then a form set: the same
named form fitted at every site, trained as one ``PerSite``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabp.analysis._describe import Description
from metabp.analysis._forms import Form
from metabp.analysis._stats import mean_std


@dataclass
class AblationRow:
    """One trained row: ``g``, a form or the baseline, its lr and its AULC per held-out seed."""

    label: str
    kind: str  # "g", "form" or "baseline"
    optimizer: str
    lr: float
    aulcs: list[float]
    test_accuracy: list[float]
    form: Form | None = None
    share: float = math.nan
    z: float = math.nan  # paired z of this row - baseline
    z_g: float = math.nan  # paired z of this row - g

    @property
    def aulc(self) -> tuple[float, float]:
        return mean_std(self.aulcs)


@dataclass
class Explanation:
    """The result of :func:`explain`; ``description`` is None and ``sites`` non-empty for a ``PerSite``."""

    description: Description | None
    forms: list[Form]
    rows: list[AblationRow]
    seeds: list[int]
    target: str
    where: str | None
    activation: str
    lr: float
    g: Any = None
    g_meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""
    sites: list[str] = field(default_factory=list)
    descriptions: dict[str, Description] = field(default_factory=dict)
    site_forms: dict[str, list[Form]] = field(default_factory=dict)

    @property
    def zmax(self) -> float:
        """The forms were fitted on ``[-zmax, zmax]``."""
        return (self.description or next(iter(self.descriptions.values()))).zmax

    def row(self, kind: str) -> AblationRow:
        return next(r for r in self.rows if r.kind == kind)

    @property
    def form_rows(self) -> list[AblationRow]:
        return [r for r in self.rows if r.kind == "form"]

    @property
    def best_form(self) -> AblationRow | None:
        """The form that recovers the largest share of ``g``'s gain (None when undefined)."""
        rows = [r for r in self.form_rows if math.isfinite(r.share)]
        return max(rows, key=lambda r: r.share) if rows else None
