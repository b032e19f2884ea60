"""Candidates per hour for the paper's SimpleNet protocol: one ``train`` per candidate against
``train_many`` of K candidates, eager, in float32, channels-last, bf16 autocast and both.

The protocol is the preset ``fashion-simplenet``: SimpleNet on Fashion-MNIST padded to 32x32,
batch 128, Adadelta lr 0.01, 5 epochs, a 1-1-1 tanh MetaNet in place of ReLU' at ``act4``.

Method: each configuration trains on the first ``n1`` and then ``n2`` batches (one epoch,
``train_size = n * batch``); the line through the two wall times gives the time per step (slope)
and the fixed cost (intercept: building the model, the test set's accuracy). A protocol run of K
candidates then costs ``T = fixed + slope * steps`` with ``steps = epochs * ceil(60000 / 128)``,
and candidates per hour are ``3600 K / T``. Slope and intercept are the medians over ``--repeats``
of those of each repeat's two runs, timed back to back; every repeat times every
configuration in turn (interleaved). Ratios are against the sequential float32 row of the same run.

    python benchmarks/simplenet_throughput.py --device cuda     # the protocol's size; *_cuda.md
    python benchmarks/simplenet_throughput.py --width 0.125 --steps 2,4 --k 2,4 --test-size 256 \\
        --synthetic                                             # a reduced size for a CPU; *_cpu.md

Writes ``benchmarks/results/simplenet_throughput_{device}.{md,csv,png}``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import metabp
from metabp.targets import get_target, load_data, train, train_many

# defaults (nanoGPT style: plain values at the top)
TARGET = "fashion-simplenet"
KS = (4, 8, 16)
STEPS = (10, 30)  # n1, n2 batches per timed run
REPEATS = 3
FULL_TRAIN = 60_000  # Fashion-MNIST's training set: the protocol's steps per epoch follow from it
GOAL = 300.0  # candidates per hour on one H200
RESULTS = Path(__file__).parent / "results"


def candidates(k: int) -> list[metabp.MetaNet]:
    return [metabp.MetaNet(hidden=1, act="tanh", seed=i) for i in range(k)]


def configs(ks: list[int]) -> list[tuple[str, int, dict]]:
    """(label, K, target options): sequential and batched, then channels-last, bf16 and both."""
    rows = [("sequential", 1, {})] + [(f"batched K={k}", k, {}) for k in ks]
    for name, options in (("channels-last", {"channels_last": True}), ("bf16", {"amp": "bf16"}),
                          ("bf16 channels-last", {"amp": "bf16", "channels_last": True})):
        rows += [(f"sequential {name}", 1, options), (f"batched K={max(ks)} {name}", max(ks), options)]
    return rows


def synthetic_dir(n_train: int, n_test: int) -> str:
    """Random images and labels as Fashion-MNIST idx files (the time per step does not depend on them)."""
    directory = Path(tempfile.mkdtemp(prefix="simplenet-bench-"))
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                            ("labels-idx1", rng.integers(0, 10, n))):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
            (directory / f"{split}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    return str(directory)


def timed(spec, k: int, steps: int, args: argparse.Namespace) -> float:
    """Wall seconds of one run of ``k`` candidates on ``steps`` batches (the device synced at both ends)."""
    spec = get_target(spec, train_size=steps * spec.batch_size, epochs=1)
    gs = candidates(k)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    if k == 1:
        runs = [train(spec, gs[0], seed=0, device=args.device, data_dir=args.data_dir)]
    else:
        runs = train_many(spec, gs, seed=0, device=args.device, data_dir=args.data_dir)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if any(r.diverged for r in runs):
        raise SystemExit("a candidate diverged: its run stopped early and would bias the timing")
    return seconds


def measure(args: argparse.Namespace) -> list[dict]:
    base = get_target(TARGET, width=args.width)
    table = configs(args.k)
    n1, n2 = args.steps
    times: dict[tuple[str, int], list[float]] = {(label, n): [] for label, _, _ in table for n in (n1, n2)}
    for _, k, options in table:  # warm-up: data loading, cuDNN's algorithm search, allocator
        timed(get_target(base, **options), k, n1, args)
    with tqdm(total=args.repeats * len(table) * 2, desc="simplenet throughput", unit="run") as bar:
        for _ in range(args.repeats):
            for label, k, options in table:
                for n in (n1, n2):
                    times[label, n].append(timed(get_target(base, **options), k, n, args))
                    bar.update(1)
    steps = base.epochs * math.ceil(FULL_TRAIN / base.batch_size)
    rows = []
    for label, k, _ in table:
        pairs = list(zip(times[label, n1], times[label, n2], strict=True))  # one pair per repeat
        slope = statistics.median((b - a) / (n2 - n1) for a, b in pairs)
        fixed = max(statistics.median(a - (b - a) / (n2 - n1) * n1 for a, b in pairs), 0.0)
        t1, t2 = statistics.median(times[label, n1]), statistics.median(times[label, n2])
        rows.append({"config": label, "K": k, "step_s": slope, "fixed_s": fixed, f"t{n1}_s": t1,
                     f"t{n2}_s": t2, "candidates_per_hour": 3600.0 * k / (fixed + slope * steps)})
    for r in rows:
        r["ratio"] = r["candidates_per_hour"] / rows[0]["candidates_per_hour"]
        print(f"{r['config']}: {r['candidates_per_hour']:.1f} candidates/h, {r['ratio']:.2f}x sequential "
              f"({r['step_s'] * 1e3:.1f} ms/step for {r['K']}, fixed {r['fixed_s']:.1f} s)", flush=True)
    return rows


def describe(args: argparse.Namespace) -> str:
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else (
        f"a CPU ({torch.get_num_threads()} threads outside training; train picks its own)")
    size = ("the protocol's network (width 1)" if args.width == 1.0
            else f"**reduced size**: SimpleNet width {args.width:g}, not the protocol's network")
    data = (f"synthetic images ({args.test_size} test images)" if args.synthetic
            else "Fashion-MNIST's files (10000 test images)")
    return (f"{TARGET} on {device}, torch {torch.__version__}; {size}; {data}. Timed on the first "
            f"{args.steps[0]} and {args.steps[1]} batches, median of {args.repeats} interleaved repeats; "
            "candidates/h extrapolate the line through the two to 5 epochs of 60000 images."
            + ("" if args.device.startswith("cuda") else " On a CPU the convolutions bound every row: "
               "this table checks the benchmark, it says nothing about a GPU."))


def write(rows: list[dict], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"simplenet_throughput_{args.device.split(':')[0]}"
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    n1, n2 = args.steps
    command = " ".join([Path(sys.executable).name, "benchmarks/simplenet_throughput.py"] + sys.argv[1:])
    lines = [f"`{command}`", "", describe(args), "",
             f"| config | K | s/step (all K) | fixed s | {n1} steps s | {n2} steps s | candidates/h | "
             "vs sequential |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['K']} | {r['step_s']:.4f} | {r['fixed_s']:.2f} | {r[f't{n1}_s']:.2f} | "
              f"{r[f't{n2}_s']:.2f} | {r['candidates_per_hour']:.1f} | {r['ratio']:.2f}x |" for r in rows]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, args, f"{stem}.png")
    print(f"wrote {stem}.md, .csv, .png")


def plot(rows: list[dict], args: argparse.Namespace, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = range(len(rows))
    ax.bar(list(x), [r["candidates_per_hour"] for r in rows], 0.6)
    for i, r in enumerate(rows):
        ax.annotate(f"{r['ratio']:.2f}x", (i, r["candidates_per_hour"]), ha="center", va="bottom", fontsize=8)
    if args.device.startswith("cuda") and args.width == 1.0:
        ax.axhline(GOAL, color="k", ls="--", lw=1, label=f"goal {GOAL:.0f}/h")
        ax.legend(fontsize=8)
    ax.set_xticks(list(x), [r["config"].replace(" ", "\n", 1) for r in rows], fontsize=7)
    ax.set_ylabel("candidates / hour (5 epochs)")
    reduced = "" if args.width == 1.0 else f" (reduced: width {args.width:g})"
    ax.set_title(f"{TARGET} on {args.device}{reduced}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=1.0, help="SimpleNet's width (1: the protocol's)")
    parser.add_argument("--k", type=lambda s: [int(v) for v in s.split(",")], default=list(KS))
    parser.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=STEPS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--synthetic", action="store_true", help="random images in place of Fashion-MNIST")
    parser.add_argument("--test-size", type=int, default=10_000, help="test images (with --synthetic)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if len(args.steps) != 2 or not 0 < args.steps[0] < args.steps[1]:
        parser.error(f"--steps {args.steps}: give two counts n1 < n2, e.g. 10,30")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device")
    if args.synthetic:
        args.data_dir = synthetic_dir(args.steps[1] * get_target(TARGET).batch_size, args.test_size)
    load_data(get_target(TARGET), args.data_dir)  # a missing dataset fails here, with where to put it
    write(measure(args), args)


if __name__ == "__main__":
    main()
