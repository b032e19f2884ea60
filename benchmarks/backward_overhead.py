"""Training-step time and peak memory of a patched model over the unpatched one, eager and compiled.

Question: does swapping sigma' for a b-function slow training? Targets: eager, a MetaNet costs at
most 1.10x the plain step and at most 1.10x its peak memory; under ``torch.compile`` at most
1.05x the compiled plain step, with no recompilation when omega changes.

Models, on the CPU: an MNIST-sized MLP 784-256-256-10 (batch 128) and a small CNN (2 conv + 2 fc,
28x28, batch 64). With ``--device cuda``: the MLP 784-2048-2048-2048-10 (batch 1024) and
SimpleNet (``metabp.targets``' ``cifar10-simplenet`` network, 3x32x32, batch 128). Adam, every
ReLU patched. Each row's steps are timed in blocks, and every block is paired with a block of
its baseline (eager plain for eager rows, compiled plain for compiled rows) timed right before
it; rows are interleaved over many rounds, and the median of the paired ratios is reported with
its quartiles, which cancels the slow drifts of a shared host. On CUDA a block is timed with
CUDA events after a warm-up, and the CPU time of the block (before its synchronisation) is the
host's cost of issuing it. All rows run on one model whose patch is swapped between blocks
(compiled rows through one ``torch.compile`` of it: one graph per kind of b-function, MetaNets
of any omega share one).

    python benchmarks/backward_overhead.py [--device cuda] [--rounds 20] [--steps 10] [--no-compile]

Prints ``row/baseline N.NNx [p25-p75]`` (wall clock) with raw milliseconds and the ratio of this
process's CPU time, and (unpaired) each row against eager plain; counts the graphs compiled over
10 omega changes; writes a Markdown table, a CSV and a PNG to
benchmarks/results/backward_overhead{,_cuda}.*.
Memory, eager rows: on the CPU parameters, gradients, optimizer state and the tensors autograd
saves; on CUDA the allocator's peak over a step.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch._dynamo.utils import counters
from tqdm import tqdm

import metabp

ROUNDS, STEPS, THREADS, OMEGA_CHANGES, WARMUP = 20, 10, 1, 10, 3
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


def wide_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def simplenet() -> nn.Module:
    from metabp.targets import build_model, get_target

    return build_model(get_target("cifar10-simplenet"), seed=0)


MODELS = {
    "cpu": {"mlp 784-256-256-10 b128": (mlp, (128, 784)), "cnn 28x28 b64": (cnn, (64, 1, 28, 28))},
    "cuda": {"mlp 784-2048x3-10 b1024": (wide_mlp, (1024, 784)),
             "simplenet 3x32x32 b128": (simplenet, (128, 3, 32, 32))},
}
VARIANTS = {
    "plain": None,
    "Derivative(relu)": lambda: metabp.Derivative("relu"),
    "Scaled(0.5)": lambda: metabp.Scaled(0.5),
    "MetaNet(1, tanh)": lambda: metabp.MetaNet(1, "tanh"),
    "MetaNet(8, tanh)": lambda: metabp.MetaNet(8, "tanh"),
}
COMPILED = ("plain", "Derivative(relu)", "MetaNet(1, tanh)", "MetaNet(8, tanh)")


class Setup:
    """One model, optimizer and batch on one device; ``use(mode, variant)`` swaps the patch in
    place, so every row is timed on the same tensors at the same addresses (separate copies
    differ by a few percent through memory placement alone)."""

    def __init__(self, make, shape, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        self.model = make().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(shape, device=device)
        self.y = torch.randint(0, 10, (shape[0],), device=device)
        self.loss = nn.CrossEntropyLoss()
        self.bfns = {v: make_bfn() for v, make_bfn in VARIANTS.items() if make_bfn is not None}
        self.compiled = torch.compile(self.model, fullgraph=True)
        self.call = self.model

    def use(self, mode: str, variant: str) -> None:
        metabp.unpatch(self.model)
        if variant != "plain":
            metabp.patch(self.model, self.bfns[variant])
        self.call = self.compiled if mode == "compiled" else self.model

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.call(self.x), self.y).backward()
        self.opt.step()

    def time_steps(self, steps: int) -> tuple[float, float]:
        """Seconds per step: wall clock (CUDA events on a GPU), and this process's CPU time (on a
        GPU: the host's time to issue the steps, before it waits for them)."""
        if self.device.type != "cuda":
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                self.step()
            return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        c0 = time.process_time()
        start.record()
        for _ in range(steps):
            self.step()
        end.record()
        cpu = time.process_time() - c0
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / steps, cpu / steps

    def peak_bytes(self) -> int:
        """Bytes held at the peak of an eager step: on CUDA the allocator's peak; on the CPU
        parameters, grads, optimizer state and the tensors autograd saves."""
        if self.device.type == "cuda":
            self.step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.step()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
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

    def graphs_over_omega_changes(self, changes: int) -> int:
        """Graphs compiled while the compiled MetaNet row's omega is assigned ``changes`` times."""
        self.use("compiled", "MetaNet(1, tanh)")
        g = self.bfns["MetaNet(1, tanh)"]
        before = counters["stats"]["unique_graphs"]
        for seed in range(changes):
            g.omega = metabp.MetaNet(1, "tanh", seed=100 + seed).omega
            self.step()
        return counters["stats"]["unique_graphs"] - before


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def paired_blocks(setup: Setup, rows_wanted: list[tuple[str, str]], args) -> tuple[dict, dict]:
    """Per row: (wall, cpu) seconds per step of each block, and its ratios to the paired baseline."""
    for mode, v in rows_wanted:  # warm up allocator, caches, tables; compile each graph once
        setup.use(mode, v)
        setup.time_steps(WARMUP)
    times: dict[tuple, list[tuple[float, float]]] = {r: [] for r in rows_wanted}
    ratios: dict[tuple, list[tuple[float, float]]] = {r: [] for r in rows_wanted}
    for _ in tqdm(range(args.rounds), desc="rounds", leave=False):
        for mode, v in rows_wanted:
            setup.use(mode, "plain")  # the pair's baseline block, right before the row's block
            wall0, cpu0 = setup.time_steps(args.steps)
            setup.use(mode, v)
            wall, cpu = setup.time_steps(args.steps)
            times[(mode, v)].append((wall, cpu))
            ratios[(mode, v)].append((wall / wall0, cpu / cpu0))
    return times, ratios


def measure(name: str, make, shape, rows_wanted: list[tuple[str, str]], args) -> list[dict]:
    setup = Setup(make, shape, torch.device(args.device))
    times, ratios = paired_blocks(setup, rows_wanted, args)
    recompiles = setup.graphs_over_omega_changes(OMEGA_CHANGES) if not args.no_compile else None
    setup.use("eager", "plain")
    base_m = setup.peak_bytes()
    rows = []
    eager_plain = statistics.median(w for w, _ in times[("eager", "plain")])
    for mode, v in rows_wanted:
        p25, med, p75 = quartiles([r for r, _ in ratios[(mode, v)]])
        row = {"model": name, "mode": mode, "variant": v,
               "ms_per_step": 1e3 * statistics.median(w for w, _ in times[(mode, v)]),
               "time_ratio": med, "ratio_p25": p25, "ratio_p75": p75,
               "cpu_ms_per_step": 1e3 * statistics.median(c for _, c in times[(mode, v)]),
               "cpu_time_ratio": statistics.median(c for _, c in ratios[(mode, v)]),
               "vs_eager_plain": statistics.median(w for w, _ in times[(mode, v)]) / eager_plain,
               "peak_kib": "", "memory_ratio": "", "graphs_over_omega_changes": ""}
        if mode == "eager":
            setup.use("eager", v)
            m = setup.peak_bytes()
            row.update(peak_kib=m / 1024, memory_ratio=m / base_m)
        elif v == "MetaNet(1, tanh)":
            row["graphs_over_omega_changes"] = recompiles
        rows.append(row)
        mem = f"memory {row['memory_ratio']:.2f}x" if mode == "eager" else ""
        print(f"{name:24s} {mode:8s} {v + '/plain':24s} {med:.3f}x [{p25:.3f}-{p75:.3f}] "
              f"({row['ms_per_step']:7.3f} ms)  cpu {row['cpu_time_ratio']:.3f}x  {mem}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--no-compile", action="store_true", help="eager rows only")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the CSV, measure nothing")
    args = ap.parse_args()
    stem = "backward_overhead" + ("_cuda" if args.device == "cuda" else "")
    if args.plot_only:
        with open(RESULTS / f"{stem}.csv") as f:
            next(f)  # the command line
            numbers = ("time_ratio", "ratio_p25", "ratio_p75")
            rows = [{k: float(v) if k in numbers else v for k, v in r.items()} for r in csv.DictReader(f)]
        return plot(rows, stem)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    wanted = [("eager", v) for v in VARIANTS]
    if not args.no_compile:
        wanted += [("compiled", v) for v in COMPILED]
    rows = []
    for name, (make, shape) in MODELS[args.device].items():
        rows += measure(name, make, shape, wanted, args)
    write(rows, args, stem)


def write(rows: list[dict], args, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    command = "python benchmarks/backward_overhead.py " + " ".join(sys.argv[1:])
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        f.write(f"# {command.strip()}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    def fmt(value, spec: str) -> str:
        return "" if value == "" or value is None else format(value, spec)

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    memory = "the allocator's peak over a step" if args.device == "cuda" else \
        "parameters, gradients, optimizer state and the tensors autograd saves"
    lines = [f"<!-- {command.strip()} -->",
             f"# backward overhead ({device}, threads={args.threads}, rounds={args.rounds} x "
             f"{args.steps} steps, torch {torch.__version__})", "",
             "Ratios: median of paired blocks (row / its plain baseline in the same mode, timed right "
             "before it), with the quartiles of those ratios. Host ms: this process's CPU time per step "
             "(on a GPU, before waiting for the device).", "",
             f"The last time column divides medians of unpaired blocks: the row against eager plain. "
             f"Memory (eager rows): {memory}.", "",
             "| model | mode | variant | ms/step | time vs plain | p25-p75 | host ms/step | host time "
             "vs plain | time vs eager plain | peak KiB | memory vs plain | graphs over 10 omega changes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mode']} | {r['variant']} | {r['ms_per_step']:.3f} | "
              f"{r['time_ratio']:.3f}x | {r['ratio_p25']:.3f}-{r['ratio_p75']:.3f} | "
              f"{r['cpu_ms_per_step']:.3f} | {r['cpu_time_ratio']:.3f}x | {r['vs_eager_plain']:.3f}x | "
              f"{fmt(r['peak_kib'], '.0f')} | {fmt(r['memory_ratio'], '.2f')} | "
              f"{fmt(r['graphs_over_omega_changes'], 'd')} |" for r in rows]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, stem)


def plot(rows: list[dict], stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        sub = [r for r in rows if r["model"] == m and r["variant"] != "plain"]
        labels = [f"{r['mode']} {r['variant']}" for r in sub]
        med = [r["time_ratio"] for r in sub]
        err = [[r["time_ratio"] - r["ratio_p25"] for r in sub],
               [r["ratio_p75"] - r["time_ratio"] for r in sub]]
        colors = ["tab:blue" if r["mode"] == "eager" else "tab:orange" for r in sub]
        ax.barh(labels, med, xerr=err, color=colors)
        ax.axvline(1.10, color="tab:red", ls="--", label="1.10x eager target")
        ax.axvline(1.05, color="tab:purple", ls=":", label="1.05x compiled target")
        ax.set_xlim(min(0.9, min(r["ratio_p25"] for r in sub) - 0.05), max(1.3, max(med) + 0.05))
        ax.set_title(m)
        ax.set_xlabel("step time / plain step time, same mode\n(median of paired blocks, p25-p75)")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=110)


if __name__ == "__main__":
    main()
