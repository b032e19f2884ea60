"""Trials per minute of whole studies, end to end: the code before batching against the code now.

Each study file (default ``studies/digits.toml`` and ``studies/mnist1d.toml``) runs end to end,
``Study.optimize()``: backprop's baseline, the search, then validation with its controls (backprop
and backprop with a tuned lr on the held-out seeds). It runs once with the code at ``--before``
(default ``daccfac``, the commit before per-copy learning rates: one ``train_many`` call per
candidate lr, lr tuning one trial at a time) and once with ``--after`` (default: this working
tree), in the same invocation, in alternating order, each in a fresh process with a fresh
journal storage, one thread (``OMP_NUM_THREADS=1``).

Wall time splits into training (time inside the evaluator, i.e. ``train_many``), proposing (time
in Optuna's ``Study.ask`` and ``Trial.suggest_float``: the samplers, for the search and for the
lr tuning alike) and other. ``trainings`` counts the copies trained (candidate or baseline x seed):
both codes must train the same number. trials/min = the study's ``n_trials`` / wall minutes.

How the old code runs beside the new one: ``git worktree add --detach`` checks each ref out into
a temporary directory. The installed package is an editable install whose finder maps
``metabp``, ``metabp.targets`` and ``metabp.search`` to this tree's ``metabp/``, ``targets/`` and
``search/``, and a ``PYTHONPATH`` cannot override ``metabp.targets`` (it is no subdirectory of
``metabp/``). So each child process first puts a small finder at the front of ``sys.meta_path``
(:func:`use_tree`) that maps the three packages to the worktree's folders; everything else
(torch, optuna, botorch) comes from the same virtual environment.

Writes ``benchmarks/results/study_throughput.{md,csv,png}`` (``study_throughput_q<N>.*`` with
``--q N``, which overrides the study files' ``q`` for both codes).

    .venv/bin/python benchmarks/study_throughput.py [--studies digits mnist1d] [--trials mnist1d=24]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# defaults (nanoGPT style: plain values at the top)
STUDIES = ["digits", "mnist1d"]
BEFORE = "daccfac"
AFTER = "WORKTREE"  # the working tree as it is (uncommitted changes included)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GOAL = 3.0  # digits: trials/min after / before


def use_tree(root: Path) -> None:
    """Import ``metabp``, ``metabp.targets`` and ``metabp.search`` from the tree at ``root``."""
    import importlib.util

    dirs = {"metabp": root / "metabp", "metabp.targets": root / "targets", "metabp.search": root / "search"}

    class TreeFinder:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name not in dirs:
                return None
            return importlib.util.spec_from_file_location(
                name, dirs[name] / "__init__.py", submodule_search_locations=[str(dirs[name])])

    sys.meta_path.insert(0, TreeFinder)


def timed_optuna(clock: dict[str, float]) -> None:
    """Add the seconds spent in ``optuna.Study.ask`` and ``Trial.suggest_float`` to ``clock``."""
    import optuna

    def wrap(owner, name):
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                clock["proposing"] += time.perf_counter() - start
        setattr(owner, name, timed)

    wrap(optuna.study.Study, "ask")
    wrap(optuna.trial.Trial, "suggest_float")


def child(root: Path, study_file: Path, n_trials: int | None, q: int | None, storage: Path) -> dict:
    """One study end to end with the code at ``root`` (``n_trials``, ``q``: overrides); the
    measurements as a dict."""
    use_tree(root)
    import dataclasses

    import metabp.search as search

    assert Path(search.__file__).resolve().parent == (root / "search").resolve(), search.__file__
    cfg = search.load_study(study_file)
    if n_trials is not None:
        cfg = dataclasses.replace(cfg, n_trials=n_trials, n_initial=min(cfg.n_initial, n_trials))
    if q is not None:
        cfg = dataclasses.replace(cfg, q=q)
    clock = {"training": 0.0, "proposing": 0.0, "trainings": 0, "calls": 0}
    inner = search.train_evaluator(cfg)

    def evaluate(gs, seeds, *, target=0, lr=None):
        start = time.perf_counter()
        runs = inner(gs, seeds, target=target, lr=lr)
        clock["training"] += time.perf_counter() - start
        clock["trainings"] += len(gs)
        clock["calls"] += 1
        return runs

    timed_optuna(clock)
    study = search.Study(cfg, storage=str(storage), evaluate=evaluate)
    start = time.perf_counter()
    study.optimize(progress=False)
    wall = time.perf_counter() - start
    controls = study.heldout_controls
    best = study.best_heldout_trial()
    return {"n_trials": cfg.n_trials, "q": cfg.q, "wall": wall, **clock,
            "other": wall - clock["training"] - clock["proposing"],
            "trials_per_min": cfg.n_trials / wall * 60,
            "best_search": study.best_trial.value,
            "best_heldout": best.user_attrs["heldout_aulc"]["mean"] if best is not None else None,
            "backprop_heldout": controls.get("backprop", {}).get("mean"),
            "tuned_lr": controls.get("tuned_lr", {}).get("lr"),
            "tuned_lr_heldout": controls.get("tuned_lr", {}).get("mean")}


def checkout(ref: str, where: Path) -> Path:
    """The tree at ``ref`` (a worktree under ``where``), or this working tree for ``WORKTREE``."""
    if ref == AFTER:
        return ROOT
    path = where / ref.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), ref],
                   check=True)
    return path


def run_one(root: Path, study: str, n_trials: int | None, q: int | None, tmp: Path) -> dict:
    """One child process (fresh storage); its JSON result."""
    storage = tmp / f"{study}-{root.name}-{time.time_ns()}.journal"
    cmd = [sys.executable, __file__, "--child", str(root), str(root / "studies" / f"{study}.toml"),
           "" if n_trials is None else str(n_trials), "" if q is None else str(q), str(storage)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, tmp: Path) -> list[dict]:
    from tqdm.auto import tqdm

    trees = {"before": checkout(args.before, tmp), "after": checkout(args.after, tmp)}
    trials = dict(item.split("=") for item in args.trials)
    rows = []
    with tqdm(total=2 * len(args.studies), desc="study_throughput", unit="study run") as bar:
        for i, study in enumerate(args.studies):
            n = int(trials[study]) if study in trials else None
            for code in (("before", "after") if i % 2 == 0 else ("after", "before")):
                bar.set_postfix_str(f"{study}, {code}")
                rows.append({"study": study, "code": code, "ref": getattr(args, code),
                             **run_one(trees[code], study, n, args.q, tmp)})
                bar.update(1)
    for path in trees.values():
        if path != ROOT:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
    return rows


def report(rows: list[dict]) -> list[str]:
    lines = []
    for study in dict.fromkeys(r["study"] for r in rows):
        b, a = (next(r for r in rows if r["study"] == study and r["code"] == c) for c in ("before", "after"))
        ratio = a["trials_per_min"] / b["trials_per_min"]
        goal = f" (goal >= {GOAL:g}x)" if study == "digits" else ""
        lines.append(f"{study}: {a['n_trials']} trials, after/before {ratio:.2f}x trials/min{goal}; "
                     f"before {b['trials_per_min']:.1f}/min ({b['wall']:.1f} s), after "
                     f"{a['trials_per_min']:.1f}/min ({a['wall']:.1f} s); trainings {b['trainings']} vs "
                     f"{a['trainings']}, trainer calls {b['calls']} vs {a['calls']}")
        for r in (b, a):
            lines.append(f"  {r['code']:>6}: training {r['training']:.1f} s, "
                         f"proposing {r['proposing']:.1f} s, other {r['other']:.1f} s; "
                         f"best held-out {fmt(r['best_heldout'])}, backprop {fmt(r['backprop_heldout'])}, "
                         f"tuned lr {fmt(r['tuned_lr'])} -> {fmt(r['tuned_lr_heldout'])}")
    return lines


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.5g}"


def write(rows: list[dict], lines: list[str], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("study_throughput" if args.q is None else f"study_throughput_q{args.q}")
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cols = ["study", "code", "ref", "n_trials", "q", "trainings", "calls", "wall", "trials_per_min",
            "training", "proposing", "other", "best_heldout", "backprop_heldout", "tuned_lr",
            "tuned_lr_heldout"]
    md = [f"`{' '.join([Path(sys.executable).name, 'benchmarks/study_throughput.py'] + sys.argv[1:])}`", "",
          "One run each, the two codes alternating, one thread, on a machine shared with other "
          "processes (seconds are wall clock).", "", *[f"- {line.strip()}" for line in lines], "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
           for r in rows]
    Path(f"{stem}.md").write_text("\n".join(md) + "\n")
    plot(rows, f"{stem}.png")
    print(f"wrote {stem}.md, .csv, .png")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [f"{r['study']}\n{r['code']}" for r in rows]
    bottom = [0.0] * len(rows)
    for part, color in (("training", "C0"), ("proposing", "C1"), ("other", "C7")):
        values = [max(r[part], 0.0) for r in rows]
        ax.bar(labels, values, bottom=bottom, color=color, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, r in enumerate(rows):
        ax.annotate(f"{r['trials_per_min']:.1f} trials/min", (i, bottom[i]), ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel("seconds, end to end")
    ax.set_title("Whole studies: the code before per-copy lrs vs now")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        root, study_file, n, q, storage = sys.argv[2:7]
        number = lambda text: int(text) if text else None  # noqa: E731
        print(json.dumps(child(Path(root), Path(study_file), number(n), number(q), Path(storage))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=STUDIES, help="names of study files in studies/")
    parser.add_argument("--trials", nargs="*", default=[], metavar="STUDY=N",
                        help="cap a study's n_trials (both codes), e.g. mnist1d=24")
    parser.add_argument("--q", type=int, help="override the study files' q (both codes)")
    parser.add_argument("--before", default=BEFORE, help="git ref of the code before")
    parser.add_argument("--after", default=AFTER, help="git ref of the code after (WORKTREE: this tree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="study_throughput-") as tmp:
        rows = measure(args, Path(tmp))
    lines = report(rows)
    print("\n".join(lines))
    write(rows, lines, args)


if __name__ == "__main__":
    main()
