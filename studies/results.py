"""Run the studies and write ``studies/RESULTS.md``: does a found b-function hold up, and what is it?

    python studies/results.py                      # every study below (resumes what is stored)
    python studies/results.py --only mnist1d       # one study; RESULTS.md keeps the others' sections
    python studies/results.py --no-run             # only rewrite RESULTS.md from the stored summaries
    python studies/results.py --no-run --explain   # and explain each stored g not explained yet

For each study file ``studies/<name>.toml`` this script

1. runs the search to its budget and validates its top candidates on the held-out ``[validate]``
   seeds (``metabp search``), then exports the best held-out candidate to
   ``results/<name>/best.bfn``. When that file and the study's ``summary.json`` are already there
   (an earlier run of this script), the stored g and its validation text are reused and the
   search is not run again (``--search`` forces it);
2. compares g with "lr tuned alone" and tuned baseline optimizers on :data:`COMPARE_SEEDS` seeds
   that neither the search nor validation used, with an lr sweep of g and backprop on the same
   seeds (``metabp compare --lr-sweep``);
3. explains g: named simple forms fitted to g, each trained at g's lr on the same seeds beside g
   and the best tuned baseline (``metabp explain``; ``--explain`` adds this to stored studies
   without running their search or comparison again);
4. transfers g to the other CPU targets against plain backprop (``metabp transfer``).

Every figure in ``RESULTS.md`` comes from these runs; nothing is typed by hand. Per-study files go
to ``studies/results/<name>/``; RESULTS.md is written from every ``summary.json`` there, so
studies can run in separate processes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import metabp  # noqa: E402
from metabp.analysis import (  # noqa: E402
    TUNING,
    compare,
    explain,
    heldout_seeds,
    read_sweep,
    sweep_markdown,
    transfer,
    write_sweep,
    write_transfer,
)
from metabp.search import Study, format_heldout, load_study  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_text import ratio_se, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
STUDIES = ["quickstart", "digits", "digits-all-relus", "digits-sgd", "mnist1d", "multi", "mnist1d-wide",
           "mnist1d-h3", "mnist1d-all-relus", "mnist1d-per-site", "mnist1d-cnn", "mnist1d-cnn-all-relus",
           "mnist1d-cnn-per-site", "fashion-mlp", "fashion-mlp-all-relus", "fashion-mlp-per-site"]
#: Targets a found g is transferred to: every target that trains on a CPU without data files.
CPU_TARGETS = ["gaussians-mlp3", "digits-mlp", "mnist1d-mlp"]
#: Also a winning g's (one that beats the best tuned baseline): the slower targets.
WINNER_TARGETS = ["mnist1d-cnn", "fashion-mlp"]
#: Baseline optimizers tuned in the comparison (each includes the target's own optimizer).
COMPARE_OPTIMIZERS = ["sgd", "momentum", "adam", "amsgrad"]
#: Fewer for the slowest targets (a Fashion-MNIST run is ~10x an MNIST-1D MLP's on a CPU): the
#: target's own optimizer (with "lr tuned alone", two tuned Adam rows).
SLOW = ("fashion-mlp", "fashion-mlp-all-relus", "fashion-mlp-per-site",
        "mnist1d-cnn", "mnist1d-cnn-all-relus", "mnist1d-cnn-per-site")
STUDY_OPTIMIZERS = {name: ["adam"] for name in SLOW}
#: Trials per tuned baseline: the study's budget, at most this (a 1-D lr search; the lr sweep on
#: the comparison seeds checks what a better-tuned backprop could do).
TUNE_BUDGET = 40
COMPARE_SEEDS = 10
LR_SWEEP = 8
#: Seeds for the transfer runs: apart from every study's search, validation and comparison seeds.
TRANSFER_SEEDS = [200, 201, 202, 203, 204]
#: compare.md's tuning sentence before this version (the runs tuned with tune_grid all the same)
OLD_TUNING = " (the study's budget), TPE over a log-uniform lr range,"


def found_g(name: str, search: bool) -> tuple[metabp.BFunction, int, str, str]:
    """The study's exported g, its trial, its validation text and where they come from."""
    out = OUT / name
    stored = out / "summary.json"
    if not search and (out / "best.bfn").exists() and stored.exists():
        old = json.loads(stored.read_text())
        return (metabp.load(out / "best.bfn"), old["trial"], old["heldout_text"],
                old.get("source", "an earlier run of this script (`best.bfn` and its validation, stored)"))
    study = Study(HERE / f"{name}.toml")
    study.optimize(progress=True)
    trial = study.best_heldout_trial() or study.best_trial
    study.export(out / "best.bfn", trial=trial.number)
    return metabp.load(out / "best.bfn"), trial.number, format_heldout(study), "this run's search"


def _box(cfg) -> tuple[float, float] | None:
    pairs = set(cfg.bounds)
    return pairs.pop() if len(pairs) == 1 else None


def run_study(name: str, search: bool = False) -> dict:
    """Search (or reuse), compare, explain and transfer one study; the numbers RESULTS.md shows."""
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_study(HERE / f"{name}.toml")
    g, trial, heldout_text, source = found_g(name, search)
    spec = cfg.target_spec(0)
    where = None if cfg.sites else cfg.targets[0].where or spec.where  # one g per site: its sites patch
    optimizers = STUDY_OPTIMIZERS.get(name, COMPARE_OPTIMIZERS)
    label = f"g{' + its lr' if cfg.lr_bounds else ''} (trial {trial}, best held-out)"
    cmp = compare(spec, g, where=where, budget=min(cfg.n_trials, TUNE_BUDGET),
                  seeds=heldout_seeds(cfg, COMPARE_SEEDS), tune_seeds=list(cfg.seeds), optimizers=optimizers,
                  bfn_lr=g.meta.get("lr") if cfg.lr_bounds else None, lr_range=cfg.lr_bounds, output=out,
                  label=label, lr_sweep=LR_SWEEP, device=cfg.device, data_dir=cfg.data_dir, progress=True)
    g_row = cmp.kind("bfn")
    best = min((r for r in cmp.rows if r.kind in ("control", "baseline")), key=lambda r: r.aulc[0])
    z = cmp.versus(g_row, best).z
    summary = {
        "name": name, "targets": [t.name for t in cfg.targets], "where": where, "sites": list(cfg.sites),
        "optimizer": cmp.optimizer,
        "trial": trial, "source": source, "heldout_text": heldout_text, "compare_md": cmp.markdown,
        "compare_seeds": cmp.seeds, "budget": cmp.budget, "g": (g_row.label, *g_row.aulc), "g_lr": g_row.lr,
        "best": (best.label, *best.aulc), "best_lr": best.lr, "best_optimizer": best.optimizer,
        "ratio": ratio_se(g_row.aulcs, best.aulcs), "z": z,
        "test_acc": {"g": g_row.test_accuracy, "best": best.test_accuracy},
        "sweep_verdict": cmp.sweep.verdict(), "explain_md": None, "best_form": None, "transfer_md": None,
    }
    summary.update(_explain(g, spec, where, cfg, g_row.lr, cmp.seeds, (best.label, best.optimizer, best.lr),
                            out))
    targets = summary["targets"]
    candidates = CPU_TARGETS + (WINNER_TARGETS if z < -2 else [])
    others = [t for t in candidates if t not in targets or len(targets) > 1]
    if others:
        moved = transfer(g, others, seeds=TRANSFER_SEEDS, progress=True)
        summary["transfer_md"] = _body(write_transfer(moved, out / "transfer")["markdown"].read_text())
    return summary


def _explain(g, spec, where, cfg, lr, seeds, best: tuple[str, str, float], out) -> dict:
    """Explain g against the best tuned baseline ``(label, optimizer, lr)``, on the comparison's seeds."""
    label, optimizer, best_lr = best
    baseline = (label, dataclasses.replace(spec, optimizer=optimizer, lr=best_lr))
    ex = explain(g, spec, lr=lr, seeds=seeds, baseline=baseline, where=where, box=_box(cfg),
                 output=out / "explain", device=cfg.device, data_dir=cfg.data_dir)
    form = ex.best_form
    return {"explain_md": ex.markdown,
            "best_form": None if form is None else {"name": form.label, "fitted": form.form.text,
                                                    "share": form.share, "z": form.z}}


def explain_stored(summary: dict) -> dict:
    """``summary`` with g explained from what its study stored (g, its lr, the best tuned baseline and
    the comparison seeds), without running the search or the comparison again."""
    name = summary["name"]
    cfg = load_study(HERE / f"{name}.toml")
    spec = cfg.target_spec(0)
    where = None if cfg.sites else cfg.targets[0].where or spec.where
    print(f"== {name}: explain", file=sys.stderr)
    best = (summary["best"][0], summary["best_optimizer"], summary["best_lr"])
    summary.update(_explain(metabp.load(OUT / name / "best.bfn"), spec, where, cfg, summary["g_lr"],
                            summary["compare_seeds"], best, OUT / name))
    return summary


def refresh_sweep(summary: dict) -> dict:
    """The lr-sweep verdict and table re-read from the study's ``lr_sweep.csv`` (same numbers, this
    version's wording), in the summary, ``compare.md`` and ``lr_sweep.png``."""
    out = OUT / summary["name"]
    if not (out / "lr_sweep.csv").exists():
        return summary
    with (out / "compare.csv").open() as f:
        control = next(r for r in csv.DictReader(f) if r["kind"] == "control")
    sweep = read_sweep(out / "lr_sweep.csv", g_lr=summary["g_lr"], tuned_lr=float(control["lr"]))
    head = summary["compare_md"].split("### lr robustness")[0].replace(OLD_TUNING, f", {TUNING},")
    summary["compare_md"] = head + sweep_markdown(sweep) + "\n![lr sweep](lr_sweep.png)\n"
    summary["sweep_verdict"] = sweep.verdict()
    (out / "compare.md").write_text(summary["compare_md"] + "\n![loss curves](compare_loss.png)\n")
    write_sweep(sweep, out)
    return summary


def _body(markdown: str) -> str:
    """A written table without its headings (RESULTS.md names each section) or figure links."""
    return "\n".join(line for line in markdown.splitlines() if not line.startswith(("#", "![")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STUDIES, help="run only these studies")
    parser.add_argument("--no-run", action="store_true",
                        help="run nothing; write RESULTS.md from the studies' stored summaries")
    parser.add_argument("--search", action="store_true",
                        help="run each study's search even when its exported g is stored")
    parser.add_argument("--explain", action="store_true",
                        help="explain each stored g (--only: these studies') that has no explanation yet")
    args = parser.parse_args(argv)
    for name in [] if args.no_run else args.only or STUDIES:
        print(f"== {name}", file=sys.stderr)
        summary = run_study(name, search=args.search)
        (OUT / name / "summary.json").write_text(json.dumps(summary, indent=1))
    stored = {n: json.loads(p.read_text()) for n in STUDIES if (p := OUT / n / "summary.json").exists()}
    results = [refresh_sweep(s) for s in stored.values() if "sweep_verdict" in s]  # older: no lr sweep
    if args.explain:
        results = [explain_stored(r) if not r["explain_md"] and (not args.only or r["name"] in args.only)
                   else r for r in results]
    for r in results:
        (OUT / r["name"] / "summary.json").write_text(json.dumps(r, indent=1))
    text = write_results(results, OUT, [n for n in STUDIES if n not in {r["name"] for r in results}])
    (HERE / "RESULTS.md").write_text(re.sub(r"\n{3,}", "\n\n", text))
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
