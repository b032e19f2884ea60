"""The Markdown of a study report (``index.md``), from a :class:`ReportData` and its figures."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from metabp.analysis._report_data import ReportData, Shape, heldout, trial_accuracy, trial_lr, trial_omega
from metabp.analysis._stats import in_words, paired
from metabp.plots import optimizer_note


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else "nan" if not math.isfinite(x) else f"{x:{spec}}"


def compare_summary(out: Path) -> tuple[str | None, str | None]:
    """``compare.md`` of an earlier ``metabp compare`` in ``out``, and one sentence from its CSV."""
    md, table = out / "compare.md", out / "compare.csv"
    if not (md.is_file() and table.is_file()):
        return None, None
    with table.open() as f:
        rows = list(csv.DictReader(f))
    by_kind = {r.get("kind"): r for r in rows}
    if "bfn" not in by_kind or "plain" not in by_kind:
        return md.read_text(), None
    g, plain = by_kind["bfn"], by_kind["plain"]
    rank = [r["method"] for r in rows].index(g["method"]) + 1
    best = rows[0]
    line = (f"{g['n_seeds']} held-out seeds (`metabp compare`), {g['method']} scores AULC "
            f"{float(g['aulc_mean']):.4f} ± {float(g['aulc_std']):.4f} against plain backprop's "
            f"{float(plain['aulc_mean']):.4f} ± {float(plain['aulc_std']):.4f}, rank {rank} of {len(rows)}; "
            f"the best row is {best['method']} ({float(best['aulc_mean']):.4f}).")
    return md.read_text(), line


def _versus(h: dict, control: Any, name: str, label: str) -> str:
    """``label`` against a held-out control, paired when both used the same seeds."""
    if control is None:
        return ""
    text = f" {name}: {_fmt(control['mean'])} ± {_fmt(control.get('std'))}."
    if control.get("seeds") == h.get("seeds") and control.get("values") and h.get("values"):
        text += " " + in_words(paired(h["values"], control["values"]), label, name, what="score")
    return text


def _heldout_lines(d: ReportData) -> list[str]:
    if not d.validated:
        return ["- No candidate was validated on held-out seeds (add a `[validate]` table to the study file "
                "and run `metabp validate STUDY`): every score above is on the seeds the search used, "
                "and the best of many noisy scores is biased low."]
    h = heldout(d.chosen)
    over = np.asarray(d.overfit)
    me = f"trial {d.chosen.number}"
    lines = [f"- **Held-out seeds {h.get('seeds')}**: the chosen candidate, trial {d.chosen.number} (best of "
             f"{len(d.validated)} validated), scores {_fmt(h['mean'])} ± {_fmt(h.get('std'))} (search seeds: "
             f"{_fmt(d.chosen.value)})."
             + _versus(h, d.control("backprop"), "plain backprop", me)
             + _versus(h, d.control("tuned_lr"), "backprop with lr tuned alone", me),
             f"- Overfitting: held-out minus search score is {over.mean():+.4f} on average over the "
             f"validated candidates (from {over.min():+.4f} to {over.max():+.4f}); > 0 means worse on new "
             "seeds. Rank agreement between search and held-out scores: Spearman rho = "
             f"{_fmt(d.rank_agreement, '.2f')}."]
    return lines


def _shape_lines(shape: Shape, at: str, inv: bool) -> list[str]:
    """beta's range, the credit injected where sigma' = 0 and the top candidates' spread, at one site."""
    beta = shape.beta_range
    band, band_neg, band_pos = shape.spread
    return [
        f"- {at}Implicit learning rate beta(z) = lr*g/sigma' where sigma' != 0: "
        + (f"from {beta[0]:.4g} to {beta[1]:.4g} for z in [-4, 4]." if beta
           else "undefined on the plotted range."),
        f"- {at}Where sigma' = 0 the chosen g reaches |g| = {shape.injected:.3g}: "
        + ("it injects credit plain backprop would not give (paper section 2 calls this potentially "
           "harmful)." if shape.injected > 1e-6 else "it leaves those units without credit, like backprop."),
        f"- {at}The top {len(shape.top_g)} candidates' g(z){' / max|g|' if inv else ''} spread by {band:.3g} "
        "on average (width of the 10-90% band over z):"
        + (" they agree on a shape" if band < 0.25 else " several different shapes score alike")
        + f" (band {band_neg:.3g} for z < 0, {band_pos:.3g} for z > 0).",
    ]


def _summary(d: ReportData, compare_line: str | None) -> list[str]:
    unit = "score (mean ratio to backprop over targets and seeds)" if d.multi_target else "AULC"
    better = d.best.value < d.backprop
    lines = [
        f"- **Best {unit} {d.best.value:.4f}** (trial {d.best.number}) against plain backprop's "
        f"{d.backprop:.4f} on the same seeds {d.seeds}: "
        + (f"{100 * d.gain:.1f}% lower." if better else f"{-100 * d.gain:.1f}% higher (no improvement)."),
        *_heldout_lines(d),
        f"- Chosen g (what `metabp export` saves): trial {d.chosen.number}, `{d.g!r}`, lr {d.lr:g}.",
    ]
    for site, shape in d.shapes.items():
        lines += _shape_lines(shape, f"At `{site}`: " if d.sites else "", d.scale_invariant)
    lines.append("- " + optimizer_note(d.spec.optimizer) + ".")
    if compare_line:
        lines.append(f"- On {compare_line}")
    return lines


def _omega_text(omega: list[float], sites: list[str], p: int) -> str:
    """``1, 0.5, ...``; with one g per site each site's ``P`` entries: ``act1: 1, 0.5; act2: ...``."""
    if not sites:
        return ", ".join(f"{w:.3g}" for w in omega)
    from metabp.search import schema

    return "; ".join(f"{s}: " + ", ".join(f"{w:.3g}" for w in chunk)
                     for s, chunk in schema.by_site(omega, sites, p).items())


def _candidates_table(d: ReportData) -> list[str]:
    rows = ["| rank | trial | search score | held-out (mean ± std) | test acc | lr | omega |",
            "|---:|---:|---:|---:|---:|---:|---|"]
    for i, t in enumerate(d.ranked[: len(d.top_g)], 1):
        h = heldout(t)
        held = f"{h['mean']:.4f} ± {h.get('std', math.nan):.4f}" if h else "-"
        acc = _fmt(trial_accuracy(t), ".3f")
        rows.append(f"| {i} | {t.number} | {t.value:.4f} | {held} | {acc} | {trial_lr(t, d.spec.lr):.3g} | "
                    f"{_omega_text(trial_omega(t), d.sites, 3 * d.hidden + 1)} |")
    return rows


def _heldout_table(d: ReportData) -> list[str]:
    """Validated candidates and the study's controls: search score, held-out mean ± std."""
    rows = ["| candidate | search score | held-out (mean ± std) | held-out - search |",
            "|---|---:|---:|---:|"]
    for t in sorted(d.validated, key=lambda t: heldout(t)["mean"]):
        h = heldout(t)
        chosen = " (chosen)" if t is d.chosen else ""
        rows.append(f"| trial {t.number}{chosen} | {t.value:.4f} | {h['mean']:.4f} ± {_fmt(h.get('std'))} | "
                    f"{h['mean'] - t.value:+.4f} |")
    controls = (("backprop", "plain backprop", d.backprop), ("tuned_lr", "lr tuned alone", None))
    for key, label, search in controls:
        c = d.control(key)
        if c is not None:
            lr = f" (lr {c['lr']:.3g})" if "lr" in c else ""
            diff = f"{c['mean'] - search:+.4f}" if search is not None else "-"
            rows.append(f"| {label}{lr} | {_fmt(search)} | {c['mean']:.4f} ± {_fmt(c.get('std'))} | {diff} |")
    return rows


def _alignment_text(d: ReportData, figs: dict[str, Any]) -> str:
    tr = d.alignment
    if tr is None:
        return "(skipped)"
    summary = tr.summary()
    rows = ["| layer | mean cos | min cos | last cos |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {_fmt(m, '.3f')} | {_fmt(lo, '.3f')} | {_fmt(last, '.3f')} |"
             for k, (m, lo, last) in summary.items()]
    descent = all(v[1] > 0 for v in summary.values() if math.isfinite(v[1]))
    verdict = ("the applied step stayed a descent direction (positive cosine) throughout: true gradient "
               "information reaches the weights, as in the paper's Fig. 1b" if descent
               else "the applied step was at times not a descent direction (cosine <= 0)")
    mean_all = _fmt(summary.get("all", (math.nan,))[0], ".3f")
    return (f"![alignment]({figs['alignment'].path.name})\n\nOver {len(tr.losses)} steps the mean cosine "
            f"over all trained parameters was {mean_all}; {verdict}. Layers above the patch site get the "
            "true gradient (cosine 1); layers below it see g.\n\n" + "\n".join(rows))


def _at(d: ReportData) -> str:
    """Where g goes, as Markdown: ``"`act2`"``, or for one g per site
    ``"`act1`, `act2` (one g per site, each with its own omega)"``."""
    if not d.sites:
        return f"`{d.where}`"
    return ", ".join(f"`{s}`" for s in d.sites) + " (one g per site, each with its own omega)"


def _images(figs: dict[str, Any], kind: str, alt: str) -> list[str]:
    """The figure ``kind`` (``beta``, ``spread``), or one per site (``kind/site``), as Markdown images."""
    keys = [k for k in figs if k == kind or k.startswith(kind + "/")]
    lines = []
    for k in keys:
        at = f"At `{k.split('/', 1)[1]}`:\n\n" if "/" in k else ""
        lines += [f"{at}![{alt}]({figs[k].path.name})", ""]
    return lines


def to_markdown(d: ReportData, figs: dict[str, Any], *, compare_md: str | None = None,
                compare_line: str | None = None) -> str:
    """The whole ``index.md``: summary, held-out validation, search progress, the chosen g, the top
    candidates, loss curves, gradient alignment and (if run) ``metabp compare``'s table."""
    spec = d.spec
    others = [f"{k} best {min(t.value for t in v):.4f}" for k, v in d.baselines.items()]
    lines = [
        f"# Study `{d.name}`: what the search found", "",
        f"Target `{spec.name}` ({spec.dataset}, {spec.network}, optimizer `{spec.optimizer}`, "
        f"lr {spec.lr:g}, {spec.epochs} epochs, trainable `{spec.trainable or 'all'}`); the meta-network "
        f"g(z) = sum_k w2_k {d.act}(w1_k z + b1_k) + b2 with {d.hidden} hidden unit(s) replaces "
        f"`{spec.activation}'` at {_at(d)}. Sampler `{d.sampler}`; search seeds {d.seeds}; "
        f"{len(d.done)} completed trials "
        f"({d.diverged} diverged, scored with the divergence penalty), {len(d.trials)} in all.", "",
        "## Summary", "", *_summary(d, compare_line), "",
    ]
    if "heldout" in figs:
        lines += ["## Held-out validation", "", f"![held-out]({figs['heldout'].path.name})", "",
                  "Each validated candidate's score on the search seeds against its score on held-out seeds "
                  "(error bars: std over the held-out seeds); dashed lines are the study's held-out "
                  "controls. Points above the diagonal did worse on seeds the search never saw.", "",
                  *_heldout_table(d), ""]
    lines += [
        "## Search progress", "", f"![search trace]({figs['trace'].path.name})", "",
        "Best score so far against trial number (as `metabp show` numbers them); dots are single trials."
        + (" Baseline searches: " + ", ".join(others) + "." if others
           else " (No random/TPE baseline searches of this target in the storage.)"), "",
        "## The chosen b-function and its implicit learning rate", "",
        *_images(figs, "beta", "chosen g and beta"),
        "## Agreement among the top candidates", "", *_images(figs, "spread", "top candidates"),
        *_candidates_table(d), "",
        "## Loss curves", "", f"![loss curves]({figs['loss'].path.name})", "",
        f"Plain backprop on seed {d.seeds[0]}: AULC {d.plain.aulc:.4f}, final loss "
        f"{_fmt(d.plain.step_losses[-1])}, test accuracy {_fmt(d.plain.test_accuracy, '.3f')}. Best trial: "
        f"test accuracy {_fmt(trial_accuracy(d.best), '.3f')}.", "",
        "## Gradient alignment over training", "", _alignment_text(d, figs), "",
    ]
    if compare_md is not None:
        lines += ["## Against tuned baseline optimizers (`metabp compare`)", "",
                  compare_md.replace("## Comparison", "Comparison", 1), ""]
    else:
        lines += ["To compare the chosen g with baseline optimizers whose learning rates were tuned on the "
                  "same budget, run `metabp compare STUDY.toml -o DIR` with the same DIR, then this report "
                  "again.", ""]
    return "\n".join(lines)
