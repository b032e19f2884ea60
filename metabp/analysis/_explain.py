r"""What a found ``g`` is: a description, named simple forms fitted to it, and an ablation.

:func:`explain` describes ``g`` (:mod:`~metabp.analysis._describe`), fits the named forms
(:mod:`~metabp.analysis._forms`), then trains ``g``, every form (both at ``g``'s lr) and a
baseline (the best tuned one, when known) on held-out seeds, paired by seed. A form's share of
``g``'s gain over the baseline is

.. math:: \mathrm{share} = \frac{\overline{A}_\mathrm{base} - \overline{A}_\mathrm{form}}
                                {\overline{A}_\mathrm{base} - \overline{A}_g}

(mean AULCs; 1: the form does all ``g`` does, 0: no better than the baseline), undefined when
``g`` has no gain. ``z`` is the paired difference form - baseline in standard errors
(:mod:`metabp.analysis._stats`).

For one ``g`` per site (a ``metabp.PerSite``) every site's ``g_s`` is described and fitted on its
own, and each row of the ablation trains one named form fitted at every site, as one ``PerSite``
(:mod:`metabp.analysis._explain_sites`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from metabp import BFunction, PerSite, is_per_site
from metabp.analysis._describe import Description, describe
from metabp.analysis._explain_output import to_markdown, write
from metabp.analysis._explain_result import AblationRow, Explanation
from metabp.analysis._explain_sites import fit_sites
from metabp.analysis._forms import Form, fit_forms
from metabp.analysis._per_site import per_site
from metabp.analysis._stats import paired
from metabp.exceptions import ConfigError


def _check(seeds: Sequence[int], lr: float, zmax: float) -> list[int]:
    if isinstance(seeds, (int, str)) or not seeds or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds={seeds!r}: give a non-empty list of ints >= 0 (held-out seeds)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ConfigError(f"lr={lr!r}: g's learning rate must be a finite number > 0")
    if not (isinstance(zmax, (int, float)) and 0 < zmax < 1e3):
        raise ConfigError(f"zmax={zmax!r}: the fitting range [-zmax, zmax] needs 0 < zmax < 1000")
    return [int(s) for s in seeds]


def ablate(g: BFunction | PerSite, forms: Sequence[Form], spec: Any, baseline: tuple[str, Any],
           seeds: Sequence[int], *, where: str | None, lr: float, device: str = "cpu",
           data_dir: Any = None) -> list[AblationRow]:
    """Train ``g`` and every form at ``lr`` (one batched run) and ``baseline = (label, spec)``
    (plain backprop with that spec's optimizer and lr) on ``seeds``; rows g, forms, baseline.
    ``where`` is None for a ``PerSite`` ``g`` (its sites patch)."""
    from metabp.targets import train_many

    n = len(seeds)
    bfns = [g] + [f.bfn for f in forms]
    at_lr = dataclasses.replace(spec, lr=float(lr))
    runs = train_many(at_lr, [b for b in bfns for _ in seeds], where, seed=list(seeds) * len(bfns),
                      device=device, data_dir=data_dir)
    label, base_spec = baseline
    base = train_many(base_spec, [None] * n, None, seed=list(seeds), device=device, data_dir=data_dir)
    rows = [AblationRow("g", "g", spec.optimizer, float(lr), [r.aulc for r in runs[:n]],
                        [r.test_accuracy for r in runs[:n]])]
    for i, f in enumerate(forms, 1):
        part = runs[i * n:(i + 1) * n]
        rows.append(AblationRow(f.name, "form", spec.optimizer, float(lr), [r.aulc for r in part],
                                [r.test_accuracy for r in part], f))
    rows.append(AblationRow(label, "baseline", base_spec.optimizer, float(base_spec.lr),
                            [r.aulc for r in base], [r.test_accuracy for r in base]))
    _score(rows)
    return rows


def _score(rows: list[AblationRow]) -> None:
    """Fill each row's share of g's gain and its paired z against the baseline and against g."""
    g, base = rows[0], rows[-1]
    gain = base.aulc[0] - g.aulc[0]
    for r in rows:
        if gain > 0:
            r.share = (base.aulc[0] - r.aulc[0]) / gain
        if r is not base:
            r.z = paired(r.aulcs, base.aulcs).z
        if r is not g:
            r.z_g = paired(r.aulcs, g.aulcs).z


def _fit(g: BFunction | PerSite, activation: str, *, zmax: float, knots: int, box: Any
         ) -> tuple[Description | None, dict[str, Description], dict[str, list[Form]], list[Form]]:
    """``g``'s description and fitted forms; for a ``PerSite`` each site's, and the form sets."""
    if is_per_site(g):
        return None, *fit_sites(g, activation, zmax=zmax, knots=knots, box=box)
    forms = fit_forms(g, activation, zmax=zmax, knots=knots)
    return describe(g, activation, zmax=zmax, box=box), {}, {}, forms


def explain(
    g: BFunction | PerSite,
    spec: Any,
    *,
    lr: float,
    seeds: Sequence[int],
    baseline: tuple[str, Any] | None = None,
    where: str | None = None,
    box: tuple[float, float] | None = None,
    zmax: float = 4.0,
    knots: int = 3,
    output: str | os.PathLike | None = None,
    device: str = "cpu",
    data_dir: Any = None,
) -> Explanation:
    """Describe ``g``, fit the named forms, train them beside ``g`` and a baseline, write the result.

    Args:
        g: the b-function to explain (any kind; a study's is a ``MetaNet``), or a ``metabp.PerSite``
            (or dict) of one per site: each site is described and fitted, each form trained at every
            site at once.
        spec: the ``metabp.targets.TargetSpec`` it trains on (its activation is the sigma g replaces).
        lr: ``g``'s learning rate; every form trains at it too.
        seeds: held-out seeds (neither searched nor validated on), paired across rows.
        baseline: ``(label, spec)`` of the best tuned baseline (plain backprop with that spec's
            optimizer and lr); default plain backprop with ``spec``'s own.
        where: patch site (default the spec's); None for a ``PerSite``.
        box: the search box ``(lo, hi)`` of omega, to say which weights sit on its edge.
        zmax: the forms are fitted on ``[-zmax, zmax]``.
        knots: inner knots of the piecewise-linear form.
        output: folder for ``explain.md``, ``explain.csv``, ``explain.png`` and ``forms/*.bfn``.
        device, data_dir: passed to ``metabp.targets.train_many``.

    Returns:
        :class:`Explanation`.
    """
    seeds = _check(seeds, lr, zmax)
    g, sites = per_site(g, where)
    activation = spec.activation
    desc, descriptions, site_forms, forms = _fit(g, activation, zmax=zmax, knots=knots, box=box)
    baseline = baseline or (f"plain backprop ({spec.optimizer}, lr {spec.lr!r})", spec)
    rows = ablate(g, forms, spec, baseline, seeds, where=where, lr=lr, device=device, data_dir=data_dir)
    result = Explanation(desc, forms, rows, seeds, getattr(spec, "name", "target"), where, activation,
                         float(lr), g, dict(getattr(g, "meta", {}) or {}), sites=sites,
                         descriptions=descriptions, site_forms=site_forms)
    result.markdown = to_markdown(result)
    if output is not None:
        result.files = write(result, output)
    return result
