r"""Named forms for one ``g`` per site: each site's ``g_s`` described and fitted on its own, and
each named form gathered over the sites into one ``metabp.PerSite`` (a *form set*).

A form set's error pools the sites' grids (each site has the same :data:`~metabp.analysis._forms.GRID`
points):

.. math:: \mathrm{RMS} = \sqrt{\tfrac{1}{S}\textstyle\sum_s \mathrm{RMS}_s^2},
          \qquad \mathrm{relative} = \mathrm{RMS} \,/\, \sqrt{\tfrac{1}{S}\textstyle\sum_s \overline{g_s^2}}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from metabp import PerSite
from metabp.analysis._describe import Description, describe
from metabp.analysis._forms import Form, fit_forms, grid, values


def form_sets(g: PerSite, site_forms: Mapping[str, list[Form]], activation: str, zmax: float) -> list[Form]:
    """For each form name fitted at every site: one :class:`Form` whose ``bfn`` is the ``PerSite``
    of the sites' fitted forms, ``params`` ``{site: params}``, text ``"act1: ...; act2: ..."``."""
    z = grid(zmax)
    scale = math.sqrt(float(np.mean([np.mean(values(h, z, activation) ** 2) for h in g.values()])))
    names = [f.name for f in next(iter(site_forms.values()))]
    out = []
    for name in names:
        forms = {s: next((f for f in fs if f.name == name), None) for s, fs in site_forms.items()}
        if any(f is None for f in forms.values()):
            continue
        rms = math.sqrt(float(np.mean([f.rms**2 for f in forms.values()])))
        rel = rms / scale if scale > 0 else (0.0 if rms == 0 else math.inf)
        bfn = PerSite({s: f.bfn for s, f in forms.items()})
        text = "; ".join(f"`{s}`: {f.text}" for s, f in forms.items())
        out.append(Form(name, {s: f.params for s, f in forms.items()}, bfn, rms, rel, text=text))
    return out


class SiteFits(NamedTuple):
    """:func:`fit_sites`'s result: site -> description, site -> fitted forms, the form sets."""

    descriptions: dict[str, Description]
    site_forms: dict[str, list[Form]]
    form_sets: list[Form]


def fit_sites(g: PerSite, activation: str, *, zmax: float, knots: int, box: tuple[float, float] | None
              ) -> SiteFits:
    """Each site's description and fitted forms, and the form sets (:func:`form_sets`)."""
    descriptions = {s: describe(h, activation, zmax=zmax, box=box) for s, h in g.items()}
    site_forms = {s: fit_forms(h, activation, zmax=zmax, knots=knots) for s, h in g.items()}
    return SiteFits(descriptions, site_forms, form_sets(g, site_forms, activation, zmax))
