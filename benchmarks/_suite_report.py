"""The table and PNG of ``search_efficiency.py``: scores, quartiles, the tie rule, mean ranks.

Tie rule: at one (problem, budget), the sampler with the lowest median score is best; another
sampler is tied-best when a two-sided exact Mann-Whitney U test of its seeds' scores against the
best sampler's gives ``p >= TIE_P`` (no evidence that the two differ).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

TIE_P = 0.05
BUDGETS = (30, 60)
N_INITIAL = 10
SUITE = ["branin", "hartmann3", "levy4", "rosenbrock4", "styblinski5", "michalewicz5", "hartmann6",
         "ackley10", "hartmann6-in-20d", "hartmann6-in-50d"]


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def score(run: dict, budget: int, optimum: float | None) -> float:
    """Simple regret after ``budget`` evaluations (the best value itself where no optimum is known)."""
    finite = [v for v in run["values"][:budget] if math.isfinite(v)]
    best = min(finite) if finite else float("inf")
    return best - (optimum or 0.0)


def scores(runs: list[dict], optima: dict, budget: int) -> dict[tuple[str, str], list[float]]:
    """(problem, sampler) -> the scores after ``budget`` evaluations, one per seed that reached it."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if len(r["values"]) >= budget:
            out.setdefault((r["problem"], r["sampler"]), []).append(score(r, budget, optima[r["problem"]]))
    return out


def tied_best(per_sampler: dict[str, list[float]], p_tie: float = TIE_P) -> tuple[str, set[str]]:
    """The best-median sampler and the others tied with it: ``p >= p_tie`` in a two-sided exact
    Mann-Whitney U test of their scores against the best's (lower is better; first name wins a tie
    of medians)."""
    from scipy.stats import mannwhitneyu

    best = min(per_sampler, key=lambda s: statistics.median(per_sampler[s]))
    tied = set()
    for s, xs in per_sampler.items():
        if s == best:
            continue
        ys = per_sampler[best]
        p = 1.0 if xs == ys else mannwhitneyu(xs, ys, alternative="two-sided", method="exact").pvalue
        if p >= p_tie:
            tied.add(s)
    return best, tied


def mean_ranks(med: dict, problems: list[str], samplers: list[str]) -> dict[str, float]:
    """Per problem, rank the samplers' medians (1 = best, ties share the mean rank); mean over problems."""
    ranks: dict[str, list[float]] = {s: [] for s in samplers}
    for p in problems:
        got = {s: med[(p, s)][1] for s in samplers if (p, s) in med}
        if len(got) < len(samplers):
            continue
        for s, v in got.items():
            below, tied = sum(w < v for w in got.values()), sum(w == v for w in got.values())
            ranks[s].append(below + (tied + 1) / 2)
    return {s: statistics.mean(r) for s, r in ranks.items() if r}


def budget_table(runs: list[dict], optima: dict, samplers: list[str], budget: int) -> list[str]:
    """The lines of one budget's table, its tie summary and its mean ranks (none without runs)."""
    per = scores(runs, optima, budget)
    if not per:
        return []
    problems = list(dict.fromkeys(r["problem"] for r in runs))
    lines = [f"## After {budget} evaluations: simple regret (best AULC for metabp problems), "
             "median [q1, q3] over seeds; best median in bold, ≈: tied-best (two-sided exact "
             f"Mann-Whitney U test against the best's seeds, p >= {TIE_P})", "",
             "| problem | d | seeds | " + " | ".join(samplers) + " |",
             "|---|---|---|" + "---|" * len(samplers)]
    wins, misses = [], []
    for p in problems:
        got = {s: per[(p, s)] for s in samplers if (p, s) in per}
        if not got:
            continue
        best, tied = tied_best(got)
        row = []
        for s in samplers:
            if s not in got:
                row.append("-")
                continue
            q1, m, q3 = quartiles(got[s])
            txt = f"{m:.3g} [{q1:.3g}, {q3:.3g}]"
            row.append(f"**{txt}**" if s == best else f"≈ {txt}" if s in tied else txt)
        if "botorch" in got:
            (wins if "botorch" in tied | {best} else misses).append(p)
        seeds = max(len(xs) for xs in got.values())
        lines.append(f"| {p} | {optima[p + '/dim']} | {seeds} | " + " | ".join(row) + " |")
    if wins or misses:
        lines += ["", f"botorch best or tied-best on {len(wins)} of {len(wins) + len(misses)} functions; "
                  f"not on: {', '.join(misses) or 'none'}"]
    med = {k: (*quartiles(xs), len(xs)) for k, xs in per.items()}
    suite = [p for p in problems if p in SUITE]
    ranks = mean_ranks(med, suite, samplers)
    if ranks:
        lines += ["", f"Mean rank over the {len(suite)} synthetic functions ({', '.join(suite)}; "
                  "1 = best median): " + ", ".join(f"{s} {ranks[s]:.2f}" for s in samplers if s in ranks)]
    return lines + [""]


def table(runs: list[dict], optima: dict, samplers: list[str], cost: dict, meta: str) -> str:
    lines = [meta, ""]
    for budget in BUDGETS:
        lines += budget_table(runs, optima, samplers, budget)
    lines += ["## Wall time split (all runs, seconds summed over problems and seeds)", "",
              "| sampler | evaluating (s) | proposing (s) | proposing share | median s per proposal |",
              "|---|---|---|---|---|"]
    for s in samplers:
        rs = [r for r in runs if r["sampler"] == s]
        ev, pr = sum(sum(r["eval_s"]) for r in rs), sum(sum(r["propose_s"]) for r in rs)
        per = statistics.median(x for r in rs for x in r["propose_s"][N_INITIAL:]) if rs else float("nan")
        lines.append(f"| {s} | {ev:.1f} | {pr:.1f} | {100 * pr / max(ev + pr, 1e-9):.0f}% | {per:.3f} |")
    if cost:
        lines += ["", f"## Seconds per proposal after n evaluations (median of {cost['repeats']}; "
                  "Hartmann-6 embedded in d dimensions, n random points)", "",
                  "| sampler | " + " | ".join(f"n = {n}" for n in cost["n"]) + " |",
                  "|---|" + "---|" * len(cost["n"])]
        for s, ts in sorted(cost["seconds"].items()):
            lines.append(f"| {s} | " + " | ".join(f"{ts[str(n)]:.3f}" if str(n) in ts else "-"
                                                  for n in cost["n"]) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], optima: dict, samplers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in runs))
    cols, rows = 4, math.ceil(len(problems) / 4)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, p in zip(axes.flat, problems, strict=False):
        for s in samplers:
            rs = [r for r in runs if r["problem"] == p and r["sampler"] == s]
            if not rs:
                continue
            n = min(len(r["values"]) for r in rs)
            curves = torch.tensor([[score(r, k, optima[p]) for k in range(1, n + 1)] for r in rs])
            q = torch.quantile(curves, torch.tensor([0.25, 0.5, 0.75], dtype=curves.dtype), dim=0)
            x = range(1, n + 1)
            ax.plot(x, q[1], label=s, lw=1.5 if s.startswith("botorch") else 1)
            ax.fill_between(x, q[0], q[2], alpha=0.12)
        ax.set_yscale("log")
        if optima[p] is None:  # AULC: from the best run's value to the 10th evaluation's worst median
            ax.set_ylim(top=max(ax.get_lines()[i].get_ydata()[9] for i in range(len(ax.get_lines()))) * 1.02)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("evaluations", fontsize=8)
        ax.set_ylabel("simple regret" if optima[p] is not None else "best AULC", fontsize=8)
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(stem: Path, runs: list[dict], optima: dict, samplers: list[str], cost: dict, meta: str) -> None:
    """Table and PNG from the seeds every sampler has finished (a run still going leaves its seed out)."""
    have: dict[tuple[str, int], set] = {}
    for r in runs:
        have.setdefault((r["problem"], r["seed"]), set()).add(r["sampler"])
    runs = [r for r in runs if have[(r["problem"], r["seed"])] >= set(samplers)]
    stem.with_suffix(".md").write_text(table(runs, optima, samplers, cost, meta) + "\n")
    plot(runs, optima, samplers, stem.with_suffix(".png"))
