"""Search efficiency: metabp's BoTorch sampler vs random, TPE, Optuna's GPSampler and CMA-ES.

Question: with the same budget of trained candidates, which sampler finds the lowest AULC, and how
much wall time (training + proposing) does each need to beat plain backprop (g = sigma')?

Each (problem, sampler, seed) is one in-memory study of ``--trials`` candidates over a 1-1-1 tanh
meta-network (4 weights in [-5, 5]^4), g in place of ReLU' after FC2, training seed 0 for every
candidate (common random numbers); the sampler seed varies. Prints a table and writes
``benchmarks/results/search_efficiency.{md,json,png}``.

    python benchmarks/search_efficiency.py                       # defaults below
    python benchmarks/search_efficiency.py --trials 20 --seeds 3 --problems quickstart
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from metabp.search import SAMPLERS, Study, StudyConfig

# --- defaults --------------------------------------------------------------------------------
TRIALS = 30
SEEDS = 5
N_INITIAL = 8
BOUNDS = (-5.0, 5.0)
PROBLEMS = {  # name -> (target preset, overrides, where)
    "quickstart": ("gaussians-mlp3", {}, "act2"),
    "digits": ("digits-mlp", {}, "act2"),
}
OUT = Path(__file__).parent / "results"


def run_one(problem: str, sampler: str, seed: int, trials: int, n_initial: int) -> dict:
    """One study; returns AULC and wall-clock time (since start) of every trial in order."""
    from metabp.targets import train

    preset, overrides, where = PROBLEMS[problem]
    cfg = StudyConfig(
        name=f"{problem}-{sampler}-{seed}", target=preset, overrides=tuple(sorted(overrides.items())),
        where=where, bounds=(BOUNDS,) * 4, n_initial=n_initial, n_trials=trials, sampler=sampler,
        sampler_seed=seed,
    )
    spec = cfg.target_spec()
    stamps: list[float] = []
    t0 = time.perf_counter()

    def evaluate(gs):
        runs = [train(spec, bfn=g, where=where, seed=0) for g in gs]
        stamps.append(time.perf_counter() - t0)
        return runs

    study = Study(cfg, storage="memory", evaluate=evaluate)
    study.optimize(progress=False)
    done = study.completed()
    split = study.time_split(done)
    return {
        "problem": problem, "sampler": sampler, "seed": seed,
        "values": [t.value for t in done], "times": stamps[: len(done)],
        "diverged": sum(bool(t.user_attrs.get("diverged")) for t in done),
        "training_s": split["training"], "proposing_s": split["proposing"],
    }


def best_so_far(values: list[float]) -> list[float]:
    out, best = [], float("inf")
    for v in values:
        best = min(best, v)
        out.append(best)
    return out


def time_to_reach(run: dict, target: float) -> float | None:
    for v, t in zip(best_so_far(run["values"]), run["times"], strict=True):
        if v <= target:
            return t
    return None


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def reach_targets(runs: list[dict]) -> dict[str, float]:
    """Per problem, the AULC to reach: the median over every run (all samplers) of its final best."""
    problems = dict.fromkeys(r["problem"] for r in runs)
    return {p: statistics.median(min(r["values"]) for r in runs if r["problem"] == p) for p in problems}


def summarise(runs: list[dict], backprop: dict[str, float]) -> list[dict]:
    rows = []
    goal = reach_targets(runs)
    for problem in dict.fromkeys(r["problem"] for r in runs):
        for sampler in dict.fromkeys(r["sampler"] for r in runs):
            rs = [r for r in runs if r["problem"] == problem and r["sampler"] == sampler]
            if not rs:
                continue
            best = [min(r["values"]) for r in rs]
            lo, med, hi = quartiles(best)
            reach = [time_to_reach(r, backprop[problem]) for r in rs]
            hit = [t for t in reach if t is not None]
            reach2 = [time_to_reach(r, goal[problem]) for r in rs]
            hit2 = [t for t in reach2 if t is not None]
            wall = sum(r["times"][-1] for r in rs)
            rows.append({
                "problem": problem, "sampler": sampler, "seeds": len(rs),
                "best_median": med, "best_q1": lo, "best_q3": hi,
                "best_min": min(best), "best_max": max(best),
                "vs_backprop": med / backprop[problem],
                "reached": len(hit), "time_to_backprop_median": statistics.median(hit) if hit else None,
                "goal": goal[problem], "reached_goal": len(hit2),
                "time_to_goal_median": statistics.median(hit2) if hit2 else None,
                "wall_median": statistics.median(r["times"][-1] for r in rs),
                "proposing_share": sum(r["proposing_s"] for r in rs) / max(wall, 1e-9),
                "diverged_share": sum(r["diverged"] for r in rs) / sum(len(r["values"]) for r in rs),
            })
    return rows


def table(rows: list[dict], backprop: dict[str, float], trials: int) -> str:
    lines = [
        f"best AULC after {trials} trials (median [q1, q3] over seeds; ratio = median / backprop AULC); "
        "wall time (training + proposing) until the best so far beats backprop, and until it reaches "
        "the goal = the median final best of all runs on that problem (median over the seeds that did)",
        "",
        "| problem | sampler | best AULC median [q1, q3] | min..max | / backprop | beat backprop | "
        "time to beat (s) | reach goal | time to goal (s) | wall (s) | proposing | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ttb = f"{r['time_to_backprop_median']:.1f}" if r["time_to_backprop_median"] is not None else "-"
        ttg = f"{r['time_to_goal_median']:.1f}" if r["time_to_goal_median"] is not None else "-"
        lines.append(
            f"| {r['problem']} (bp {backprop[r['problem']]:.4f}) | {r['sampler']} | "
            f"{r['best_median']:.4f} [{r['best_q1']:.4f}, {r['best_q3']:.4f}] | "
            f"{r['best_min']:.4f}..{r['best_max']:.4f} | {r['vs_backprop']:.3f}x | "
            f"{r['reached']}/{r['seeds']} | {ttb} | {r['reached_goal']}/{r['seeds']} (<= {r['goal']:.4f}) | "
            f"{ttg} | {r['wall_median']:.1f} | "
            f"{100 * r['proposing_share']:.0f}% | {100 * r['diverged_share']:.0f}% |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], backprop: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in runs))
    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4.2), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        for sampler in dict.fromkeys(r["sampler"] for r in runs):
            rs = [r for r in runs if r["problem"] == problem and r["sampler"] == sampler]
            if not rs:
                continue
            curves = torch.tensor([best_so_far(r["values"]) for r in rs])
            q = torch.quantile(curves, torch.tensor([0.25, 0.5, 0.75], dtype=curves.dtype), dim=0)
            x = range(1, curves.shape[1] + 1)
            ax.plot(x, q[1], label=sampler)
            ax.fill_between(x, q[0], q[2], alpha=0.15)
        ax.axhline(backprop[problem], color="k", ls="--", lw=1, label="backprop (g = sigma')")
        lo = min(min(r["values"]) for r in runs if r["problem"] == problem)
        ax.set_ylim(lo * 0.98, backprop[problem] * 1.25)
        ax.set_title(f"{problem}: best AULC so far (median, IQR over seeds)")
        ax.set_xlabel("trial")
        ax.set_ylabel("AULC")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=TRIALS)
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--n-initial", type=int, default=N_INITIAL)
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--tag", default="", help="suffix for the result files")
    p.add_argument("--warp", choices=["cap", "log1p"], default=None,
                   help="output warp of the botorch sampler's GP (default: search/_botorch.py's WARP)")
    args = p.parse_args(argv)
    if args.warp:
        import metabp.search._botorch as gp

        gp.WARP = args.warp
    from metabp.targets import get_target, train

    backprop = {}
    for problem in args.problems:
        preset, overrides, where = PROBLEMS[problem]
        backprop[problem] = train(get_target(preset, **overrides), bfn=None, where=where, seed=0).aulc
    runs = []
    for problem in args.problems:
        for seed in range(args.seeds):
            for sampler in args.samplers:
                r = run_one(problem, sampler, seed, args.trials, args.n_initial)
                runs.append(r)
                print(f"{problem:>10} {sampler:>8} seed {seed}: best {min(r['values']):.4f} "
                      f"wall {r['times'][-1]:.1f} s (proposing {r['proposing_s']:.1f} s)", file=sys.stderr)
    rows = summarise(runs, backprop)
    text = table(rows, backprop, args.trials)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"search_efficiency{args.tag}"
    (args.out / f"{stem}.md").write_text(
        f"# Search efficiency ({args.trials} trials, {args.seeds} seeds, n_initial {args.n_initial}, "
        f"torch threads {torch.get_num_threads()})\n\n{text}\n"
    )
    (args.out / f"{stem}.json").write_text(json.dumps({"backprop": backprop, "rows": rows, "runs": runs}))
    plot(runs, backprop, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.{{md,json,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
