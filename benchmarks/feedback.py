"""Feedback b-functions: test error and step time of bp, fa, sign, frsf, brsf, dfa, relative to bp.

Question: how much accuracy does each feedback mode give up against backprop, what does it cost
per step, and do the forward weights align with the feedback matrices during training?

Targets (``metabp.targets`` presets, unchanged): ``digits-mlp`` (64-32-32-10, Adam 0.01, 10
epochs) and ``mnist-lenet`` (LeNet-5, Adam 1e-3, 2 epochs) when MNIST idx files are found under
``$METABP_DATA`` (else it is skipped with a message; its step time is still measured on random
28x28 inputs). Each mode trains through ``train(get_target(name, feedback=mode), seed=s)``,
``SEEDS`` seeds; the random feedback matrices follow the run seed. Step times: forward +
backward + Adam step on a fixed batch, modes interleaved over rounds, median per step.

Beside them: BioTorch's published MNIST LeNet top-1 errors (Sanfiz & Akrout 2021, table 2).

    python benchmarks/feedback.py [--seeds 3] [--rounds 15] [--steps 20] [--targets digits-mlp,mnist-lenet]

Prints ``mode/bp N.NNx`` with raw milliseconds, writes benchmarks/results/feedback.{md,csv,png}
and feedback_alignment.png (W/B and delta angles of digits-mlp over training).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import metabp
from metabp.exceptions import DataError, MetabpError
from metabp.targets import (
    StepEvent,
    build_model,
    get_target,
    load_data,
    make_optimizer,
    train,
)

MODES = ["bp", "fa", "sign", "frsf", "brsf", "dfa"]
TARGETS = ["digits-mlp", "mnist-lenet"]
SEEDS, ROUNDS, STEPS, THREADS = 3, 15, 20, 1
RESULTS = Path(__file__).parent / "results"
# BioTorch (Sanfiz & Akrout 2021), MNIST LeNet top-1 error, %; "sign" is their uSF
BIOTORCH_MNIST_LENET = {"bp": 0.91, "fa": 1.7, "sign": 0.94, "brsf": 0.91, "frsf": 0.97, "dfa": 1.61}


def test_errors(name: str, seeds: int) -> dict[str, list[float] | str]:
    """Test error (%) per mode over ``seeds`` runs, or a string saying why there is none."""
    out: dict[str, list[float] | str] = {}
    for mode in ["plain"] + MODES:
        spec = get_target(name, feedback=None if mode == "plain" else mode)
        errs = []
        for seed in range(seeds):
            try:
                run = train(spec, seed=seed, threads=THREADS)
            except MetabpError as e:
                out[mode] = f"n/a ({str(e).split(';')[0][:70]})"
                break
            errs.append(100 * (1 - run.test_accuracy))
        else:
            out[mode] = errs
        print(f"  {name:12s} {mode:6s} test error {fmt(out[mode])}", flush=True)
    return out


def step_times(name: str, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per training step of each mode (and of the unpatched model, ``plain``)."""
    spec = get_target(name)
    x = torch.randn((spec.batch_size,) + tuple(spec.in_shape), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, spec.num_classes, (spec.batch_size,), generator=torch.Generator().manual_seed(1))
    setups = {}
    for mode in ["plain"] + MODES:
        model = build_model(spec, 0)
        try:
            if mode != "plain":
                metabp.feedback(model, mode)
        except MetabpError:
            continue
        setups[mode] = (model, make_optimizer(spec.optimizer, model.parameters(), spec.lr))
    times: dict[str, list[float]] = {m: [] for m in setups}
    for _ in range(rounds):
        for mode, (model, opt) in setups.items():
            t = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
            times[mode].append((time.perf_counter() - t) / steps)
    return {m: statistics.median(v) for m, v in times.items()}


def alignment_trace(name: str = "digits-mlp", seed: int = 0) -> dict[str, list[dict]]:
    """Per mode, ``metabp.alignment`` on 300 training examples after every epoch (epoch 0: at init).

    A callback of ``train`` records it at the first step of each epoch, before that step's
    update; one extra epoch gives the state after the preset's last epoch (the first ``E``
    epochs of an ``E + 1``-epoch run are the ``E``-epoch run: the same batches).
    """
    spec = get_target(name)
    data = load_data(spec)
    probe = (data.x_train[:300], data.y_train[:300])
    out = {}
    for mode in MODES[1:]:
        trace: list[dict] = []

        def record(event: StepEvent, trace: list[dict] = trace) -> None:
            if len(trace) == event.epoch <= spec.epochs:  # the epoch's first step
                trace.append(metabp.alignment(event.model, probe))

        train(get_target(name, feedback=mode, epochs=spec.epochs + 1), seed=seed, threads=THREADS,
              callbacks=[record])
        out[mode] = trace
    return out


def fmt(v: list[float] | str) -> str:
    if isinstance(v, str):
        return v
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--targets", default=",".join(TARGETS))
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for name in args.targets.split(","):
        print(f"{name}:", flush=True)
        try:
            load_data(get_target(name))
            errors = test_errors(name, args.seeds)
        except DataError as e:
            print(f"  skipping {name} training: {str(e)[:160]}...", flush=True)
            errors = {m: "no data" for m in ["plain"] + MODES}
        times = step_times(name, args.rounds, args.steps)
        for mode in ["plain"] + MODES:
            t = times.get(mode)
            ratio = t / times["bp"] if t is not None else None
            if t is not None:
                print(f"  {mode:6s}/bp {ratio:.2f}x  ({1e3 * t:.3f} ms/step)", flush=True)
            rows.append({"target": name, "mode": mode, "test_error_pct": fmt(errors[mode]),
                         "errors": errors[mode], "ms_per_step": t and 1e3 * t, "time_vs_bp": ratio,
                         "biotorch_mnist_lenet_pct": BIOTORCH_MNIST_LENET.get(mode)})
    write_tables(rows, args)
    trace = alignment_trace()
    plot(rows, trace)
    last = {m: {k: (round(v.weight, 1) if v.weight is not None else None, round(v.delta, 1))
                for k, v in t[-1].items()} for m, t in trace.items()}
    print("alignment after training (layer: (W/B angle, delta angle)):", last)


def write_tables(rows: list[dict], args: argparse.Namespace) -> None:
    with open(RESULTS / "feedback.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "mode", "test_error_pct_mean", "test_error_pct_runs", "ms_per_step",
                    "time_vs_bp", "biotorch_mnist_lenet_error_pct"])
        for r in rows:
            e = r["errors"]
            w.writerow([r["target"], r["mode"], f"{statistics.mean(e):.3f}" if isinstance(e, list) else e,
                        " ".join(f"{v:.2f}" for v in e) if isinstance(e, list) else "",
                        f"{r['ms_per_step']:.4f}" if r["ms_per_step"] else "",
                        f"{r['time_vs_bp']:.3f}" if r["time_vs_bp"] else "",
                        r["biotorch_mnist_lenet_pct"] or ""])
    lines = [
        f"`python benchmarks/feedback.py --seeds {args.seeds} --rounds {args.rounds} --steps {args.steps} "
        f"--targets {args.targets}`",
        "",
        "# Feedback modes: test error and step time relative to bp",
        "",
        f"{torch.__version__}, {THREADS} thread, a shared CPU. Test error: mean ± std over {args.seeds} "
        "seeds of the "
        "unchanged preset (`train(get_target(name, feedback=mode))`). `plain` is the unpatched model "
        "(plain autograd); `bp` is the custom backward with B = W. Step time: median over interleaved "
        "rounds, forward + backward + optimizer step on one batch (mnist-lenet: random inputs if the "
        "data are absent).",
        "",
        "| target | mode | test error % | ms/step | time vs bp | BioTorch MNIST LeNet error % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['mode']} | {r['test_error_pct']} | "
            + (f"{r['ms_per_step']:.3f} | {r['time_vs_bp']:.2f}x" if r["ms_per_step"] else "n/a | n/a")
            + f" | {r['biotorch_mnist_lenet_pct'] if r['biotorch_mnist_lenet_pct'] is not None else ''} |"
        )
    (RESULTS / "feedback.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(rows: list[dict], trace: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # test error per mode (digits) beside BioTorch's MNIST LeNet
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for k, target in enumerate(dict.fromkeys(r["target"] for r in rows)):
        rs = [r for r in rows if r["target"] == target and isinstance(r["errors"], list)]
        if not rs:
            continue
        xs = [MODES.index(r["mode"]) + 1 if r["mode"] in MODES else 0 for r in rs]
        ax.errorbar([x + 0.15 * k for x in xs], [statistics.mean(r["errors"]) for r in rs],
                    yerr=[statistics.stdev(r["errors"]) if len(r["errors"]) > 1 else 0 for r in rs],
                    fmt="o", capsize=3, label=f"{target} (metabp)")
    ax.plot([MODES.index(m) + 1.3 for m in BIOTORCH_MNIST_LENET], list(BIOTORCH_MNIST_LENET.values()),
            "k^", label="BioTorch MNIST LeNet (published)")
    ax.set_xticks(range(len(MODES) + 1), ["plain"] + MODES)
    ax.set_ylabel("test error %")
    ax.set_title("test error by feedback mode")
    ax.legend(fontsize=8)
    ax = axes[1]
    for target in dict.fromkeys(r["target"] for r in rows):
        rs = [r for r in rows if r["target"] == target and r["time_vs_bp"]]
        ax.plot([r["mode"] for r in rs], [r["time_vs_bp"] for r in rs], "o-", label=target)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_ylabel("step time / bp step time")
    ax.set_title("step time relative to bp")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "feedback.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, t in trace.items():
        for layer in ("fc2", "fc3"):  # fc1's B would feed the input: never used
            w = [a[layer].weight for a in t]
            if None not in w:
                axes[0].plot(range(len(t)), w, label=f"{mode} {layer}", ls="-" if layer == "fc3" else "--")
        axes[1].plot(range(len(t)), [a["fc1"].delta for a in t], label=f"{mode}")
    titles = ("angle between W and B (deg)", "angle between BP delta and applied delta at fc1's output (deg)")
    for ax, title in zip(axes, titles, strict=True):
        ax.axhline(90, color="grey", lw=0.5)
        ax.set_xlabel("epoch (digits-mlp, seed 0)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "feedback_alignment.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
