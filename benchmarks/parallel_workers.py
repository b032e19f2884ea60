"""Parallel workers: does the botorch sampler gain from seeing the points other workers still run?

Simulated asynchronous workers, reproducible: ``--workers`` trials are asked at once (each sees the
earlier ones as pending), and every trial runs for a random time (uniform on [0.5, 1.5], seeded).
Whenever a trial finishes, its value is told and its worker asks a new one at once, while the
others still run (it sees ``workers - 1`` trials pending), until ``--trials`` have been asked.
Objective (``--objective``): the quadratic ``sum x_i^2`` on ``[-10, 10]^10`` (minimum 0), or the
multimodal Ackley (``[-32.768, 32.768]^d``) or Hartmann-6, by simple regret. ``--batch``: synchronous
batches instead (equal durations; the workers ask only after the whole batch is told, so every
worker of a batch sees the same completed trials), as workers started together.

- ``botorch``: metabp's sampler as every study builds it; running trials are pending points
  (kriging believer), so a worker does not propose what another one already runs;
- ``botorch-blind``: the same sampler with ``consider_pending`` off, so every worker proposes from
  the completed trials only;
- ``botorch-qlogei``: pending points through BoTorch's Monte-Carlo qLogEI (``X_pending``) instead
  of the kriging believer (``acquisition = "qlogei"``; not in the default ``--variants``);
- ``tpe`` (constant liar) and ``random`` as references.

The table gives ``blind / pending-aware``: the ratio of the mean best values (above 1: seeing the
pending points helps), and how close each variant's model proposals come to the trials still
running when they were asked (blind ones can land on a running point; pending-aware ones not).
Writes ``benchmarks/results/parallel_workers.{md,png}``.

    python benchmarks/parallel_workers.py

``--real RUNS`` runs real workers instead: ``--workers`` ``metabp search`` processes on one fresh
journal file per run (``--study``, default the quickstart, ``--trials`` trials, no validation),
then counts completed and failed trials, numbers given back past the budget, twins thrown away
(``metabp:duplicate_of``) and completed trials at the same point (``max |dx| / width < 1e-6``).
Writes ``benchmarks/results/parallel_workers_real.md``.

    python benchmarks/parallel_workers.py --real 3 --workers 4 --trials 40
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"
VARIANTS = ("botorch", "botorch-blind", "tpe", "random", "botorch-qlogei")


#: name -> (box of every dimension, fixed dimension or None, f(point) -> value to minimise, 0 at the optimum).
OBJECTIVES = {
    "quadratic": ((-10.0, 10.0), None, lambda x: float((x ** 2).sum())),
    "ackley": ((-32.768, 32.768), None, lambda x: _botorch_test("Ackley", x)),
    "hartmann6": ((0.0, 1.0), 6, lambda x: _botorch_test("Hartmann", x)),
}


def _botorch_test(name: str, x: torch.Tensor) -> float:
    """Simple regret ``f(x) - min f`` of a BoTorch test function (a minimisation problem) at ``x``."""
    f = _test_function(name, len(x))
    return float(f(x.double().unsqueeze(0))) - float(f.optimal_value)


@functools.cache
def _test_function(name: str, d: int):
    """BoTorch's test function ``name`` in ``d`` dimensions, built once (not once per evaluation)."""
    import botorch.test_functions as tf

    return getattr(tf, name)(dim=d)


def make(variant: str, d: int, seed: int, n_initial: int, box: tuple[float, float] = (-10.0, 10.0)):
    from metabp.search import make_sampler

    name = "botorch" if variant.startswith("botorch") else variant
    sampler = make_sampler(name, bounds=[box] * d, names=[f"x_{i}" for i in range(d)],
                           n_initial=n_initial, seed=seed,
                           **({"acquisition": "qlogei"} if variant == "botorch-qlogei" else {}))
    if variant == "botorch-blind":
        sampler.consider_pending = False
    return sampler


def run(variant: str, seed: int, *, d: int, trials: int, workers: int, n_initial: int,
        batch: bool = False, objective: str = "quadratic") -> dict:
    """One simulated study; returns the values in order of finishing, the proposing seconds and
    each model proposal's distance (unit cube) to the nearest trial running when it was asked.
    ``batch``: every trial takes the same time and the workers ask only after the whole batch is
    told (synchronous batches of ``workers``, like BoTorch's batched sampling)."""
    import heapq
    import random

    import optuna
    from optuna.distributions import FloatDistribution

    box, fixed_d, f = OBJECTIVES[objective]
    d = fixed_d or d
    study = optuna.create_study(sampler=make(variant, d, seed, n_initial, box), direction="minimize")
    dists = {f"x_{i}": FloatDistribution(*box) for i in range(d)}
    clock = random.Random(seed)
    running: list = []  # heap of (finish time, trial number, trial)
    staged: list[tuple[int, float]] = []  # (completed trials when asked, value) of model proposals
    values, seconds, asked, gaps = [], 0.0, 0, []
    known: dict[int, int] = {}  # model proposal's trial number -> completed trials when it was asked

    def ask(now: float) -> None:
        nonlocal seconds, asked
        t0 = time.perf_counter()
        trial = study.ask(dists)
        seconds += time.perf_counter() - t0
        asked += 1
        if asked > n_initial:  # a model proposal
            known[trial.number] = len(values)
            if running:  # its distance to the nearest running trial
                gaps.append(min(_distance(trial.params, r[2].params, box) for r in running))
        heapq.heappush(running, (now + (1.0 if batch else clock.uniform(0.5, 1.5)), trial.number, trial))

    for _ in range(min(workers, trials)):
        ask(0.0)
    while running:
        now, _, trial = heapq.heappop(running)
        finished = [trial]
        while batch and running and running[0][0] == now:
            finished.append(heapq.heappop(running)[2])
        for trial in finished:
            v = f(torch.tensor([trial.params[k] for k in dists], dtype=torch.float64))
            study.tell(trial, v)
            values.append(v)
            if trial.number in known:
                staged.append((known[trial.number], v))
        for _ in finished:
            if asked < trials:
                ask(now)
    return {"variant": variant, "seed": seed, "values": values, "propose_s": seconds, "gaps": gaps,
            "staged": staged}


def _distance(a: dict, b: dict, box: tuple[float, float]) -> float:
    """Euclidean distance of two points of ``box^d`` on the unit cube."""
    return sum(((a[k] - b[k]) / (box[1] - box[0])) ** 2 for k in a) ** 0.5


def real_run(study_file: Path, journal: Path, *, workers: int, trials: int) -> dict:
    """``workers`` ``metabp search`` processes on ``journal``; what the storage holds afterwards."""
    import subprocess

    import optuna
    from optuna.trial import TrialState

    from metabp.search import get_storage, load_study

    cmd = [sys.executable, "-m", "metabp", "search", str(study_file), "--storage", str(journal),
           "--trials", str(trials), "--no-validate", "--quiet"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    errors = [err for p in procs for err in [p.communicate()[1]] if p.returncode != 0]
    cfg = load_study(study_file)
    ts = optuna.load_study(study_name=cfg.name, storage=get_storage(str(journal))).get_trials(deepcopy=False)
    done = [t for t in ts if t.state == TrialState.COMPLETE]
    width = [hi - lo for lo, hi in cfg.search_bounds]
    twins = sum(1 for i, a in enumerate(done) for b in done[i + 1:]
                if max(abs(a.params[n] - b.params[n]) / w for n, w in zip(cfg.param_names, width,
                                                                           strict=True)) < 1e-6)
    failed = [t for t in ts if t.state == TrialState.FAIL]
    surplus = sum(1 for t in failed if t.system_attrs.get("metabp:surplus"))
    return {"complete": len(done), "failed": len(failed) - surplus, "surplus": surplus,
            "duplicate_of": sum(1 for t in ts if t.system_attrs.get("metabp:duplicate_of") is not None),
            "twins": twins, "errors": len(errors), "seconds": time.perf_counter() - t0}


def real_runs(args) -> str:
    import tempfile

    from tqdm import tqdm

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i in tqdm(range(args.real), file=sys.stderr, desc="real runs"):
            rows.append(real_run(args.study, Path(d) / f"run{i}.journal", workers=args.workers,
                                 trials=args.trials))
    lines = [f"# Real workers: `{' '.join(['python benchmarks/parallel_workers.py', *sys.argv[1:]])}`", "",
             f"{args.workers} `metabp search` processes on one journal file per run, {args.study.name} "
             f"without validation, {args.trials} trials; a 2-core CPU shared with other jobs.", "",
             "| run | complete | failed | given back past the budget | twins thrown away "
             "| completed at the same point | worker errors | seconds |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        lines.append(f"| {i} | {r['complete']} | {r['failed']} | {r['surplus']} | {r['duplicate_of']} "
                     f"| {r['twins']} | {r['errors']} | {r['seconds']:.0f} |")
    clean = sum(r["complete"] == args.trials and not r["failed"] and not r["twins"] and not r["duplicate_of"]
                for r in rows)
    lines += ["", f"Clean runs ({args.trials} complete, none failed, no twin): {clean} of {len(rows)}"]
    return "\n".join(lines) + "\n"


#: Completed trials when a model proposal was asked, grouped (lower bounds) for the stage table.
STAGES = (0, 10, 20, 30)


def stage_table(runs: list[dict], variants: list[str]) -> list[str]:
    """Median value of the model proposals, grouped by how many completed trials they were proposed from."""
    bounds = list(zip(STAGES, [*STAGES[1:], math.inf], strict=True))
    names = [f"{lo}+" if hi == math.inf else f"{lo}-{hi - 1}" for lo, hi in bounds]
    lines = ["| sampler | " + " | ".join(f"{n} completed" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for v in variants:
        cells = []
        for lo, hi in bounds:
            xs = [y for r in runs if r["variant"] == v for k, y in r.get("staged", []) if lo <= k < hi]
            cells.append(f"{statistics.median(xs):.1f} ({len(xs)})" if xs else "-")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def ratio_interval(blind: list[float], aware: list[float], draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of ``mean(blind) / mean(aware)``, seeds resampled jointly (a seed gives
    both variants the same start design and durations)."""
    b, a = torch.tensor(blind, dtype=torch.float64), torch.tensor(aware, dtype=torch.float64)
    idx = torch.randint(len(b), (draws, len(b)), generator=torch.Generator().manual_seed(0))
    r = b[idx].mean(-1) / a[idx].mean(-1)
    lo, hi = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0)


def plot(runs: list[dict], variants: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for v in variants:
        curves = torch.tensor([[min(r["values"][: k + 1]) for k in range(len(r["values"]))]
                               for r in runs if r["variant"] == v])
        q = torch.quantile(curves, torch.tensor([0.25, 0.5, 0.75], dtype=curves.dtype), dim=0)
        x = range(1, curves.shape[1] + 1)
        ax.plot(x, q[1], label=v)
        ax.fill_between(x, q[0], q[2], alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("completed trials")
    ax.set_ylabel("best value so far (median, IQR)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(args) -> str:
    """The simulated setting, one sentence."""
    box, fixed_d, _ = OBJECTIVES[args.objective]
    d = fixed_d or args.dim
    what = ("the quadratic sum x_i^2" if args.objective == "quadratic" else
            f"{args.objective} (simple regret)")
    workers = ("workers in synchronous batches (equal durations; each asks after the whole batch is told)"
               if args.batch else "asynchronous workers (durations uniform on [0.5, 1.5])")
    return (f"{d}-D {what} on [{box[0]:g}, {box[1]:g}]^{d}, {args.trials} trials, "
            f"{args.workers} simulated {workers}, n_initial {args.n_initial}, {args.seeds} seeds; "
            f"torch {torch.__version__}, 1 thread, a 2-core CPU shared with other jobs. Best value after "
            "all trials: mean +- standard error over seeds, and median [q1, q3].")


def report(args, runs: list[dict], given: list[str]) -> str:
    """The markdown table of the simulated runs."""
    lines = [f"# Parallel workers: `{' '.join(['python benchmarks/parallel_workers.py', *given])}`", "",
             describe(args), "",
             "Distance to running: a model proposal's distance (unit cube) to the nearest trial still "
             "running when it was asked, median over proposals [q1, q3] (a duplicate would be 0).", "",
             "| sampler | best (mean +- s.e.) | median [q1, q3] | distance to running "
             "| proposing s per trial |",
             "|---|---|---|---|---|"]
    for v in args.variants:
        best = [min(r["values"]) for r in runs if r["variant"] == v]
        m, se = mean_se(best)
        q = statistics.quantiles(best, n=4, method="inclusive") if len(best) > 1 else [best[0]] * 3
        sec = statistics.mean(r["propose_s"] for r in runs if r["variant"] == v) / args.trials
        gaps = [g for r in runs if r["variant"] == v for g in r["gaps"]]
        g = statistics.quantiles(gaps, n=4, method="inclusive") if len(gaps) > 1 else [float("nan")] * 3
        lines.append(f"| {v} | {m:.3g} +- {se:.2g} | {statistics.median(best):.3g} [{q[0]:.3g}, {q[2]:.3g}] "
                     f"| {g[1]:.3f} [{g[0]:.3f}, {g[2]:.3f}] | {sec:.3f} |")
    best = {v: [min(r["values"]) for r in sorted(runs, key=lambda r: r["seed"]) if r["variant"] == v]
            for v in args.variants}
    if {"botorch", "botorch-blind"} <= set(best):
        ratio = statistics.mean(best["botorch-blind"]) / statistics.mean(best["botorch"])
        lo, hi = ratio_interval(best["botorch-blind"], best["botorch"])
        lines += ["", f"blind / pending-aware (mean best): {ratio:.2f} (95% bootstrap interval over seeds "
                  f"{lo:.2f} to {hi:.2f}); "
                  "Optuna pull request optuna/optuna#4591 (BoTorchSampler with running trials as "
                  f"`X_pending`) reported 10.30 / 4.55 = {10.30 / 4.55:.2f}."]
    lines += ["", "Model proposals by what they knew: the median value of the points the model proposed, "
              "grouped by the completed trials they were proposed from (count in brackets; the start design "
              "is left out).", "", *stage_table(runs, [v for v in args.variants if v.startswith("botorch")])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--objective", default="quadratic", choices=list(OBJECTIVES))
    p.add_argument("--dim", type=int, default=10, help="dimensions (hartmann6: always 6)")
    p.add_argument("--n-initial", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS[:4]), choices=VARIANTS)
    p.add_argument("--batch", action="store_true",
                   help="synchronous batches (equal durations); writes parallel_workers_batch.{md,png}")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--real", type=int, default=0, help="runs of real worker processes instead")
    p.add_argument("--study", type=Path, default=Path(__file__).parents[1] / "studies" / "quickstart.toml")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.real:
        text = real_runs(args)
        (args.out / "parallel_workers_real.md").write_text(text)
        print(text)
        return 0
    from tqdm import tqdm

    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cells = [(s, v) for s in range(args.seeds) for v in args.variants]
    runs = [run(v, s, d=args.dim, trials=args.trials, workers=args.workers, n_initial=args.n_initial,
                batch=args.batch, objective=args.objective) for s, v in tqdm(cells, file=sys.stderr)]
    text = report(args, runs, argv if argv is not None else sys.argv[1:])
    stem = ("parallel_workers" + ("" if args.objective == "quadratic" else f"_{args.objective}")
            + ("_batch" if args.batch else ""))
    (args.out / f"{stem}.md").write_text(text)
    plot(runs, args.variants, args.out / f"{stem}.png", describe(args).split(",")[0] + ", "
         + ("synchronous batches" if args.batch else "asynchronous workers"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
