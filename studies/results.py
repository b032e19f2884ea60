"""Run the studies and write ``studies/RESULTS.md``: does a found b-function hold up?

    python studies/results.py                      # every study below (resumes what is stored)
    python studies/results.py --only quickstart    # one study; RESULTS.md keeps the others' sections

For each study file ``studies/<name>.toml`` this script

1. runs the search to its budget and validates its top candidates on the held-out ``[validate]``
   seeds, beside plain backprop and (when ``lr`` is searched) backprop with its lr tuned on the
   search seeds with the same trial budget (``metabp search``);
2. compares the candidate ``metabp export`` picks (best held-out score) with "lr tuned alone" and
   baseline optimizers whose lr is tuned with the same budget, on fresh seeds that neither the search
   nor the choice of ``g`` saw (``metabp compare``);
3. transfers that ``g`` to the other CPU targets against plain backprop (``metabp transfer``).

Every figure in ``RESULTS.md`` comes from these runs; nothing is typed by hand. Per-study files
(compare and transfer tables, PNGs, the exported ``.bfn``, ``summary.json``) go to
``studies/results/<name>/``; RESULTS.md is written from every ``summary.json`` there, so studies
can run in separate processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metabp.analysis import compare_study, transfer, write_transfer  # noqa: E402
from metabp.search import Study, format_heldout  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
STUDIES = ["quickstart", "digits", "digits-sgd", "mnist1d", "multi"]
#: Targets a found g is transferred to: every target that trains on a CPU without data files.
CPU_TARGETS = ["gaussians-mlp3", "digits-mlp", "mnist1d-mlp"]
#: Baseline optimizers tuned in the comparison (each with the study's trial budget).
COMPARE_OPTIMIZERS = ["sgd", "momentum", "adam", "amsgrad"]
COMPARE_SEEDS = 5
#: Seeds for the transfer runs: apart from every study's search, validation and comparison seeds.
TRANSFER_SEEDS = [200, 201, 202, 203, 204]


def ratio_se(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-seed ratios ``a_s / b_s`` (paired by seed)."""
    r = np.asarray(a, dtype=float) / np.asarray(b, dtype=float)
    se = float(r.std(ddof=1) / math.sqrt(r.size)) if r.size > 1 else math.nan
    return float(r.mean()), se


def run_study(name: str) -> dict:
    """Search, validate, compare and transfer one study; the numbers RESULTS.md shows."""
    path = HERE / f"{name}.toml"
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    study = Study(path)
    study.optimize(progress=True)
    trial = study.best_heldout_trial() or study.best_trial
    study.export(out / "best.bfn", trial=trial.number)
    cmp = compare_study(study, seeds=COMPARE_SEEDS, optimizers=COMPARE_OPTIMIZERS, output=out, progress=True)
    g = cmp.kind("bfn")
    rivals = [r for r in cmp.rows if r.kind in ("control", "baseline")]
    best = min(rivals, key=lambda r: r.aulc[0])
    targets = [t.name for t in study.config.targets]
    where = study.config.where if len(targets) == 1 else None
    others = [t for t in CPU_TARGETS if t not in targets or len(targets) > 1]
    transfer_md = None
    if others:
        moved = transfer(study.bfn_of(trial), others, seeds=TRANSFER_SEEDS, progress=True)
        transfer_md = _body(write_transfer(moved, out / "transfer")["markdown"].read_text())
    return {
        "name": name, "targets": targets, "where": where, "optimizer": cmp.optimizer,
        "trial": trial.number, "heldout_text": format_heldout(study),
        "compare_md": cmp.markdown, "verdict": cmp.verdict(), "compare_seeds": cmp.seeds,
        "g": (g.label, *g.aulc), "best": (best.label, *best.aulc),
        "ratio": ratio_se(g.aulcs, best.aulcs), "z": cmp.versus(g, best).z,
        "transfer_md": transfer_md,
    }


def _body(markdown: str) -> str:
    """A written table without its headings (RESULTS.md names each section) or figure links."""
    return "\n".join(line for line in markdown.splitlines() if not line.startswith(("#", "![")))


def test_accuracy(name: str, label: str) -> str:
    """Mean ± std test accuracy of row ``label`` in the study's written ``compare.csv``."""
    with (OUT / name / "compare.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == label)
    return f"{float(row['test_accuracy_mean']):.3f} +- {float(row['test_accuracy_std']):.3f}"


def headline(results: list[dict]) -> list[str]:
    wins = [r for r in results if r["ratio"][0] < 1 and math.isfinite(r["z"]) and r["z"] < -2]
    if wins:
        names = ", ".join(f"{r['name']} (AULC ratio {r['ratio'][0]:.3f} +- {r['ratio'][1]:.3f}; test "
                          f"accuracy {test_accuracy(r['name'], r['g'][0])} against "
                          f"{test_accuracy(r['name'], r['best'][0])})" for r in wins)
        answer = (f"**Yes, in training speed,** on {len(wins)} of {len(results)} studies: {names}. "
                  "Compare the test accuracies before reading it as better generalisation.")
    else:
        answer = (f"**No.** On none of the {len(results)} studies does the found g beat the best lr-tuned "
                  "baseline by more than 2 standard errors of the paired difference on held-out seeds.")
    lines = ["## Headline", "", "Does any found g beat the best lr-tuned baseline on held-out seeds on a CPU "
             "target? " + answer, "",
             "| study | searched on | compared on | optimizer | AULC of g (held-out pick) "
             "| best tuned baseline | AULC ratio g / baseline (+- SE) | paired z "
             "| test acc g | test acc baseline |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['name']} | {', '.join(r['targets'])} | {r['targets'][0]} | {r['optimizer']} | "
            f"{r['g'][1]:.4f} +- {r['g'][2]:.4f} | "
            f"{r['best'][0]}: {r['best'][1]:.4f} +- {r['best'][2]:.4f} | "
            f"{r['ratio'][0]:.3f} +- {r['ratio'][1]:.3f} | {r['z']:.1f} | "
            f"{test_accuracy(r['name'], r['g'][0])} | {test_accuracy(r['name'], r['best'][0])} |")
    lines += ["", "AULC is the mean training loss per step (lower: g trains faster); test accuracy is "
              "measured after training, on the same seeds. A study compares on its first target. "
              "Ratios below 1 favour g; |z| > 2 is a difference beyond the seed-to-seed noise. The "
              f"comparison seeds are {COMPARE_SEEDS} seeds that neither the search nor the held-out choice "
              "of g saw.",
              "", "![ratios](results/ratios.png)", ""]
    return lines


def section(r: dict) -> list[str]:
    compare_body = _body(r["compare_md"])
    lines = [f"## {r['name']}", "",
             f"Study file `studies/{r['name']}.toml`; the exported g is trial {r['trial']}.", "",
             "### Held-out validation", "", "```", r["heldout_text"], "```", "",
             f"### Against tuned baselines (seeds {r['compare_seeds']})", "", compare_body, "",
             f"![compare](results/{r['name']}/compare_loss.png)", ""]
    if r["transfer_md"]:
        lines += ["### Transfer to the other CPU targets", "", r["transfer_md"], "",
                  f"![transfer](results/{r['name']}/transfer/transfer.png)", ""]
    return lines


def plot(results: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(results) + 1.5))
    y = np.arange(len(results))
    ratio = [r["ratio"][0] for r in results]
    se = [r["ratio"][1] if math.isfinite(r["ratio"][1]) else 0 for r in results]
    ax.errorbar(ratio, y, xerr=se, fmt="o", capsize=4)
    ax.axvline(1.0, color="grey", ls="--")
    ax.set_yticks(y, [r["name"] for r in results])
    ax.invert_yaxis()
    ax.set_xlabel("AULC of found g / AULC of best lr-tuned baseline (held-out seeds, +- SE)")
    ax.set_title("Below 1: g trains faster than the best tuned baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STUDIES, help="run only these studies")
    parser.add_argument("--no-run", action="store_true",
                        help="run nothing; write RESULTS.md from the studies' stored summaries")
    args = parser.parse_args(argv)
    for name in [] if args.no_run else args.only or STUDIES:
        print(f"== {name}", file=sys.stderr)
        summary = run_study(name)
        (OUT / name / "summary.json").write_text(json.dumps(summary, indent=1))
    done = [OUT / n / "summary.json" for n in STUDIES]
    results = [json.loads(p.read_text()) for p in done if p.exists()]
    OUT.mkdir(exist_ok=True)
    plot(results, OUT / "ratios.png")
    text = ["# Results: do found b-functions hold up?", "",
            "Generated by `python studies/results.py`; never edited by hand.", ""]
    text += headline(results)
    for r in results:
        text += section(r)
    (HERE / "RESULTS.md").write_text(re.sub(r"\n{3,}", "\n\n", "\n".join(text)))
    print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
