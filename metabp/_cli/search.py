"""``metabp search | show | export``: run a study, list its trials, save its best b-function."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from metabp.exceptions import ConfigError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study file (TOML), e.g. studies/quickstart.toml")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or journal file (default: the study file's, else <study>.journal beside it)",
    )


def _open(args: argparse.Namespace, *, create: bool = False, **changes: Any):
    from metabp.search import Study, load_study

    cfg = load_study(args.study)
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    return Study(cfg, storage=args.storage, create=create)


class Search:
    """Run a study to its budget (resuming whatever is stored)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--trials", type=int, default=None, help="total budget (overrides n_trials)")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue a stored study (error if none); runs resume anyway, this only insists",
        )
        parser.add_argument("--max-new", type=int, default=None, help="stop after this many new trials")
        parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    def run(self, args: argparse.Namespace) -> int:
        if args.trials is not None and args.trials < 1:
            raise ConfigError(f"--trials {args.trials}: must be >= 1")
        study = _open(args, create=not args.resume, n_trials=args.trials)
        study.optimize(args.max_new, progress=not args.quiet)
        if not args.quiet and study.completed():
            best = study.best_trial
            print(f"best: trial {best.number}, AULC {best.value:.6g}, omega "
                  f"[{', '.join(f'{v:.4g}' for v in study.omega_of(best).tolist())}]")
        return 0


def _row(trial: Any, names: list[str]) -> dict[str, Any]:
    dur = trial.duration.total_seconds() if trial.duration is not None else None
    value = trial.value
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": value if value is None or math.isfinite(value) else None,
        "params": {n: trial.params[n] for n in names if n in trial.params},
        "diverged": trial.user_attrs.get("diverged"),
        "test_accuracy": trial.user_attrs.get("test_accuracy"),
        "seconds": trial.user_attrs.get("seconds"),
        "duration": dur,
        "retry_of": trial.user_attrs.get("retry_of"),
    }


class Show:
    """Table (or JSON) of a study's trials: omega, AULC, state, time."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--json", action="store_true",
                            help="JSON: {study, best, trials: [{number, state, value, params, ...}]}")

    def run(self, args: argparse.Namespace) -> int:
        try:
            return self._show(args)
        except BrokenPipeError:  # `metabp show ... | head`
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    def _show(self, args: argparse.Namespace) -> int:
        study = _open(args)
        names = study.config.param_names
        rows = [_row(t, names) for t in study.trials]
        done = study.completed()
        best = study.best_trial.number if done else None
        if args.json:
            json.dump({"study": study.name, "storage": str(study.storage_url), "best": best,
                       "n_trials": study.config.n_trials, "trials": rows}, sys.stdout, indent=1)
            print()
            return 0
        head = f"{'#':>4} {'state':<8} {'AULC':>10} " + " ".join(f"{n:>9}" for n in names) + "  time_s  note"
        print(f"study {study.name!r} in {study.storage_url}: {len(done)}/{study.config.n_trials} completed")
        print(head)
        for r in rows:
            val = f"{r['value']:.5g}" if r["value"] is not None else "-"
            omega = " ".join(f"{r['params'][n]:9.4f}" if n in r["params"] else f"{'-':>9}" for n in names)
            secs = f"{r['duration']:7.2f}" if r["duration"] is not None else f"{'-':>7}"
            note = []
            if r["number"] == best:
                note.append("best")
            if r["diverged"]:
                note.append("diverged")
            if r["retry_of"] is not None:
                note.append(f"retry of #{r['retry_of']}")
            print(f"{r['number']:>4} {r['state']:<8} {val:>10} {omega} {secs}  {', '.join(note)}")
        return 0


class Export:
    """Save a study's best (or a chosen) trial as a ``.bfn`` file."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("-o", "--output", default=None, help="output file (default: <study>-best.bfn)")
        parser.add_argument("--trial", type=int, default=None, help="trial number (default: the best)")

    def run(self, args: argparse.Namespace) -> int:
        study = _open(args)
        out = args.output or f"{study.name}-best.bfn"
        path = study.export(out, trial=args.trial)
        import metabp

        g = metabp.load(path)
        print(f"wrote {path} (trial {g.meta['trial']}, AULC {g.meta['score']:.6g})")
        return 0
