"""``metabp search | show | export | validate``: run a study, list its trials, save its best
b-function, score its top candidates on held-out seeds."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from metabp.exceptions import ConfigError
from metabp.search import schema


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study file (TOML), e.g. studies/quickstart.toml")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or journal file (default: the study file's, else <study>.journal beside it)",
    )


def _open(args: argparse.Namespace, *, create: bool = False, train: bool = False, **changes: Any):
    """The study of ``args.study``; ``train``: it will train here, so its device must exist."""
    from metabp.search import Study, load_study

    cfg = load_study(args.study, check_device=train)
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    return Study(cfg, storage=args.storage, create=create)


def _site_names(cfg: Any) -> dict[str, list[str]]:
    """A per-site study's param names by site (site ``j``: omega's ``j``-th chunk); ``{}`` otherwise."""
    return schema.by_site(cfg.param_names, cfg.sites, cfg.site_params)


def _omega_text(study: Any, trial: Any) -> str:
    """``omega [..]``, or per site ``omega act1 [..], act2 [..]``."""
    values = study.omega_of(trial).tolist()
    if not study.config.sites:
        return "omega [" + ", ".join(f"{v:.4g}" for v in values) + "]"
    chunks = schema.by_site(values, study.config.sites, study.config.site_params)
    return "omega " + ", ".join(f"{site} [" + ", ".join(f"{v:.4g}" for v in chunk) + "]"
                                for site, chunk in chunks.items())


def _fmt(summary: dict | None) -> str:
    return "-" if not summary else f"{summary['mean']:.5g} ± {summary['std']:.2g}"


NO_VERDICT = ("held-out verdict: none (no candidate validated; add [validate] to the study file): the scores "
              "above are on the search seeds, and the best of many is biased low")


def heldout_verdict(study: Any) -> str:
    """One line: the candidate ``metabp export`` saves against the better held-out control
    (``Study.heldout_verdict``), or why there is no verdict."""
    return study.heldout_verdict() or NO_VERDICT


class Search:
    """Run a study to its budget (resuming whatever is stored), then validate it on held-out seeds."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--trials", type=int, default=None, help="total budget (overrides n_trials)")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue a stored study (error if none); runs resume anyway, this only insists",
        )
        parser.add_argument("--max-new", type=int, default=None, help="stop after this many new trials")
        parser.add_argument("--no-validate", action="store_true",
                            help="skip the held-out validation at the end ([validate] in the study file)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    def run(self, args: argparse.Namespace) -> int:
        if args.trials is not None and args.trials < 1:
            raise ConfigError(f"--trials {args.trials}: must be >= 1")
        if args.max_new is not None and args.max_new < 0:
            raise ConfigError(f"--max-new {args.max_new}: must be >= 0")
        study = _open(args, create=not args.resume, train=True, n_trials=args.trials)
        study.optimize(args.max_new, progress=not args.quiet, validate=not args.no_validate)
        if not args.quiet and study.completed():
            best = study.best_trial
            lr = f", lr {study.lr_of(best):.4g}" if study.config.lr_bounds else ""
            label = " (diverged)" if best.user_attrs.get(schema.DIVERGED) else ""
            print(f"best: trial {best.number}, score {best.value:.6g}{label}, {_omega_text(study, best)}{lr}")
            if study.backprop is not None:
                print(f"backprop on the search seeds {study.backprop['seeds']}: {_fmt(study.backprop)}")
            print(heldout_verdict(study))
        return 0


class Validate:
    """Train a study's top candidates and its controls on the held-out seeds of ``[validate]``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bar or table")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.search import format_heldout

        study = _open(args, train=True)
        study.validate(progress=not args.quiet)
        if not args.quiet:
            print(format_heldout(study))
        return 0


def _row(trial: Any, names: list[str]) -> dict[str, Any]:
    from metabp.search import retry_of

    dur = trial.duration.total_seconds() if trial.duration is not None else None
    value = trial.value
    held = trial.user_attrs.get(schema.HELDOUT_AULC)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": value if value is None or math.isfinite(value) else None,
        "params": {n: trial.params[n] for n in names if n in trial.params},
        "diverged": trial.user_attrs.get(schema.DIVERGED),
        "heldout_aulc": None if held is None else {"mean": held["mean"], "std": held["std"],
                                                   "seeds": held["seeds"]},
        "per_seed": trial.user_attrs.get(schema.PER_SEED),
        "seconds": trial.user_attrs.get(schema.SECONDS),
        "duration": dur,
        "retry_of": retry_of(trial),
    }


class Show:
    """Table (or JSON) of a study's trials: omega, score, held-out score, state, time."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--json", action="store_true",
                            help="JSON: {study, best, backprop, heldout_controls, trials: [{number, state, "
                                 "value, params, heldout_aulc, ...}]}")

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
        held = study.best_heldout_trial()
        if args.json:
            json.dump({"study": study.name, "storage": str(study.storage_url), "best": best,
                       "best_heldout": None if held is None else held.number,
                       "n_trials": study.config.n_trials, "complete": len(done) >= study.config.n_trials,
                       "seeds": list(study.config.seeds), "backprop": study.backprop,
                       schema.HELDOUT_CONTROLS: study.heldout_controls,
                       "heldout_verdict": heldout_verdict(study), "trials": rows,
                       **({"sites": _site_names(study.config)} if study.config.sites else {})},
                      sys.stdout, indent=1)
            print()
            return 0
        self._table(study, rows, len(done), best, held)
        return 0

    @staticmethod
    def _table(study: Any, rows: list[dict], n_done: int, best: int | None, held: Any) -> None:
        names = study.config.param_names
        cfg = study.config
        state = "complete" if n_done >= cfg.n_trials else "in progress"
        print(f"study {study.name!r} in {study.storage_url}: {n_done}/{cfg.n_trials} completed ({state})")
        if study.backprop is not None:
            print(f"backprop on the search seeds {study.backprop['seeds']}: {_fmt(study.backprop)}")
        for key, label in ((schema.CONTROL_BACKPROP, "backprop"),
                           (schema.CONTROL_TUNED_LR, "backprop, tuned lr")):
            c = study.heldout_controls.get(key)
            if c is not None:
                lr = f" (lr {c['lr']:.3g})" if "lr" in c else ""
                print(f"held-out {c['seeds']}: {label}{lr} {_fmt(c)}")
        if held is not None:
            print(heldout_verdict(study))
        for site, site_names in _site_names(cfg).items():  # a per-site study: one g per site
            print(f"site {site}: its own g, {site_names[0]} .. {site_names[-1]}")
        print(f"{'#':>4} {'state':<8} {'score':>10} {'held-out':>17} " + " ".join(f"{n:>9}" for n in names)
              + "  time_s  note")
        for r in rows:
            val = f"{r['value']:.5g}" if r["value"] is not None else "-"
            omega = " ".join(f"{r['params'][n]:9.4g}" if n in r["params"] else f"{'-':>9}" for n in names)
            secs = f"{r['duration']:7.2f}" if r["duration"] is not None else f"{'-':>7}"
            note = []
            if r["number"] == best:
                note.append("best")
            if held is not None and r["number"] == held.number:
                note.append("best held-out")
            if r["diverged"]:
                note.append("diverged")
            if r["retry_of"] is not None:
                note.append(f"retry of #{r['retry_of']}")
            print(f"{r['number']:>4} {r['state']:<8} {val:>10} {_fmt(r['heldout_aulc']):>17} {omega} {secs}  "
                  f"{', '.join(note)}")


class Export:
    """Save a study's best held-out (else best search score) or a chosen trial as a ``.bfn`` file."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("-o", "--output", default=None, help="output file (default: <study>-best.bfn)")
        parser.add_argument("--trial", type=int, default=None,
                            help="trial number (default: the best held-out, else the best search score)")

    def run(self, args: argparse.Namespace) -> int:
        import metabp

        study = _open(args)
        out = args.output or f"{study.name}-best.bfn"
        path = study.export(out, trial=args.trial)
        meta = metabp.load(path).meta
        why = {"heldout_aulc": "best held-out score", "search score": "best search score (not validated)",
               "trial": "chosen with --trial"}[meta["chosen_by"]]
        held = meta.get("heldout_aulc")
        extra = f", held-out {_fmt(held)} on seeds {meta['seeds']}" if held else ""
        print(f"wrote {path} (trial {meta['trial']}: {why}; search score {meta['aulc']:.6g}{extra})")
        if args.trial is None:
            print(heldout_verdict(study))
        return 0
