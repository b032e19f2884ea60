"""Gradient search: BO (BoTorch), evolution strategies, hypergradients and random search at equal wall time.

Question: beyond a few parameters, does a gradient method (``sampler = "es"``, or Adam on
``metabp.search.hypergrad``) find a better b-function than Bayesian optimisation in the same time?

Problems (a ``tanh`` meta-network in place of ReLU' after FC2, omega in [-5, 5]^d, search seeds 0
and 1, the best candidate validated on held-out seeds 100-104):

- ``quickstart``: gaussians-mlp3 (its preset: Adam 0.1, full batch, 100 epochs), ``hidden = 1``: 4-D;
- ``digits25``: digits-mlp with 2 epochs (the preset has 10; cut for the time budget), ``hidden = 8``: 25-D;
- ``mnist1d49``: mnist1d-mlp with 5 epochs (preset 50; cut likewise), ``hidden = 16``: 49-D.

One g per site (mnist1d, both activations) is not run: study files have no syntax for a
meta-network per site.

Methods, each a fresh search given ``WALL[problem]`` seconds of wall time (plain backprop's
baseline is trained before the clock starts):

- ``botorch``: the study's GP + qLogEI sampler, ``q = 4`` candidates x 2 seeds per batch;
- ``es``: ``sampler = "es"`` with its defaults (population 8: one batch of 8 x 2 seeds);
- ``random``: uniform in the box, 8 candidates per batch (batched like ES);
- ``hypergrad``: the best of 8 Sobol points, then Adam (step ``HG_STEP`` of the box) on the mean
  over the search seeds of the exact hypergradient of a ``UNROLL``-step unroll; every ``HG_EVAL``
  steps the iterate is scored by full training like every other method's candidates.

At each of ``CHECKPOINTS`` (fractions of the wall budget) the candidate with the best search score
so far is trained on the held-out seeds; the table reports the end, the PNG the curve. The
machine (2 CPU cores) is shared with other jobs: wall times are indicative, and every method of a
problem runs back to back under the same load. ``--unroll-cost`` measures the hypergradient's time
and autograd memory per unroll length ``T`` (ratios to ``T = 1``).

    OMP_NUM_THREADS=1 python benchmarks/gradient_search.py            # everything (about 20 min)
    python benchmarks/gradient_search.py --problems quickstart --wall-scale 0.25   # a smoke run

Files: ``benchmarks/results/gradient_search.{md,csv,png}``, ``gradient_search_unroll.md``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results"
PROBLEMS = {  # name: (preset, overrides, meta-network hidden units)
    "quickstart": ("gaussians-mlp3", {}, 1),
    "digits25": ("digits-mlp", {"epochs": 2}, 8),
    "mnist1d49": ("mnist1d-mlp", {"epochs": 5}, 16),
}
WALL = {"quickstart": 40.0, "digits25": 90.0, "mnist1d49": 120.0}  # seconds per method
METHODS = ("botorch", "es", "hypergrad", "random")
SEEDS = (0, 1)
HELDOUT = (100, 101, 102, 103, 104)
BOUNDS = (-5.0, 5.0)
N_INITIAL = 8
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)
UNROLL, HG_STEP, HG_EVAL = 20, 0.05, 5
UNROLLS = (1, 5, 20, 50)


def _spec(problem: str):
    from metabp.targets import get_target

    preset, overrides, _ = PROBLEMS[problem]
    return get_target(preset, **overrides)


def _config(problem: str, method: str):
    from metabp.search import StudyConfig

    preset, overrides, hidden = PROBLEMS[problem]
    q = {"botorch": 4, "random": 8}.get(method, 1)
    return StudyConfig(name=f"{problem}-{method}", target=preset, overrides=tuple(sorted(overrides.items())),
                       seeds=SEEDS, hidden=hidden, bounds=(BOUNDS,) * (3 * hidden + 1), sampler=method,
                       acquisition="qlogei" if q > 1 else "logei", q=q, n_initial=N_INITIAL, n_trials=100_000)


def run_study(problem: str, method: str, wall: float) -> list[tuple[float, float, torch.Tensor, int]]:
    """``(seconds, best score, its omega, trials)`` after each batch of a study run for ``wall`` s."""
    from metabp.search import Study

    study = Study(_config(problem, method), storage="memory")
    study.ensure_backprop()
    q, t0, trace = study.config.q, time.perf_counter(), []
    while time.perf_counter() - t0 < wall:
        study.optimize(n_trials=q, progress=False, validate=False)
        best = study.best_trial
        trace.append((time.perf_counter() - t0, best.value, study.omega_of(best), len(study.completed())))
    return trace


def _scores(problem: str, omegas: list[torch.Tensor], seeds=SEEDS) -> list[float]:
    """Mean AULC over ``seeds`` of each omega, all trained as one batched call."""
    from metabp import MetaNet
    from metabp.targets import train_many

    hidden = PROBLEMS[problem][2]
    gs = [MetaNet(hidden, "tanh", omega=w) for w in omegas for _ in seeds]
    runs = train_many(_spec(problem), gs, where="act2", seed=[s for _ in omegas for s in seeds])
    k = len(seeds)
    return [statistics.fmean(r.aulc for r in runs[i * k:(i + 1) * k]) for i in range(len(omegas))]


def run_hypergrad(problem: str, wall: float) -> list[tuple[float, float, torch.Tensor, int]]:
    """Adam on the unroll's hypergradient from the best of ``N_INITIAL`` Sobol points (docstring)."""
    from metabp import MetaNet
    from metabp.search import SobolSampler, hypergrad

    spec, hidden = _spec(problem), PROBLEMS[problem][2]
    d, (lo, hi) = 3 * hidden + 1, BOUNDS
    t0 = time.perf_counter()
    sobol = SobolSampler(bounds=[BOUNDS] * d, names=[f"w{i}" for i in range(d)], seed=0)
    starts = [torch.from_numpy(sobol.point(j)) for j in range(N_INITIAL)]
    scores = _scores(problem, starts)
    i = int(np.argmin(scores))
    best, trace, n = (scores[i], starts[i]), [], N_INITIAL
    u = torch.nn.Parameter((starts[i] - lo) / (hi - lo))  # the box scaled to [0, 1], as ES moves
    adam = torch.optim.Adam([u], lr=HG_STEP)
    trace.append((time.perf_counter() - t0, best[0], best[1], n))
    while time.perf_counter() - t0 < wall:
        for _ in range(HG_EVAL):
            g = MetaNet(hidden, "tanh", omega=lo + u.detach() * (hi - lo))
            grads = [hypergrad(spec, g, unroll=UNROLL, seed=s).grad for s in SEEDS]
            u.grad = torch.stack(grads).mean(0) * (hi - lo)  # d/du = d/domega * width
            adam.step()
            with torch.no_grad():
                u.clamp_(0.0, 1.0)
        omega = lo + u.detach().clone() * (hi - lo)
        value, n = _scores(problem, [omega])[0], n + 1
        if value < best[0]:
            best = (value, omega)
        trace.append((time.perf_counter() - t0, best[0], best[1], n))
    return trace


def checkpoints(problem: str, trace: list, wall: float, cache: dict) -> list[dict]:
    """Held-out AULC of the incumbent at each checkpoint (cached per omega)."""
    out = []
    for c in CHECKPOINTS:
        seen = [e for e in trace if e[0] <= c * wall] or trace[:1]
        t, score, omega, n = seen[-1]
        key = tuple(omega.tolist())
        if key not in cache:
            cache[key] = _heldout(problem, omega)
        out.append({"at": c * wall, "seconds": t, "search": score, "trials": n, **cache[key]})
    return out


def _heldout(problem: str, omega: torch.Tensor | None) -> dict:
    """``{heldout, heldout_std}``: mean and std over ``HELDOUT`` (``omega=None``: plain backprop)."""
    from metabp import MetaNet
    from metabp.targets import train_many

    g = None if omega is None else MetaNet(PROBLEMS[problem][2], "tanh", omega=omega)
    runs = train_many(_spec(problem), [g] * len(HELDOUT), where="act2", seed=list(HELDOUT))
    values = [r.aulc for r in runs]
    return {"heldout": statistics.fmean(values), "heldout_std": statistics.stdev(values)}


def write_table(rows: list[dict], base: dict[str, float]) -> None:
    """``gradient_search.{md,csv}``: the end of each run, the winner per problem, and the PNG."""
    end = [r for r in rows if r["at"] == max(CHECKPOINTS) * r["wall"]]
    OUT.mkdir(exist_ok=True)
    with open(OUT / "gradient_search.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| problem | d | wall s | method | evaluations | best search AULC | held-out AULC | "
             "held-out / backprop |", "|---|---|---|---|---|---|---|---|"]
    for r in end:
        lines.append(f"| {r['problem']} | {r['dim']} | {r['wall']:.0f} | {r['method']} | {r['trials']} | "
                     f"{r['search']:.4f} | {r['heldout']:.4f} ± {r['heldout_std']:.4f} | "
                     f"{r['heldout'] / base[r['problem']]:.3f}x |")
    lines += ["", "Winner (lowest held-out AULC at the end), and the best gradient method against BO:", ""]
    for p in dict.fromkeys(r["problem"] for r in end):
        mine = {r["method"]: r["heldout"] for r in end if r["problem"] == p}
        win = min(mine, key=mine.get)
        grad = min(("es", "hypergrad"), key=lambda m: mine.get(m, float("inf")))
        versus = (f"{grad} {mine[grad]:.4f} vs botorch {mine['botorch']:.4f} "
                  f"({'gradient method better' if mine[grad] < mine['botorch'] else 'BO better'})"
                  if grad in mine and "botorch" in mine else "")
        lines.append(f"- {p}: **{win}** ({mine[win]:.4f}; backprop {base[p]:.4f}); {versus}")
    head = ("# Gradient search at equal wall time\n\n"
            "`OMP_NUM_THREADS=1 python benchmarks/gradient_search.py` (2 shared CPU cores). "
            "Held-out: mean ± std AULC over seeds "
            f"{list(HELDOUT)}; backprop's held-out AULC is the ratio's denominator.\n\n")
    (OUT / "gradient_search.md").write_text(head + "\n".join(lines) + "\n")
    plot(rows, base)


def plot(rows: list[dict], base: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.4), squeeze=False)
    for ax, p in zip(axes[0], problems, strict=True):
        for m in METHODS:
            mine = [r for r in rows if r["problem"] == p and r["method"] == m]
            if mine:
                ax.plot([r["at"] for r in mine], [r["heldout"] for r in mine], marker="o", label=m)
        ax.axhline(base[p], color="k", ls="--", lw=1, label="backprop")
        dim = next(r["dim"] for r in rows if r["problem"] == p)
        ax.set(title=f"{p} ({dim}-D)", xlabel="wall time (s)", ylabel="held-out AULC")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "gradient_search.png", dpi=120)
    plt.close(fig)


def unroll_cost(repeats: int = 3) -> str:
    """Time and autograd memory of one hypergradient per unroll length, ratios to ``T = 1``."""
    from metabp import MetaNet
    from metabp.search import hypergrad

    lines = ["| target | meta-net d | T | seconds (median) | x T=1 | saved MB | x T=1 |",
             "|---|---|---|---|---|---|---|"]
    for problem in ("quickstart", "digits25"):
        spec, hidden = _spec(problem), PROBLEMS[problem][2]
        g = MetaNet(hidden, "tanh", seed=0)
        first = None
        for t in UNROLLS:
            runs = [hypergrad(spec, g, unroll=t) for _ in range(repeats)]
            sec, mb = statistics.median(r.seconds for r in runs), runs[0].saved_bytes / 2**20
            first = first or (sec, mb)
            lines.append(f"| {spec.name} | {3 * hidden + 1} | {t} | {sec:.4f} | {sec / first[0]:.1f}x | "
                         f"{mb:.2f} | {mb / first[1]:.1f}x |")
    text = ("# Hypergradient cost per unroll length\n\n`python benchmarks/gradient_search.py --unroll-cost` "
            "(float32, CPU, one thread, 2 shared cores); saved MB: tensors autograd keeps for the "
            "backward.\n\n"
            + "\n".join(lines) + "\n")
    OUT.mkdir(exist_ok=True)
    (OUT / "gradient_search_unroll.md").write_text(text)
    return text


def main() -> None:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--wall-scale", type=float, default=1.0, help="multiply every wall budget")
    ap.add_argument("--unroll-cost", action="store_true", help="only measure the hypergradient's cost")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(unroll_cost())
    if args.unroll_cost:
        return
    rows, base = [], {}
    jobs = [(p, m) for p in args.problems for m in args.methods]
    for p, m in tqdm(jobs, desc="gradient search", unit="run"):
        wall = WALL[p] * args.wall_scale
        base.setdefault(p, _heldout(p, None)["heldout"])
        trace = run_hypergrad(p, wall) if m == "hypergrad" else run_study(p, m, wall)
        dim = 3 * PROBLEMS[p][2] + 1
        rows += [{"problem": p, "dim": dim, "method": m, "wall": wall, **c}
                 for c in checkpoints(p, trace, wall, {})]
        write_table(rows, base)
    print((OUT / "gradient_search.md").read_text())


if __name__ == "__main__":
    main()
