"""Candidates per second: ``train_many`` (K copies batched) against sequential ``train`` calls.

Rows, each against a baseline measured in the same run (``--repeats`` paired blocks, baseline
and new alternating; the median of each, and the median of the per-block ratios):

- ``threads`` (CPU): K candidates, one seed, sequential ``train`` vs ``train_many``, with 1 thread
  and with every core;
- ``seeds``: C candidates x S seeds, sequential ``train`` per (candidate, seed) vs one
  ``train_many(..., seed=[...])`` (a study scoring each candidate on several seeds);
- ``lrs``: C candidates x S seeds, each candidate at its own learning rate (a study searching
  ``lr``), sequential ``train`` at each lr vs one ``train_many(..., seed=[...], lr=[...])``
  (goal: at most 0.3x the sequential time, i.e. >= 3.3x), and the same batch at one lr vs at C lrs
  (what per-copy lrs cost);
- ``scaling``: K copies (K / S candidates x S seeds, each candidate at its own lr) in one
  ``train_many`` call vs K / S calls of S copies (one candidate's seeds per call, as studies
  scored before per-copy lrs), for each K of ``--scaling``: where batching stops paying, i.e.
  how large ``q x seeds`` should be on this device;
- ``compile`` (with ``--compile``): ``train_many`` of ``--compile-k`` candidates, eager vs
  ``compile=True`` after one warm-up (the compile time and the graphs compiled for new
  candidates are reported too).

``--device cuda`` times with CUDA events (synchronised) after a warm-up of every function, and
skips the thread rows. Prints each ratio with the raw times, writes
``benchmarks/results/train_many.{md,csv,png}`` (``train_many_cuda.*`` on CUDA).

    .venv/bin/python benchmarks/train_many.py [--target digits-mlp] [--k 16] [--epochs 3] [--compile]
    .venv/bin/python benchmarks/train_many.py --device cuda --candidates 64
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import metabp
from metabp.targets import get_target, load_data, train, train_many

# defaults (nanoGPT style: plain values at the top)
TARGET = "digits-mlp"
K = 16
EPOCHS = 3
REPEATS = 3  # paired blocks (median), against noise from other processes
SEED_CANDIDATES, SEEDS = 4, 3
LR_CANDIDATES = 8  # x SEEDS copies, one lr per candidate: lr = spec.lr * LR_SPREAD ** (k / (C - 1) - 0.5)
LR_SPREAD = 16.0
DEVICE = "cpu"
SCALING = {"cpu": [12, 24, 48, 96], "cuda": [48, 96, 192, 384]}  # copies per call
COMPILE_K = 64
RESULTS = Path(__file__).parent / "results"


def candidates(k: int, offset: int = 0) -> list[metabp.MetaNet]:
    return [metabp.MetaNet(hidden=1, seed=offset + i) for i in range(k)]


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    """Seconds of one call: wall clock on CPU, CUDA events around it (synchronised) on CUDA."""
    if not device.startswith("cuda"):
        def wall(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return wall

    def events(fn):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end) / 1000.0
    return events


def best_pair(baseline, new, repeats: int, device: str = DEVICE) -> tuple[float, float]:
    """Median seconds of two functions over ``repeats`` paired blocks (baseline then new, then
    the other order), after one warm-up call of each; the ratio is the blocks' median ratio."""
    clock = timer(device)
    baseline(), new()  # warm-up: allocator, lazy init, first CUDA kernels
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        order = ((baseline, times[0]), (new, times[1]))
        for fn, out in order if i % 2 == 0 else order[::-1]:
            out.append(clock(fn))
    ratio = statistics.median(b / n for b, n in zip(*times, strict=True))
    base = statistics.median(times[0])
    return base, base / ratio


def row(section: str, config: str, count: int, base: float, new: float, base_name: str, new_name: str,
        goal: str = "") -> dict:
    r = {"section": section, "config": config, "baseline": base_name, "new": new_name,
         "baseline_s": base, "new_s": new, "baseline_per_s": count / base, "new_per_s": count / new,
         "ratio": base / new, "goal": goal}
    print(f"{section} {config}: {new_name}/{base_name} {r['ratio']:.2f}x ({base_name} {base:.2f} s, "
          f"{new_name} {new:.2f} s; {r['new_per_s']:.1f} vs {r['baseline_per_s']:.1f} candidate runs/s)"
          + (f" goal {goal}" if goal else ""), flush=True)
    return r


def lr_rows(spec, n_cand: int, n_seeds: int, repeats: int, device: str) -> list[dict]:
    """C candidates x S seeds, candidate c at its own lr: sequential vs batched, one lr vs C lrs."""
    gs = candidates(n_cand)
    lrs = [spec.lr * LR_SPREAD ** (c / max(n_cand - 1, 1) - 0.5) for c in range(n_cand)]
    bfns = [g for g in gs for _ in range(n_seeds)]
    seeds = [s for _ in gs for s in range(n_seeds)]
    copy_lrs = [a for a in lrs for _ in range(n_seeds)]
    triples = list(zip(bfns, seeds, copy_lrs, strict=True))
    def batched(lr=None):
        return train_many(spec, bfns, seed=seeds, lr=lr, threads=1, device=device)

    seq, many = best_pair(
        lambda: [train(get_target(spec, lr=a), g, seed=s, threads=1, device=device) for g, s, a in triples],
        lambda: batched(copy_lrs), repeats, device)
    one, per_copy = best_pair(batched, lambda: batched(copy_lrs), repeats, device)
    config = f"{n_cand} candidates x {n_seeds} seeds, {n_cand} lrs"
    return [row("lrs", f"{config}, {device}", len(bfns), seq, many, "sequential", "train_many", ">= 3.3x"),
            row("lrs", f"{config} vs one lr, {device}", len(bfns), one, per_copy, "one lr", "per-copy lr")]


def scaling_row(spec, k: int, n_seeds: int, repeats: int, device: str) -> dict:
    """One call of K copies vs K / S calls of S copies, every candidate at its own lr."""
    n_cand = max(k // n_seeds, 1)
    gs = candidates(n_cand)
    lrs = [spec.lr * LR_SPREAD ** (c / max(n_cand - 1, 1) - 0.5) for c in range(n_cand)]
    seeds = list(range(n_seeds))
    per_candidate, batched = best_pair(
        lambda: [train_many(spec, [g] * n_seeds, seed=seeds, lr=a, threads=1, device=device)
                 for g, a in zip(gs, lrs, strict=True)],
        lambda: train_many(spec, [g for g in gs for _ in seeds], seed=seeds * n_cand,
                           lr=[a for a in lrs for _ in seeds], threads=1, device=device), repeats, device)
    return row("scaling", f"{n_cand * n_seeds} copies ({n_cand} lrs) in one call, {device}", n_cand * n_seeds,
               per_candidate, batched, f"{n_cand} calls of {n_seeds}", "one call")


def threads_rows(spec, k: int, repeats: int) -> list[dict]:
    gs = candidates(k)
    rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        seq, many = best_pair(lambda t=threads: [train(spec, g, seed=0, threads=t) for g in gs],
                              lambda t=threads: train_many(spec, gs, seed=0, threads=t), repeats)
        rows.append(row("threads", f"K={k}, {threads} thread(s)", k, seq, many, "sequential", "train_many"))
    return rows


def seeds_rows(spec, n_cand: int, n_seeds: int, repeats: int, device: str) -> list[dict]:
    gs = candidates(n_cand)
    bfns = [g for g in gs for _ in range(n_seeds)]
    seeds = [s for _ in gs for s in range(n_seeds)]
    pairs = list(zip(bfns, seeds, strict=True))
    seq, many = best_pair(lambda: [train(spec, g, seed=s, threads=1, device=device) for g, s in pairs],
                          lambda: train_many(spec, bfns, seed=seeds, threads=1, device=device),
                          repeats, device)
    return [row("seeds", f"{n_cand} candidates x {n_seeds} seeds, 1 thread, {device}", len(bfns), seq, many,
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
    stem = RESULTS / ("train_many" if args.device == "cpu" else f"train_many_{args.device.split(':')[0]}")
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"`{' '.join([Path(sys.executable).name, 'benchmarks/train_many.py'] + sys.argv[1:])}`", "",
             f"{spec.name}, {args.epochs} epochs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads available, device {args.device}. Seconds: median of "
             f"{args.repeats} paired blocks after a warm-up (ratio: the blocks' median ratio); candidate "
             "runs/s counts (candidate, seed) pairs. The machine may be shared with other processes.", "",
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
    parser.add_argument("--candidates", type=int, default=LR_CANDIDATES, help="candidates of the lrs rows")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds per candidate (seeds and lrs rows)")
    parser.add_argument("--device", default=DEVICE, help="cpu or cuda (CUDA events; no thread rows)")
    parser.add_argument("--scaling", type=int, nargs="*", help="copies per call of the scaling rows")
    parser.add_argument("--only", choices=["threads", "seeds", "lrs", "scaling"], help="run one section")
    args = parser.parse_args()
    spec = get_target(args.target, epochs=args.epochs)
    load_data(spec)
    train_many(get_target(args.target, epochs=1), candidates(2), seed=[0, 1], device=args.device)  # warm-up
    rows = []
    if args.device == "cpu" and args.only in (None, "threads"):
        rows += threads_rows(spec, args.k, args.repeats)
    if args.only in (None, "seeds"):
        rows += seeds_rows(spec, SEED_CANDIDATES, args.seeds, args.repeats, args.device)
    if args.only in (None, "lrs"):
        rows += lr_rows(spec, args.candidates, args.seeds, args.repeats, args.device)
    if args.only in (None, "scaling"):
        ks = args.scaling or SCALING["cuda" if args.device.startswith("cuda") else "cpu"]
        rows += [scaling_row(spec, k, args.seeds, args.repeats, args.device) for k in ks]
    if args.compile:
        rows += compile_rows(spec, args.compile_k, args.repeats)
    write(rows, spec, args)


if __name__ == "__main__":
    main()
