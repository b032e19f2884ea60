"""The text and figure of ``studies/RESULTS.md``, written from the studies' ``summary.json`` files
(``results.py`` runs the studies; this module only reads what they stored)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metabp.analysis import SHARE_GOAL, share_percent  # noqa: E402

#: The headline goal: a found g beats the best lr-tuned baseline on held-out seeds on at least
#: GOAL_TARGETS targets (one of them real images), with paired z <= GOAL_Z on each; for each
#: winner a named simple form recovers at least GOAL_SHARE of its gain.
GOAL_TARGETS, GOAL_Z, GOAL_SHARE = 3, -3.0, SHARE_GOAL
REAL_IMAGES = ("fashion",)


def ratio_se(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-seed ratios ``a_s / b_s`` (paired by seed)."""
    r = np.asarray(a, dtype=float) / np.asarray(b, dtype=float)
    se = float(r.std(ddof=1) / math.sqrt(r.size)) if r.size > 1 else math.nan
    return float(r.mean()), se


def _pm(stat: list[float]) -> str:
    return f"{stat[0]:.3f} +- {stat[1]:.3f}"


def winners(results: list[dict]) -> list[dict]:
    return [r for r in results if r["ratio"][0] < 1 and math.isfinite(r["z"]) and r["z"] <= GOAL_Z]


def goal(results: list[dict]) -> list[str]:
    """The headline goal, each part said to hold or not."""
    wins = winners(results)
    targets = sorted({r["targets"][0] for r in wins})
    real = [t for t in targets if t.startswith(REAL_IMAGES)]
    part1 = len(targets) >= GOAL_TARGETS and bool(real)
    explained = [r for r in wins if r["best_form"] and r["best_form"]["share"] >= GOAL_SHARE]
    part2 = bool(wins) and len(explained) == len(wins)
    named = "; ".join(f"{r['name']}: {r['best_form']['name']} ({r['best_form']['fitted']}), "
                      f"{share_percent(r['best_form']['share'])} of the gain" if r["best_form"] else
                      f"{r['name']}: no form with a defined share" for r in wins) or "no winner to explain"
    return [
        "## Goal", "",
        f"1. A found g beats the best lr-tuned baseline on held-out seeds with paired z <= {GOAL_Z:g} on at "
        f"least {GOAL_TARGETS} targets, one of them real images (Fashion-MNIST): "
        f"**{'held' if part1 else 'not held'}.** Winning targets: {', '.join(targets) or 'none'} "
        f"({len(targets)}; real images among them: {', '.join(real) or 'none'}). Winning studies: "
        f"{', '.join(r['name'] for r in wins) or 'none'}.",
        f"2. For each winner, a named simple form recovers at least {100 * GOAL_SHARE:.0f}% of its gain on "
        f"held-out seeds: **{'held' if part2 else 'not held'}** ({named}). The forms are fitted to g's "
        "shape alone (no training data); the best of the five is picked on the same held-out seeds it is "
        "scored on, and a share above 100% means the form trains faster than g itself.", ""]


def _sweep_word(verdict: str) -> str:
    """The lr sweep's verdict in a word (each study's section has the sentence)."""
    word = ("robust" if "robust to the lr" in verdict else "narrow" if "narrow lr range" in verdict
            else "no win")
    return word + ("; g diverges at high lr" if "g diverges" in verdict else "")


def headline(results: list[dict], missing: list[str]) -> list[str]:
    lines = ["## Headline", "",
             "| study | searched on | compared on | optimizer | g's lr | AULC of g "
             "| best tuned baseline (lr) | AULC ratio g / baseline (+- SE) | paired z | test acc g "
             "| test acc baseline | lr sweep |",
             "|---|---|---|---|---:|---|---|---|---:|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['name']} | {', '.join(r['targets'])} | {r['targets'][0]} | {r['optimizer']} | "
            f"{r['g_lr']!r} | {r['g'][1]:.4f} +- {r['g'][2]:.4f} | {r['best'][0]} ({r['best_lr']!r}): "
            f"{r['best'][1]:.4f} +- {r['best'][2]:.4f} | {r['ratio'][0]:.3f} +- {r['ratio'][1]:.3f} | "
            f"{r['z']:.1f} | {_pm(r['test_acc']['g'])} | {_pm(r['test_acc']['best'])} | "
            f"{_sweep_word(r['sweep_verdict'])} |")
    seeds = "/".join(map(str, sorted({len(r["compare_seeds"]) for r in results})))
    lines += ["", "AULC is the mean training loss per step (lower: g trains faster); test accuracy is "
              "measured after training, on the same seeds. A study compares on its first target. Ratios "
              "below 1 favour g; |z| > 2 is a difference beyond the seed-to-seed noise. Every comparison "
              f"uses {seeds} seeds that neither the search nor validation used; lrs are exact. The lr sweep "
              "trains g and backprop at 8 lrs around the tuned ones on the same seeds and compares g with "
              "backprop at its best swept lr and at the same lr: robust when g beats both over neighbouring "
              "lrs around its own, narrow when it does not (each study's section says where).", "",
              "![ratios](results/ratios.png)", ""]
    if missing:
        lines += [f"Not run in this version (no `summary.json`): {', '.join(missing)}.", ""]
    return lines + per_site(results)


def _placement(r: dict) -> str:
    """How a study places g: one per site, one shared by a glob's sites, or one at one site."""
    if r.get("sites"):
        return f"one g per site ({', '.join(r['sites'])})"
    return f"{'one shared g' if '*' in str(r['where']) else 'one g'} at `{r['where']}`"


def per_site(results: list[dict]) -> list[str]:
    """On each target with a one-g-per-site study: every single-target study's ratio and z, side by side."""
    targets = sorted({r["targets"][0] for r in results if r.get("sites")})
    if not targets:
        return ["Per site: no study with one g per site (`sites = [...]`) has a `summary.json`.", ""]
    lines = ["## One g per site, one shared g, one site", "",
             "Each study against the best tuned baseline on its held-out comparison seeds (the table above), "
             "grouped by target.", "",
             "| target | study | placement | AULC ratio g / baseline (+- SE) | paired z | lr sweep |",
             "|---|---|---|---|---:|---|"]
    for target in targets:
        for r in results:
            if r["targets"] == [target]:
                lines.append(f"| {target} | {r['name']} | {_placement(r)} | {r['ratio'][0]:.3f} +- "
                             f"{r['ratio'][1]:.3f} | {r['z']:.1f} | {_sweep_word(r['sweep_verdict'])} |")
    return lines + [""]


def section(r: dict, out: Path) -> list[str]:
    """One study's section; figures are linked only where they were written under ``out``."""
    n = r["name"]
    lines = [f"## {n}", "",
             f"Study file `studies/{n}.toml`; g is trial {r['trial']}, from {r['source']}.", "",
             "### Held-out validation", "", "```", r["heldout_text"], "```", "",
             f"### Against tuned baselines (seeds {r['compare_seeds']})", "", _body(r["compare_md"]), "",
             f"![compare](results/{n}/compare_loss.png)", "", f"![lr sweep](results/{n}/lr_sweep.png)", ""]
    if r.get("explain_md"):
        lines += ["### What g is", "", _body(r["explain_md"]), "",
                  f"![explain](results/{n}/explain/explain.png)", "",
                  f"Each form is saved as a `.bfn` in `results/{n}/explain/forms/`.", ""]
    if r["transfer_md"]:
        lines += ["### Transfer to the other targets", "", r["transfer_md"], ""]
        if (out / n / "transfer" / "transfer.png").exists():  # none when g fits no other target
            lines += [f"![transfer](results/{n}/transfer/transfer.png)", ""]
    return lines


def _body(markdown: str) -> str:
    """A written table without its top heading (RESULTS.md names each section) or figure links;
    its sub-headings become bold lines."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("!["):
            continue
        if line.startswith("#"):
            if line.startswith("###"):
                out.append(f"**{line.lstrip('#').strip()}**")
            continue
        out.append(line)
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(results) + 1.5))
    y = np.arange(len(results))
    ratio = [r["ratio"][0] for r in results]
    se = [r["ratio"][1] if math.isfinite(r["ratio"][1]) else 0 for r in results]
    ax.errorbar(ratio, y, xerr=se, fmt="o", capsize=4)
    ax.axvline(1.0, color="grey", ls="--")
    ax.set_yticks(y, [r["name"] for r in results])
    ax.invert_yaxis()
    ax.set_xlabel("AULC of found g / AULC of best lr-tuned baseline (held-out seeds, +- SE)")
    ax.set_title("Below 1: g trains faster than the best tuned baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict], out: Path, missing: list[str]) -> str:
    """RESULTS.md's text (and ``out/ratios.png``) from the studies' summaries."""
    out.mkdir(exist_ok=True)
    if results:
        plot(results, out / "ratios.png")
    text = ["# Results: do found b-functions hold up, and what are they?", "",
            "Generated by `python studies/results.py` (text: `studies/results_text.py`); never edited "
            "by hand.", ""]
    text += goal(results) + headline(results, missing)
    for r in results:
        text += section(r, out)
    return "\n".join(text)
