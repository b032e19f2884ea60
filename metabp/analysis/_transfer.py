r"""Transfer: a saved b-function and plain backprop, trained side by side on other targets.

For each target and each seed ``s`` both train from the same initial weights and data order
(one batched run: ``train_many(spec, [g]*S + [None]*S, seed=seeds*2)``), and the table reports

.. math:: r_s = \frac{\mathrm{AULC}_s(g)}{\mathrm{AULC}_s(\text{backprop})},

its mean ± std over seeds (below 1: ``g`` learns faster), the AULCs and test accuracies of both.
``g`` goes at each target's own patch site unless ``where`` names one, and both train with the
target's own optimizer and lr (an ``lr`` a study searched with ``g`` belongs to its search target).

One ``g`` per site (a ``metabp.PerSite``) goes at its own sites; a target whose network lacks one
of them (or where two sites select one activation) gets a row marked not applicable, with the reason.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabp import BFunction, PerSite, is_per_site
from metabp.analysis._per_site import per_site
from metabp.analysis._stats import mean_std, paired, pm
from metabp.exceptions import ConfigError, PatchError


@dataclass
class TransferRow:
    """One target: ``g``'s and backprop's runs, one per seed, in seed order; none, and the reason in
    ``skipped``, when ``g`` does not apply to the target (a site its network lacks)."""

    target: str
    where: str
    optimizer: str
    seeds: list[int]
    g: list[Any]
    backprop: list[Any]
    skipped: str = ""

    @property
    def applicable(self) -> bool:
        return not self.skipped

    @property
    def ratios(self) -> list[float]:
        """Per seed, AULC(g) / AULC(backprop)."""
        return [a.aulc / b.aulc for a, b in zip(self.g, self.backprop, strict=True)]

    @property
    def ratio(self) -> tuple[float, float]:
        return mean_std(self.ratios)

    @property
    def aulc_g(self) -> tuple[float, float]:
        return mean_std([r.aulc for r in self.g])

    @property
    def aulc_backprop(self) -> tuple[float, float]:
        return mean_std([r.aulc for r in self.backprop])

    @property
    def accuracy_g(self) -> tuple[float, float]:
        return mean_std([r.test_accuracy for r in self.g])

    @property
    def accuracy_backprop(self) -> tuple[float, float]:
        return mean_std([r.test_accuracy for r in self.backprop])

    def verdict(self) -> str:
        """``better`` or ``worse`` for ``g`` when the mean ratio differs from 1 by more than 2
        standard errors, else ``within noise`` (``same`` when every ratio is exactly 1)."""
        if self.skipped:
            return "not applicable"
        p = paired(self.ratios, [1.0] * len(self.seeds))
        if p.diff == 0:
            return "same"
        if math.isnan(p.se):
            return "one seed: no SE"
        if p.se == 0 or abs(p.diff) > 2 * p.se:
            return "better" if p.diff < 0 else "worse"
        return "within noise"


@dataclass
class Transfer:
    """The result of :func:`transfer`: one row per target, and the files :func:`write` made."""

    bfn: BFunction | PerSite
    rows: list[TransferRow]
    seeds: list[int]
    files: dict[str, Path] = field(default_factory=dict)

    def row(self, target: str) -> TransferRow:
        for r in self.rows:
            if r.target == target:
                return r
        raise KeyError(f"no target {target!r}; targets: {', '.join(r.target for r in self.rows)}")


def _seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds={seeds!r}: give a number of seeds (int >= 1) or a list of ints")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds!r}: give at least 1 seed")
        return list(range(seeds))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ConfigError(f"seeds={seeds!r}: give a number of seeds (int >= 1) or a non-empty list of ints")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds={list(seeds)!r}: every seed must be an int >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={list(seeds)!r}: seeds repeat; give distinct seeds")
    return [int(s) for s in seeds]


def _targets(targets: Any) -> list[Any]:
    from metabp.targets import TargetSpec, get_target

    if isinstance(targets, (str, TargetSpec)):
        targets = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [targets]
    if not isinstance(targets, Sequence) or not targets:
        raise ConfigError(f"targets={targets!r}: give preset names or TargetSpecs, at least one")
    specs = []
    for i, t in enumerate(targets):
        if isinstance(t, TargetSpec):
            specs.append(t)
        elif isinstance(t, str) and t:
            specs.append(get_target(t))
        else:
            raise ConfigError(f"targets[{i}]={t!r} is not a preset name or a TargetSpec")
    return specs


def _bfn(bfn: Any) -> BFunction | Mapping:
    """``bfn``, or the b-function (or ``PerSite``) a ``.bfn`` path holds."""
    if isinstance(bfn, (BFunction, Mapping)):
        return bfn
    if isinstance(bfn, (str, os.PathLike)):
        import metabp

        return metabp.load(bfn)
    raise ConfigError(f"bfn={bfn!r} is not a b-function or the path of a .bfn file")


def not_applicable(g: PerSite, spec: Any) -> str:
    """Why ``g``'s sites do not fit ``spec``'s network (``""`` when they do)."""
    import metabp
    from metabp.targets import build_model

    model = build_model(spec)
    for site in g:
        try:
            metabp.activations(model, site)
        except PatchError:
            have = ", ".join(metabp.activations(model)) or "none"  # all of them; no error when none
            return f"not applicable: the network has no activation for site {site!r} (it has: {have})"
    try:
        g.resolve(model)
    except PatchError as exc:
        return f"not applicable: {exc}"
    return ""


def _row(g: BFunction | PerSite, spec: Any, seeds: list[int], where: str | None, **kw: Any) -> TransferRow:
    """``g`` and backprop on ``spec``, one batched run (none when ``g``'s sites do not fit)."""
    from metabp.targets import train_many

    if is_per_site(g):
        site, skipped = ", ".join(g), not_applicable(g, spec)
        if skipped:
            return TransferRow(spec.name, site, spec.optimizer, seeds, [], [], skipped)
    else:
        site = spec.where if where is None else where
    n = len(seeds)
    runs = train_many(spec, [g] * n + [None] * n, None if is_per_site(g) else site, seed=seeds * 2, **kw)
    return TransferRow(spec.name, site, spec.optimizer, seeds, runs[:n], runs[n:])


def transfer(
    bfn: BFunction | PerSite | str | os.PathLike,
    targets: str | Any | Sequence[str | Any],
    *,
    seeds: int | Sequence[int] = 5,
    where: str | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Transfer:
    """Train ``bfn`` and plain backprop on each target over the same seeds.

    Args:
        bfn: a b-function, a ``metabp.PerSite`` (one per site) or the path of a ``.bfn`` file.
        targets: preset names (a list, or one comma-separated string) or ``TargetSpec`` objects.
        seeds: a number ``S`` (seeds ``0 .. S-1``) or a list of distinct ints.
        where: the patch site on every target; ``None``: each target's own (``spec.where``), or
            a ``PerSite``'s own sites (``where`` must then be None).
        device, data_dir: as for ``metabp.targets.train``.
        progress: a tqdm bar over the targets.

    Returns:
        :class:`Transfer`, rows in the order of ``targets``.

    Example::

        res = transfer("best.bfn", ["digits-mlp", "mnist1d-mlp"], seeds=5)
        write(res, "transfer/")   # transfer.md, transfer.csv, transfer.png
    """
    from tqdm.auto import tqdm

    (g, _), specs, seeds = per_site(_bfn(bfn), where), _targets(targets), _seeds(seeds)
    rows = [_row(g, spec, seeds, where, device=device, data_dir=data_dir)
            for spec in tqdm(specs, desc="transfer", unit="target", disable=not progress)]
    return Transfer(g, rows, seeds)


def to_markdown(result: Transfer) -> str:
    """The transfer table in Markdown, with how it was measured."""
    g = result.bfn
    source = g.meta.get("study") if isinstance(getattr(g, "meta", None), dict) else None
    lines = [
        f"# Transfer of `{g!r}`" + (f" (study `{source}`)" if source else ""),
        "",
        "Each target trains g (at its patch site) and plain backprop, both with the target's own optimizer "
        f"and lr, on seeds "
        f"{', '.join(map(str, result.seeds))}: the same initial weights and data order for both on each "
        "seed. "
        "AULC = mean training loss per step, lower is better; ratio = AULC(g) / AULC(backprop) per seed, "
        "mean ± std over seeds (below 1: g learns faster). Verdict: the mean ratio differs from 1 by more "
        "than 2 standard errors, or not (within noise).",
        "",
        "| target | site | optimizer | AULC g | AULC backprop | ratio g/backprop | verdict | test acc g "
        "| test acc backprop | diverged g / backprop |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in result.rows:
        n = len(r.seeds)
        if r.skipped:
            lines.append(f"| {r.target} | `{r.where}` | {r.optimizer} | - | - | - | {r.skipped} | - | - "
                         "| - |")
            continue
        div = f"{sum(x.diverged for x in r.g)}/{n} / {sum(x.diverged for x in r.backprop)}/{n}"
        lines.append(f"| {r.target} | `{r.where}` | {r.optimizer} | {pm(r.aulc_g)} | "
                     f"{pm(r.aulc_backprop)} | {pm(r.ratio)} | {r.verdict()} | "
                     f"{pm(r.accuracy_g, '.3f')} | {pm(r.accuracy_backprop, '.3f')} | {div} |")
    return "\n".join(lines) + "\n"


def write(result: Transfer, output: str | os.PathLike) -> dict[str, Path]:
    """Write ``transfer.md``, ``transfer.csv`` (one row per target, column ``ratio``),
    ``transfer_seeds.csv`` (one row per target and seed) and ``transfer.png`` (of the targets ``g``
    applies to; none when it applies to none) into ``output``."""
    from metabp.plots import plot_transfer

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "transfer.md", "csv": out / "transfer.csv",
             "seeds_csv": out / "transfer_seeds.csv", "png": out / "transfer.png"}
    done = [r for r in result.rows if r.applicable]
    files["markdown"].write_text(to_markdown(result) + ("\n![transfer](transfer.png)\n" if done else ""))
    _write_csvs(result, files)
    if done:
        plot_transfer({r.target: {"g": r.aulc_g, "backprop": r.aulc_backprop} for r in done},
                      {r.target: r.ratio for r in done}, files["png"],
                      title=f"{result.bfn!r} against plain backprop, {len(result.seeds)} seeds")
    else:
        del files["png"]
    result.files = files
    return files


def _write_csvs(result: Transfer, files: dict[str, Path]) -> None:
    """``transfer.csv`` (a not-applicable row: its reason as the verdict) and ``transfer_seeds.csv``."""
    with files["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "where", "optimizer", "n_seeds", "aulc_g_mean", "aulc_g_std",
                    "aulc_backprop_mean", "aulc_backprop_std", "ratio", "ratio_std", "verdict",
                    "test_accuracy_g_mean", "test_accuracy_g_std", "test_accuracy_backprop_mean",
                    "test_accuracy_backprop_std", "diverged_g", "diverged_backprop"])
        for r in result.rows:
            if r.skipped:
                w.writerow([r.target, r.where, r.optimizer, 0, *[""] * 6, r.skipped, *[""] * 6])
                continue
            w.writerow([r.target, r.where, r.optimizer, len(r.seeds), *r.aulc_g, *r.aulc_backprop, *r.ratio,
                        r.verdict(), *r.accuracy_g, *r.accuracy_backprop, sum(x.diverged for x in r.g),
                        sum(x.diverged for x in r.backprop)])
    with files["seeds_csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "seed", "aulc_g", "aulc_backprop", "ratio", "test_accuracy_g",
                    "test_accuracy_backprop", "diverged_g", "diverged_backprop"])
        for r in (r for r in result.rows if r.applicable):
            for s, a, b, q in zip(r.seeds, r.g, r.backprop, r.ratios, strict=True):
                w.writerow([r.target, s, a.aulc, b.aulc, q, a.test_accuracy, b.test_accuracy, a.diverged,
                            b.diverged])
