"""Training-step time and peak memory of a patched model over the unpatched one, in one run.

Question: does swapping sigma' for a b-function slow training? Target (issue 3): a MetaNet of up
to 8 hidden units costs at most 1.10x the plain step on CPU, and at most 1.10x its peak memory.

Models: an MNIST-sized MLP 784-256-256-10 (batch 128) and a small CNN (2 conv + 2 fc, 28x28,
batch 64), Adam. Every ReLU is patched. Steps of the variants are interleaved, many rounds, and
each variant's block is paired with a plain block timed right before it; the median of those
paired ratios is reported, which cancels the slow drifts of a shared host. All variants run on
one model whose patch is swapped between blocks of steps.

    python benchmarks/backward_overhead.py [--rounds 30] [--steps 20] [--threads 1]

Prints `variant/plain N.NNx` (wall clock) with raw milliseconds beside, and the ratio of this
process's CPU time, which a busy machine disturbs less; writes a Markdown table, a CSV and a PNG
to benchmarks/results/backward_overhead.*. Memory counts parameters, gradients, optimizer state
and the tensors autograd saves (on CUDA, also the allocator's peak).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import metabp

ROUNDS, STEPS, THREADS = 40, 10, 1
RESULTS = Path(__file__).parent / "results"


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),      # (B, 16, 14, 14)
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),     # (B, 32, 7, 7)
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


MODELS = {"mlp 784-256-256-10 b128": (mlp, (128, 784)), "cnn 28x28 b64": (cnn, (64, 1, 28, 28))}
VARIANTS = {
    "plain": None,
    "Derivative(relu)": lambda: metabp.Derivative("relu"),
    "Scaled(0.5)": lambda: metabp.Scaled(0.5),
    "MetaNet(1, tanh)": lambda: metabp.MetaNet(1, "tanh"),
    "MetaNet(8, tanh)": lambda: metabp.MetaNet(8, "tanh"),
}


class Setup:
    """One model, optimizer and batch; ``use(variant)`` swaps the patch in place, so every variant
    is timed on the same tensors at the same addresses (separate copies differ by a few percent
    through memory placement alone)."""

    def __init__(self, make, shape, variant: str = "plain"):
        torch.manual_seed(0)
        self.model = make()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(shape)
        self.y = torch.randint(0, 10, (shape[0],))
        self.loss = nn.CrossEntropyLoss()
        self.bfns = {v: make_bfn() for v, make_bfn in VARIANTS.items() if make_bfn is not None}
        self.use(variant)

    def use(self, variant: str) -> None:
        metabp.unpatch(self.model)
        if variant != "plain":
            metabp.patch(self.model, self.bfns[variant])

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def time_steps(self, steps: int) -> tuple[float, float]:
        """Seconds per step: wall clock, and this process's CPU time (robust to a busy machine)."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    def peak_bytes(self) -> int:
        """Bytes held at the peak of a step: parameters, grads, optimizer state, saved activations."""
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        self.opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        params = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
                  for p in self.model.parameters()}
        state = sum(t.untyped_storage().nbytes() for s in self.opt.state.values()
                    for t in s.values() if torch.is_tensor(t))
        activations = sum(n for ptr, n in saved.items() if ptr not in params)
        return 2 * sum(params.values()) + state + activations + self.x.untyped_storage().nbytes()


def cuda_peak(make, shape, variant: str) -> int:
    s = Setup(make, shape, variant)
    s.model.cuda()
    s.x, s.y = s.x.cuda(), s.y.cuda()
    s.opt = torch.optim.Adam(s.model.parameters(), lr=1e-3)
    s.step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    s.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model_name, (make, shape) in MODELS.items():
        setup = Setup(make, shape)
        for v in VARIANTS:  # warm up allocator, caches and each b-function's table
            setup.use(v)
            setup.time_steps(5)
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        ratios: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                # each variant's block is paired with a plain block right before it: the ratio of
                # the pair cancels the slow drifts of a shared host
                setup.use("plain")
                wall0, cpu0 = setup.time_steps(args.steps)
                setup.use(v)
                wall, cpu = setup.time_steps(args.steps)
                times[v].append((wall, cpu))
                ratios[v].append((wall / wall0, cpu / cpu0))
        setup.use("plain")
        base_t = statistics.median(w for w, _ in times["plain"])
        base_m = setup.peak_bytes()
        for v in VARIANTS:
            setup.use(v)
            t = statistics.median(w for w, _ in times[v])
            c = statistics.median(c for _, c in times[v])
            m = setup.peak_bytes()
            row = {"model": model_name, "variant": v, "ms_per_step": 1e3 * t,
                   "time_ratio": statistics.median(r for r, _ in ratios[v]), "cpu_ms_per_step": 1e3 * c,
                   "cpu_time_ratio": statistics.median(r for _, r in ratios[v]),
                   "peak_kib": m / 1024, "memory_ratio": m / base_m}
            if torch.cuda.is_available():
                row["cuda_memory_ratio"] = cuda_peak(make, shape, v) / cuda_peak(make, shape, "plain")
            rows.append(row)
            print(f"{model_name:24s} {v + '/plain':24s} {row['time_ratio']:.2f}x "
                  f"({1e3 * t:7.3f} ms vs {1e3 * base_t:7.3f} ms)  cpu {row['cpu_time_ratio']:.2f}x   "
                  f"memory {row['memory_ratio']:.2f}x ({m / 1024:.0f} KiB vs {base_m / 1024:.0f} KiB)")
    write(rows, args)


def write(rows: list[dict], args) -> None:
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "backward_overhead.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# backward overhead (threads={args.threads}, torch {torch.__version__})", "",
             "| model | variant | ms/step | time vs plain | CPU time vs plain | peak KiB | memory vs plain |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['ms_per_step']:.3f} | {r['time_ratio']:.2f}x | "
              f"{r['cpu_time_ratio']:.2f}x | {r['peak_kib']:.0f} | {r['memory_ratio']:.2f}x |" for r in rows]
    (RESULTS / "backward_overhead.md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        sub = [r for r in rows if r["model"] == m]
        ax.barh([r["variant"] for r in sub], [r["time_ratio"] for r in sub], color="tab:blue")
        ax.axvline(1.10, color="tab:red", ls="--", label="1.10x target")
        ax.set_title(m)
        ax.set_xlabel("step time / plain step time")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "backward_overhead.png", dpi=110)


if __name__ == "__main__":
    main()
