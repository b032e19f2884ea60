"""Candidates per second: ``train_many`` (K copies batched) against sequential ``train`` calls.

Rows, each against a baseline measured in the same run (best of ``--repeats``, interleaved):

- ``threads``: K candidates, one seed, sequential ``train`` vs ``train_many``, with 1 thread and
  with every core;
- ``seeds``: C candidates x S seeds with 1 thread, sequential ``train`` per (candidate, seed) vs
  one ``train_many(..., seed=[...])`` (a study scoring each candidate on several seeds);
- ``compile`` (with ``--compile``): ``train_many`` of ``--compile-k`` candidates, eager vs
  ``compile=True`` after one warm-up (the compile time and the graphs compiled for new
  candidates are reported too).

Prints each ratio with the raw times, writes ``benchmarks/results/train_many.{md,csv,png}``.

    .venv/bin/python benchmarks/train_many.py [--target digits-mlp] [--k 16] [--epochs 3] [--compile]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

import metabp
from metabp.targets import get_target, load_data, train, train_many

# defaults (nanoGPT style: plain values at the top)
TARGET = "digits-mlp"
K = 16
EPOCHS = 3
REPEATS = 3  # best of, against noise from other processes
SEED_CANDIDATES, SEEDS = 4, 3
COMPILE_K = 64
RESULTS = Path(__file__).parent / "results"


def candidates(k: int, offset: int = 0) -> list[metabp.MetaNet]:
    return [metabp.MetaNet(hidden=1, seed=offset + i) for i in range(k)]


def best_pair(baseline, new, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of two functions, timed alternately."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((baseline, times[0]), (new, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def row(section: str, config: str, count: int, base: float, new: float, base_name: str, new_name: str,
        goal: str = "") -> dict:
    r = {"section": section, "config": config, "baseline": base_name, "new": new_name,
         "baseline_s": base, "new_s": new, "baseline_per_s": count / base, "new_per_s": count / new,
         "ratio": base / new, "goal": goal}
    print(f"{section} {config}: {new_name}/{base_name} {r['ratio']:.2f}x ({base_name} {base:.2f} s, "
          f"{new_name} {new:.2f} s; {r['new_per_s']:.1f} vs {r['baseline_per_s']:.1f} candidate runs/s)"
          + (f" goal {goal}" if goal else ""), flush=True)
    return r


def threads_rows(spec, k: int, repeats: int) -> list[dict]:
    gs = candidates(k)
    rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        seq, many = best_pair(lambda t=threads: [train(spec, g, seed=0, threads=t) for g in gs],
                              lambda t=threads: train_many(spec, gs, seed=0, threads=t), repeats)
        rows.append(row("threads", f"K={k}, {threads} thread(s)", k, seq, many, "sequential", "train_many"))
    return rows


def seeds_rows(spec, n_cand: int, n_seeds: int, repeats: int) -> list[dict]:
    gs = candidates(n_cand)
    bfns = [g for g in gs for _ in range(n_seeds)]
    seeds = [s for _ in gs for s in range(n_seeds)]
    pairs = list(zip(bfns, seeds, strict=True))
    seq, many = best_pair(lambda: [train(spec, g, seed=s, threads=1) for g, s in pairs],
                          lambda: train_many(spec, bfns, seed=seeds, threads=1), repeats)
    return [row("seeds", f"{n_cand} candidates x {n_seeds} seeds, 1 thread", len(bfns), seq, many,
                "sequential", "train_many", ">= 3x")]


def compile_rows(spec, k: int, repeats: int) -> list[dict]:
    from torch._dynamo.utils import counters

    start = time.perf_counter()
    train_many(spec, candidates(k), seed=0, threads=1, compile=True)  # compiles
    first = time.perf_counter() - start
    graphs = counters["stats"]["unique_graphs"]
    fresh = iter(range(1, 1000))
    eager, compiled = best_pair(
        lambda: train_many(spec, candidates(k, 1000 * next(fresh)), seed=0, threads=1),
        lambda: train_many(spec, candidates(k, 1000 * next(fresh)), seed=0, threads=1, compile=True), repeats)
    extra = counters["stats"]["unique_graphs"] - graphs
    print(f"compile: first call {first:.1f} s ({graphs} graphs); {extra} graphs compiled for "
          f"{repeats} new candidate sets", flush=True)
    return [row("compile", f"K={k}, 1 thread (first call {first:.0f} s, {graphs} graphs, {extra} recompiles)",
                k, eager, compiled, "eager", "compiled", ">= 2x")]


def write(rows: list[dict], spec, args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / "train_many"
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"`{' '.join([Path(sys.executable).name, 'benchmarks/train_many.py'] + sys.argv[1:])}`", "",
             f"{spec.name}, {args.epochs} epochs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads available. Seconds: best of {args.repeats}, interleaved; "
             "candidate runs/s counts (candidate, seed) pairs.", "",
             "| section | config | baseline | new | baseline s | new s | baseline runs/s | new runs/s | "
             "ratio | goal |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['config']} | {r['baseline']} | {r['new']} | {r['baseline_s']:.2f} | "
              f"{r['new_s']:.2f} | {r['baseline_per_s']:.1f} | {r['new_per_s']:.1f} | {r['ratio']:.2f}x | "
              f"{r['goal']} |" for r in rows]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, spec, args, f"{stem}.png")
    print(f"wrote {stem}.md, .csv, .png")


def plot(rows: list[dict], spec, args: argparse.Namespace, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["baseline_per_s"] for r in rows], 0.4, label="baseline")
    ax.bar([i + 0.2 for i in x], [r["new_per_s"] for r in rows], 0.4, label="new")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['ratio']:.2f}x", (i + 0.2, r["new_per_s"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), [f"{r['section']}\n{r['new']} vs {r['baseline']}" for r in rows], fontsize=7)
    ax.set_ylabel("candidate runs / s")
    ax.set_title(f"{spec.name}, {args.epochs} epochs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--compile", action="store_true", help="add the eager vs compile=True row")
    parser.add_argument("--compile-k", type=int, default=COMPILE_K)
    args = parser.parse_args()
    spec = get_target(args.target, epochs=args.epochs)
    load_data(spec)
    train_many(get_target(args.target, epochs=1), candidates(2), seed=[0, 1])  # warm-up
    rows = threads_rows(spec, args.k, args.repeats) + seeds_rows(spec, SEED_CANDIDATES, SEEDS, args.repeats)
    if args.compile:
        rows += compile_rows(spec, args.compile_k, args.repeats)
    write(rows, spec, args)


if __name__ == "__main__":
    main()
