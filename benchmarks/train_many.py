"""Candidates per second: ``train_many`` (K copies batched) over K sequential ``train`` calls.

Also measures CPU threads: the same sequential and batched runs with 1 thread and with all
cores. Prints ``train_many/sequential N.NNx`` with the raw times, writes a Markdown table, a CSV
and a PNG to ``benchmarks/results/``. Quick (< 2 min on 2 cores) so it can be re-run.

    .venv/bin/python benchmarks/train_many.py [--k 16] [--target digits-mlp] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

import metabp
from metabp.targets import get_target, load_data, train, train_many

# defaults (nanoGPT style: plain values at the top)
TARGET = "digits-mlp"
K = 16
EPOCHS = 3
REPEATS = 2  # best of, against noise from other processes
RESULTS = Path(__file__).parent / "results"


def candidates(k: int) -> list[metabp.MetaNet]:
    return [metabp.MetaNet(hidden=1, seed=i) for i in range(k)]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    spec = get_target(args.target, epochs=args.epochs)
    gs = candidates(args.k)
    load_data(spec)
    train(get_target(args.target, epochs=1), gs[0], seed=0)  # warm-up: imports, first optimizer
    train_many(get_target(args.target, epochs=1), gs[:2], seed=0)
    cores = torch.get_num_threads()
    rows = []
    for threads in sorted({1, cores}):
        seq = best_of(lambda t=threads: [train(spec, g, seed=0, device=args.device, threads=t) for g in gs],
                      args.repeats)
        many = best_of(lambda t=threads: train_many(spec, gs, seed=0, device=args.device, threads=t),
                       args.repeats)
        rows.append({"threads": threads, "sequential_s": seq, "train_many_s": many,
                     "cand_per_s_sequential": args.k / seq, "cand_per_s_many": args.k / many,
                     "ratio": seq / many})
    one = rows[0]
    print(f"{spec.name}, K={args.k}, {args.epochs} epochs, torch {torch.__version__}, "
          f"{cores} threads available")
    for r in rows:
        print(f"threads={r['threads']}: train_many/sequential {r['ratio']:.2f}x "
              f"(sequential {r['sequential_s']:.2f} s, train_many {r['train_many_s']:.2f} s; "
              f"{r['cand_per_s_many']:.1f} vs {r['cand_per_s_sequential']:.1f} candidates/s)")
    if len(rows) > 1:
        two = rows[-1]
        print(f"threads 1 vs {two['threads']}: sequential {two['sequential_s'] / one['sequential_s']:.2f}x "
              f"faster with 1, train_many {two['train_many_s'] / one['train_many_s']:.2f}x faster with 1")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"train_many_{spec.name}_k{args.k}"
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# train_many vs sequential train: {spec.name}, K={args.k}, {args.epochs} epochs",
             "", "| threads | sequential s | train_many s | candidates/s seq | candidates/s many | ratio |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['sequential_s']:.2f} | {r['train_many_s']:.2f} | "
              f"{r['cand_per_s_sequential']:.1f} | {r['cand_per_s_many']:.1f} | {r['ratio']:.2f}x |"
              for r in rows]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = [f"{r['threads']} thr" for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["cand_per_s_sequential"] for r in rows], 0.4, label="sequential train")
    ax.bar([i + 0.2 for i in x], [r["cand_per_s_many"] for r in rows], 0.4, label=f"train_many (K={args.k})")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("candidates / s")
    ax.set_title(f"{spec.name}, {args.epochs} epochs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=120)
    print(f"wrote {stem}.md, .csv, .png")


if __name__ == "__main__":
    main()
