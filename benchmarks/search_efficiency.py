"""Search efficiency: metabp's BoTorch sampler vs random, TPE, Optuna's GPSampler and CMA-ES.

Question: with the same number of evaluations, which sampler gets closest to the optimum, and
what does each proposal cost? Problems (``--problems``, by name):

- the suite: standard functions from 2 to 10 dimensions with known optima
  (``botorch.test_functions``) and Hartmann-6 on the first 6 of 20 and of 50 dimensions (the
  rest inactive), scored by simple regret ``best - optimum``;
- metabp problems, built from public APIs only: ``f(omega) = AULC of train(spec,
  MetaNet(hidden, omega=omega), seed=0)`` (common random numbers; omega in [-5, 5]^d).
  ``digits25`` is digits-mlp with ``hidden = 8``: 25 parameters. Scored by the best AULC.

Every run is ``metabp.search.minimize`` with ``--budget`` evaluations; the sampler seed varies.
All samplers start from ``N_INITIAL`` points (Sobol for botorch, random for the others), and none
reads the total budget, so the 30 column is read off the first 30 evaluations of the 60 runs.
The proposal cost is measured apart: a study holding ``n`` random points of Hartmann-6 embedded in
``--cost-dim`` dimensions, then the time of one more proposal (median of ``--cost-repeats``).
Run records are appended to ``results/search_efficiency.jsonl`` as they finish; the table and PNG
(``benchmarks/results/search_efficiency.{md,png}``) are rewritten as runs finish.

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py                 # the full suite
    python benchmarks/search_efficiency.py --problems branin hartmann6 --seeds 3 --budget 30 \\
        --samplers botorch gp "botorch:warp=log1p" --tag _ab              # an A/B of a setting

A sampler name ``botorch:NAME=VALUE,...`` runs the botorch sampler with those fields of
``metabp.search.EngineSettings`` changed (an A/B of the engine's fixed choices), e.g.
``botorch:noise_var=1e-6`` or ``botorch:tr_length=0.8``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"
N_INITIAL = 10
BUDGETS = (30, 60)
SEEDS = 10
SAMPLERS = ("botorch", "gp", "tpe", "cmaes", "random")


@dataclass
class Problem:
    dim: int
    bounds: list[tuple[float, float]]  # (lo, hi) per dimension
    f: object  # Tensor (d,) -> float
    optimum: float | None  # None: metabp problem, scored by the best value itself
    seeds: int | None = None  # fewer seeds than --seeds (costly problems)


def _synthetic(name: str, **kw) -> Problem:
    import botorch.test_functions as tf

    fn = getattr(tf, name)(**kw)
    box = [tuple(b) for b in fn.bounds.T.tolist()]  # (lo, hi) pairs
    return Problem(fn.dim, box, lambda x: float(fn(x.unsqueeze(0))), float(fn.optimal_value))


def _embedded(d: int, seeds: int | None = None) -> Problem:
    from botorch.test_functions import Hartmann

    fn = Hartmann(dim=6)
    return Problem(d, [(0.0, 1.0)] * d, lambda x: float(fn(x[:6].unsqueeze(0))), float(fn.optimal_value),
                   seeds)


def _metabp(preset: str, hidden: int, seeds: int | None = None) -> Problem:
    from metabp import MetaNet
    from metabp.targets import get_target, train

    spec = get_target(preset)
    d = MetaNet(hidden=hidden).num_params

    def f(x: torch.Tensor) -> float:
        return float(train(spec, MetaNet(hidden=hidden, omega=x.float()), seed=0, threads=1).aulc)

    return Problem(d, [(-5.0, 5.0)] * d, f, None, seeds)


PROBLEMS = {  # name -> builder (built lazily: metabp problems load data)
    "branin": lambda: _synthetic("Branin"),
    "hartmann3": lambda: _synthetic("Hartmann", dim=3),
    "levy4": lambda: _synthetic("Levy", dim=4),
    "rosenbrock4": lambda: _synthetic("Rosenbrock", dim=4),
    "styblinski5": lambda: _synthetic("StyblinskiTang", dim=5),
    "michalewicz5": lambda: _synthetic("Michalewicz", dim=5),
    "hartmann6": lambda: _synthetic("Hartmann", dim=6),
    "ackley10": lambda: _synthetic("Ackley", dim=10),
    "hartmann6-in-20d": lambda: _embedded(20),
    "hartmann6-in-50d": lambda: _embedded(50),
    "quickstart": lambda: _metabp("gaussians-mlp3", 1, seeds=3),
    "digits": lambda: _metabp("digits-mlp", 1, seeds=3),
    "digits25": lambda: _metabp("digits-mlp", 8, seeds=3),
}
SUITE = ["branin", "hartmann3", "levy4", "rosenbrock4", "styblinski5", "michalewicz5", "hartmann6",
         "ackley10", "hartmann6-in-20d", "hartmann6-in-50d"]


def with_settings(sampler: str):
    """``botorch:NAME=VALUE,...`` -> (``"botorch"``, EngineSettings with those fields); else (name, None)."""
    import dataclasses

    from metabp.search import EngineSettings

    name, _, rest = sampler.partition(":")
    if not rest:
        return name, None
    defaults = {f.name: f.default for f in dataclasses.fields(EngineSettings)}
    changes = {}
    for item in rest.split(","):
        k, v = item.split("=")
        kind = type(defaults.get(k))  # an unknown name: EngineSettings.replace names it
        if kind is bool and v not in ("True", "False"):
            raise SystemExit(f"--samplers {sampler}: {k}={v}: give True or False")
        changes[k] = (None if v == "None" else v == "True" if kind is bool
                      else float(v) if kind in (float, type(None)) else kind(v))
    return name, EngineSettings().replace(**changes)


def run_one(problem: str, prob: Problem, sampler: str, seed: int, budget: int) -> dict:
    """One ``minimize`` run; per evaluation its value, its own seconds and the proposing seconds before it."""
    from metabp.search import minimize

    name, engine = with_settings(sampler)
    values, eval_s, propose_s = [], [], []
    last = [time.perf_counter()]

    def f(x):
        t0 = time.perf_counter()
        propose_s.append(t0 - last[0])
        v = prob.f(x)
        last[0] = time.perf_counter()
        eval_s.append(last[0] - t0)
        values.append(v)
        return v

    minimize(f, prob.bounds, budget, seed=seed, sampler=name, n_initial=N_INITIAL, engine=engine)
    return {"problem": problem, "sampler": sampler, "seed": seed, "budget": budget, "values": values,
            "eval_s": eval_s, "propose_s": propose_s}


def proposal_cost(sampler: str, d: int, n: int, repeats: int) -> float:
    """Median seconds of one proposal by ``sampler`` after ``n`` random evaluations of Hartmann-6
    embedded in ``d`` dimensions."""
    import optuna

    from metabp.search import make_sampler

    prob = _embedded(d)
    names = [f"x_{i}" for i in range(d)]
    dists = {k: optuna.distributions.FloatDistribution(0.0, 1.0) for k in names}
    g = torch.Generator().manual_seed(0)
    times = []
    for r in range(repeats):
        smp = make_sampler(sampler, bounds=[(0.0, 1.0)] * d, names=names, n_initial=N_INITIAL, seed=r)
        study = optuna.create_study(sampler=smp, direction="minimize")
        for _ in range(n):
            x = torch.rand(d, generator=g, dtype=torch.float64)
            study.add_trial(optuna.trial.create_trial(
                params=dict(zip(names, x.tolist(), strict=True)), distributions=dists, value=prob.f(x)))
        t0 = time.perf_counter()
        trial = study.ask(dists)
        times.append(time.perf_counter() - t0)
        study.tell(trial, prob.f(torch.tensor([trial.params[k] for k in names])))
    return statistics.median(times)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def score(run: dict, budget: int, optimum: float | None) -> float:
    """Simple regret after ``budget`` evaluations (the best value itself where no optimum is known)."""
    finite = [v for v in run["values"][:budget] if math.isfinite(v)]
    best = min(finite) if finite else float("inf")
    return best - (optimum or 0.0)


def medians(runs: list[dict], optima: dict, budget: int) -> dict[tuple[str, str], tuple]:
    """(problem, sampler) -> (q1, median, q3, seeds) of the score after ``budget`` evaluations."""
    out = {}
    for key in dict.fromkeys((r["problem"], r["sampler"]) for r in runs):
        xs = [score(r, budget, optima[key[0]]) for r in runs if (r["problem"], r["sampler"]) == key
              and len(r["values"]) >= budget]
        if xs:
            out[key] = (*quartiles(xs), len(xs))
    return out


def mean_ranks(med: dict, problems: list[str], samplers: list[str]) -> dict[str, float]:
    """Per problem, rank the samplers' medians (1 = best, ties share the mean rank); mean over problems."""
    ranks: dict[str, list[float]] = {s: [] for s in samplers}
    for p in problems:
        scores = {s: med[(p, s)][1] for s in samplers if (p, s) in med}
        if len(scores) < len(samplers):
            continue
        for s, v in scores.items():
            below, tied = sum(w < v for w in scores.values()), sum(w == v for w in scores.values())
            ranks[s].append(below + (tied + 1) / 2)
    return {s: statistics.mean(r) for s, r in ranks.items() if r}


def table(runs: list[dict], optima: dict, samplers: list[str], cost: dict, meta: str) -> str:
    problems = list(dict.fromkeys(r["problem"] for r in runs))
    lines = [meta, ""]
    for budget in BUDGETS:
        med = medians(runs, optima, budget)
        if not med:
            continue
        lines += [f"## After {budget} evaluations: simple regret (best AULC for metabp problems), "
                  "median [q1, q3] over seeds; best median in bold", "",
                  "| problem | d | seeds | " + " | ".join(samplers) + " |",
                  "|---|---|---|" + "---|" * len(samplers)]
        for p in problems:
            cells = {s: med.get((p, s)) for s in samplers}
            got = [c[1] for c in cells.values() if c]
            if not got:
                continue
            best = min(got)
            row = []
            for c in cells.values():
                if c is None:
                    row.append("-")
                    continue
                txt = f"{c[1]:.3g} [{c[0]:.3g}, {c[2]:.3g}]"
                row.append(f"**{txt}**" if c[1] == best else txt)
            seeds = max(c[3] for c in cells.values() if c)
            lines.append(f"| {p} | {optima[p + '/dim']} | {seeds} | " + " | ".join(row) + " |")
        suite = [p for p in problems if p in SUITE]
        ranks = mean_ranks(med, suite, samplers)
        if ranks:
            lines += ["", f"Mean rank over the {len(suite)} synthetic functions ({', '.join(suite)}; "
                      "1 = best median): " + ", ".join(f"{s} {ranks[s]:.2f}" for s in samplers if s in ranks)]
        lines.append("")
    lines += ["## Wall time split (all runs, seconds summed over problems and seeds)", "",
              "| sampler | evaluating (s) | proposing (s) | proposing share | median s per proposal |",
              "|---|---|---|---|---|"]
    for s in samplers:
        rs = [r for r in runs if r["sampler"] == s]
        ev, pr = sum(sum(r["eval_s"]) for r in rs), sum(sum(r["propose_s"]) for r in rs)
        per = statistics.median(x for r in rs for x in r["propose_s"][N_INITIAL:]) if rs else float("nan")
        lines.append(f"| {s} | {ev:.1f} | {pr:.1f} | {100 * pr / max(ev + pr, 1e-9):.0f}% | {per:.3f} |")
    if cost:
        lines += ["", f"## Seconds per proposal after n evaluations (median of {cost['repeats']}; "
                  "Hartmann-6 embedded in d dimensions, n random points)", "",
                  "| sampler | " + " | ".join(f"n = {n}" for n in cost["n"]) + " |",
                  "|---|" + "---|" * len(cost["n"])]
        for s, ts in sorted(cost["seconds"].items()):
            lines.append(f"| {s} | " + " | ".join(f"{ts[str(n)]:.3f}" if str(n) in ts else "-"
                                                  for n in cost["n"]) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], optima: dict, samplers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in runs))
    cols, rows = 4, math.ceil(len(problems) / 4)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, p in zip(axes.flat, problems, strict=False):
        for s in samplers:
            rs = [r for r in runs if r["problem"] == p and r["sampler"] == s]
            if not rs:
                continue
            n = min(len(r["values"]) for r in rs)
            curves = torch.tensor([[score(r, k, optima[p]) for k in range(1, n + 1)] for r in rs])
            q = torch.quantile(curves, torch.tensor([0.25, 0.5, 0.75], dtype=curves.dtype), dim=0)
            x = range(1, n + 1)
            ax.plot(x, q[1], label=s, lw=1.5 if s.startswith("botorch") else 1)
            ax.fill_between(x, q[0], q[2], alpha=0.12)
        ax.set_yscale("log")
        if optima[p] is None:  # AULC: from the best run's value to the 10th evaluation's worst median
            ax.set_ylim(top=max(ax.get_lines()[i].get_ydata()[9] for i in range(len(ax.get_lines()))) * 1.02)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("evaluations", fontsize=8)
        ax.set_ylabel("simple regret" if optima[p] is not None else "best AULC", fontsize=8)
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=[*SUITE, "quickstart", "digits", "digits25"],
                   choices=list(PROBLEMS))
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--budget", type=int, default=max(BUDGETS))
    p.add_argument("--cost-n", type=int, nargs="*", default=[40, 100], help="n of the cost table (none: off)")
    p.add_argument("--cost-dim", type=int, nargs="+", default=[6, 25])
    p.add_argument("--cost-repeats", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (1 torch thread each)")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from the .jsonl")
    p.add_argument("--resume", action="store_true", help="keep the runs already in the .jsonl")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--tag", default="", help="suffix for the result files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from tqdm import tqdm

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"search_efficiency{args.tag}"
    log = stem.with_suffix(".jsonl")
    keep = (args.resume or args.table_only) and log.exists()
    runs = [json.loads(line) for line in log.read_text().splitlines()] if keep else []
    runs = [r for r in runs if r["problem"] in args.problems and r["sampler"] in args.samplers]
    done = {(r["problem"], r["sampler"], r["seed"]) for r in runs if r["budget"] == args.budget}
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--resume", "--table-only")]
    cmd = " ".join(["python benchmarks/search_efficiency.py", *given])  # --resume: same results
    meta = (f"# Search efficiency: `{cmd}`\n\nn_initial {N_INITIAL} for every sampler; torch "
            f"{torch.__version__}, 1 thread; a 2-core CPU shared with other jobs (times are indicative).")
    optima, seeds = {}, {}
    for name in args.problems:
        prob = PROBLEMS[name]()
        optima[name], optima[name + "/dim"] = prob.optimum, prob.dim
        seeds[name] = min(args.seeds, prob.seeds or args.seeds)
    # seed-major: a run cut short still has the first seeds of every problem
    todo = [(name, s, sd, args.budget) for sd in range(args.seeds) for name in args.problems
            for s in args.samplers if sd < seeds[name] and (name, s, sd) not in done]
    if args.table_only:
        todo = []
    cost_file = stem.with_name(stem.name + "_cost.json")
    cells = [(s, d, n) for d in args.cost_dim for s in args.samplers if s in ("botorch", "gp")
             for n in args.cost_n]
    cost = {"n": args.cost_n, "repeats": args.cost_repeats, "seconds": {}}
    if keep and cost_file.exists():
        cost = json.loads(cost_file.read_text())
    elif args.table_only or not cells:
        cost = {}
    else:
        todo = [("cost", *c) for c in cells] + todo
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(proposal_cost, t[1], t[2], t[3], args.cost_repeats) if t[0] == "cost"
                   else pool.submit(run_task, *t): t for t in todo}
        for i, fut in enumerate(tqdm(as_completed(futures), total=len(futures), file=sys.stderr)):
            t = futures[fut]
            if t[0] == "cost":
                cost["seconds"].setdefault(f"{t[1]}, d = {t[2]}", {})[str(t[3])] = fut.result()
                cost_file.write_text(json.dumps(cost))
                continue
            runs.append(fut.result())
            with log.open("a") as fh:
                fh.write(json.dumps(runs[-1]) + "\n")
            if i % 20 == 19 or i == len(futures) - 1:
                write(stem, sorted(runs, key=order(args)), optima, args.samplers, cost, meta)
    write(stem, sorted(runs, key=order(args)), optima, args.samplers, cost, meta)
    print(stem.with_suffix(".md").read_text())
    return 0


def order(args):
    """Sort key: problems, then seeds, in the order asked for."""
    return lambda r: (args.problems.index(r["problem"]), r["seed"], args.samplers.index(r["sampler"]))


_BUILT: dict[str, Problem] = {}


def run_task(problem: str, sampler: str, seed: int, budget: int) -> dict:
    """:func:`run_one` in a worker process (each builds a problem once)."""
    if problem not in _BUILT:
        _BUILT[problem] = PROBLEMS[problem]()
    return run_one(problem, _BUILT[problem], sampler, seed, budget)


def write(stem: Path, runs: list[dict], optima: dict, samplers: list[str], cost: dict, meta: str) -> None:
    """Table and PNG from the seeds every sampler has finished (a run still going leaves its seed out)."""
    have: dict[tuple[str, int], set] = {}
    for r in runs:
        have.setdefault((r["problem"], r["seed"]), set()).add(r["sampler"])
    runs = [r for r in runs if have[(r["problem"], r["seed"])] >= set(samplers)]
    stem.with_suffix(".md").write_text(table(runs, optima, samplers, cost, meta) + "\n")
    plot(runs, optima, samplers, stem.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(main())
