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
All samplers start from ``N_INITIAL`` points (a Latin hypercube for botorch, random for the others), and none
reads the total budget, so the 30 column is read off the first 30 evaluations of the 60 runs.
The proposal cost is measured apart: a study holding ``n`` random points of Hartmann-6 embedded in
``--cost-dim`` dimensions, then the time of one more proposal (median of ``--cost-repeats``).
Run records are appended to ``results/search_efficiency.jsonl`` as they finish; the table and PNG
(``benchmarks/results/search_efficiency.{md,png}``, by ``_suite_report.py``, which also marks the
samplers tied with the best: an exact Mann-Whitney U test) are rewritten as runs finish.

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py                 # the full suite
    python benchmarks/search_efficiency.py --problems branin hartmann6 --seeds 3 --budget 30 \\
        --samplers botorch gp "botorch:warp=log1p" --tag _ab              # an A/B of a setting

A sampler name ``botorch:NAME=VALUE,...`` runs the botorch sampler with those fields of
``metabp.search.EngineSettings`` changed (an A/B of the engine's fixed choices), e.g.
``botorch:noise_var=1e-6`` or ``botorch:tr_length=0.8``; ``botorch:start=random`` starts it from the
random points the other samplers start from, ``botorch:start=sobol`` from Sobol points, instead of
its Latin hypercube.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from _suite_report import BUDGETS, N_INITIAL, SUITE, write

OUT = Path(__file__).parent / "results"
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
    "quickstart": lambda: _metabp("gaussians-mlp3", 1, seeds=5),
    "digits": lambda: _metabp("digits-mlp", 1, seeds=3),
    "digits25": lambda: _metabp("digits-mlp", 8, seeds=5),
}


def with_settings(sampler: str):
    """``botorch:NAME=VALUE,...`` -> (``"botorch"``, EngineSettings with those fields, start design);
    else (name, None, "latin"). ``start=random`` or ``start=sobol`` (A/B only) gives botorch the
    others' random start or a Sobol start."""
    import dataclasses

    from metabp.search import EngineSettings

    name, _, rest = sampler.partition(":")
    defaults = {f.name: f.default for f in dataclasses.fields(EngineSettings)}
    changes, start = {}, "latin"
    for item in filter(None, rest.split(",")):
        k, v = item.split("=")
        if k == "start" and v in ("latin", "sobol", "random"):
            start = v
            continue
        kind = type(defaults.get(k))  # an unknown name: EngineSettings.replace names it
        if kind is bool and v not in ("True", "False"):
            raise SystemExit(f"--samplers {sampler}: {k}={v}: give True or False")
        changes[k] = (None if v == "None" else v == "True" if kind is bool
                      else float(v) if kind in (float, type(None)) else kind(v))
    return name, (EngineSettings().replace(**changes) if changes else None), start


@contextmanager
def start_design(start: str):
    """``"random"``: the botorch sampler draws its first points by optuna's ``RandomSampler(seed)``,
    the same points as gp, tpe and random; ``"sobol"``: by ``SobolSampler`` (an A/B of the start
    design; ``"latin"``: unchanged)."""
    from optuna.samplers import RandomSampler

    from metabp.search import SAMPLERS, SobolSampler

    default = SAMPLERS["botorch"]

    def factory(**kw):
        smp = default(**kw)
        smp.independent_sampler = (RandomSampler(seed=kw["seed"]) if start == "random" else
                                   SobolSampler(bounds=kw["bounds"], names=kw["names"], seed=kw["seed"],
                                                log=kw.get("log")))
        return smp

    if start != "latin":
        SAMPLERS["botorch"] = factory
    try:
        yield
    finally:
        SAMPLERS["botorch"] = default


def run_one(problem: str, prob: Problem, sampler: str, seed: int, budget: int) -> dict:
    """One ``minimize`` run; per evaluation its value, its own seconds and the proposing seconds before it."""
    from metabp.search import minimize

    name, engine, start = with_settings(sampler)
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

    with start_design(start):
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


if __name__ == "__main__":
    raise SystemExit(main())
