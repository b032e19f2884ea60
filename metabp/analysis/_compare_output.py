"""The output of :func:`metabp.analysis.compare`: Markdown table with its verdict, CSV, loss figure."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from metabp import SCALE_INVARIANT, SCALE_NOTE
from metabp.analysis._compare_result import Comparison, MethodResult
from metabp.analysis._lr_sweep import to_markdown as sweep_markdown
from metabp.analysis._lr_sweep import write as write_sweep
from metabp.analysis._stats import pm

#: How the baselines' lrs are searched (metabp.search.tune_grid, through metabp.analysis.tune_methods)
TUNING = "over the lr range on a log grid of half the trials, then a finer grid around its best point"
CURVES_SHOWN = 5  # g, plain backprop, lr tuned alone and the best other rows; the CSV has them all


def optimizer_case(optimizer: str) -> str:
    """Which case ``optimizer`` is, :data:`~metabp._implicit_lr.SCALE_NOTE`, and what "lr tuned alone"
    controls for under it."""
    if optimizer in SCALE_INVARIANT:
        return (f"`{optimizer}` is scale-invariant (Adam-like). {SCALE_NOTE} \"lr tuned alone\" is the "
                "control for what a learning rate can do.")
    return (f"`{optimizer}` is SGD-like. {SCALE_NOTE} That learning rate acts on the layers below the patch "
            "site; \"lr tuned alone\" is the control a g must beat to do more than a learning rate.")


def to_markdown(result: Comparison) -> str:
    """The comparison table in Markdown: how it was measured, the verdict in words, the rows."""
    where = f" (b-function at `{result.where}`)" if result.where else ""
    if result.sites:
        where = " (one g per site: " + ", ".join(f"`{s}`" for s in result.sites) + ")"
    lines = [
        f"## Comparison on `{result.target}`{where}",
        "",
        optimizer_case(result.optimizer),
        "",
        *two_rows(result),
        f"Baselines tuned with {result.budget} trials each, {TUNING}, each trial the mean AULC over the "
        f"search seeds {', '.join(map(str, result.tune_seeds))}; "
        f"every row trained on the held-out seeds {', '.join(map(str, result.seeds))}, which no tuning and "
        "no search saw. AULC = mean training loss per step, lower is better. Differences are paired "
        "over the held-out seeds (same initial weights and data order); SE = standard error of the "
        "paired difference.",
        "",
        "**Verdict.** " + " ".join(result.verdict()),
        "",
        "| rank | method | optimizer | lr | scale-invariant | AULC (mean ± std) | final loss | test acc "
        "| diverged |",
        "|---:|---|---|---:|:---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(result.rows, 1):
        note = f" ({r.note})" if r.note else ""
        inv = "yes" if r.optimizer in SCALE_INVARIANT else "no"
        lines.append(f"| {i} | {r.label}{note} | {r.optimizer} | {r.lr:.3g} | {inv} | {pm(r.aulc)} | "
                     f"{pm(r.final_loss)} | {pm(r.test_accuracy, '.3f')} | {r.diverged}/{len(r.runs)} |")
    lines += ["", "Exact learning rates (the table rounds them): "
              + "; ".join(f"{r.label} {r.lr!r}" for r in result.rows) + "."]
    if result.sweep is not None:
        lines += ["", sweep_markdown(result.sweep).rstrip(), "", "![lr sweep](lr_sweep.png)"]
    return "\n".join(lines) + "\n"


def two_rows(result: Comparison) -> list[str]:
    """Why "lr tuned alone" and "<optimizer> (tuned lr)" can both train with the same optimizer."""
    control = result.kind("control")
    twin = next((r for r in result.rows if r.kind == "baseline" and control is not None
                 and r.optimizer == control.optimizer), None)
    if twin is None:
        return []
    return [f"\"lr tuned alone\" and \"{twin.label}\" both train with `{twin.optimizer}` but tune the lr "
            f"over different ranges: \"lr tuned alone\" over the study's own lr range ({control.note}), the "
            f"one g's lr was searched in; \"{twin.label}\" over the optimizer's wide range ({twin.note}), "
            "like every baseline optimizer. Their lrs, and so their scores, can differ.", ""]


def _shown(result: Comparison) -> list[MethodResult]:
    """The rows drawn: g, plain backprop, lr tuned alone, then the best others, ``CURVES_SHOWN`` in all."""
    first = [r for kind in ("bfn", "plain", "control") if (r := result.kind(kind)) is not None]
    rest = [r for r in result.rows if r not in first]
    return first + rest[: max(0, CURVES_SHOWN - len(first))]


def write(result: Comparison, output: str | os.PathLike) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.csv`` (every row) and ``compare_loss.png`` into ``output``."""
    from metabp.plots import plot_loss_curves

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(result.markdown + "\n![loss curves](compare_loss.png)\n")
    path_csv = out / "compare.csv"
    with path_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "kind", "optimizer", "lr", "scale_invariant", "aulc_mean", "aulc_std",
                    "final_loss_mean", "final_loss_std", "test_accuracy_mean", "test_accuracy_std",
                    "diverged", "n_seeds", "tuning_runs", "note", "seeds", "aulc_per_seed"])
        for r in result.rows:
            w.writerow([r.label, r.kind, r.optimizer, repr(r.lr), r.optimizer in SCALE_INVARIANT,
                        *r.aulc, *r.final_loss, *r.test_accuracy, r.diverged, len(r.runs), r.tuning_runs,
                        r.note, " ".join(map(str, result.seeds)), " ".join(repr(a) for a in r.aulcs)])
    shown = _shown(result)
    curves = {r.label: [run.step_losses for run in r.runs] for r in shown}
    styles = {r.label: {"lw": 2.5, "color": "k"} for r in shown if r.kind == "bfn"}
    styles.update({r.label: {"lw": 2.0, "ls": "--", "color": "0.4"} for r in shown if r.kind == "plain"})
    inv = "scale-invariant" if result.scale_invariant else "SGD-like"
    title = (f"{result.target}, {result.optimizer} ({inv}): mean and min-max over {len(result.seeds)} "
             f"held-out seeds; {len(shown)} of {len(result.rows)} rows drawn (all in compare.csv)")
    png = plot_loss_curves(curves, out / "compare_loss.png", logy=True, styles=styles, title=title).path
    files = {"markdown": md, "csv": path_csv, "png": png}
    if result.sweep is not None:
        files.update(write_sweep(result.sweep, out))
    return files
