"""``metabp train TARGET [--bfn FILE] [--where SITE] ...``: one training run of a target preset.

With ``--bfn`` it also trains plain backprop on the same seed and lr and prints both AULCs, so
the output says whether the b-function helped. A ``.bfn`` that a study found on this target
carries the setting it was found in (its ``meta``: the target's overrides, the searched ``lr``,
``where``); those are used unless given on the command line, and the lr used is printed. A
mistake (unknown preset, missing file, a device this machine lacks) is a ``MetabpError``: one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

SETTINGS = ("epochs", "optimizer", "lr", "batch_size")


class Train:
    """Train a target preset once, optionally with a saved b-function; print its AULC and accuracy."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from metabp.targets import OPTIMIZERS, list_targets

        parser.add_argument("target", help=f"a preset: {', '.join(list_targets())}")
        parser.add_argument("--bfn", metavar="FILE",
                            help="a .bfn b-function (default: plain backprop); backprop on the same "
                                 "seed is trained too, for comparison")
        parser.add_argument("--where", help="activation to patch (default: the .bfn's, else the preset's, "
                                            "e.g. act2)")
        parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (default 0)")
        parser.add_argument("--epochs", type=int, help="override the preset's epochs")
        parser.add_argument("--optimizer", choices=list(OPTIMIZERS), help="override the preset's optimizer")
        parser.add_argument("--lr", type=float,
                            help="learning rate (default: the lr the .bfn was found with, else the preset's)")
        parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
        parser.add_argument("--data-dir", metavar="DIR",
                            help="dataset files (idx, CIFAR batches); default $METABP_DATA")
        parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        parser.add_argument("--threads", default="auto",
                            help="CPU threads: auto (1 for small targets), or a number")
        parser.add_argument("--compile", action="store_true", help="train through torch.compile")
        parser.add_argument("--json", action="store_true", help="print the whole run as JSON")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(self, args: argparse.Namespace) -> int:
        import metabp
        from metabp.exceptions import PatchError
        from metabp.targets import train

        bfn = metabp.load(args.bfn) if args.bfn else None
        found = found_with(bfn.meta, args.target) if bfn is not None else {}
        spec, where = _setting(args, found)
        where = _per_site_where(args, bfn, where)
        kw = {"device": args.device, "progress": not args.no_progress, "data_dir": args.data_dir,
              "threads": _threads(args.threads), "compile": args.compile}
        try:
            run = train(spec, bfn, where, args.seed, **kw)
        except PatchError as exc:
            if args.where is None and "where" in found:
                raise PatchError(f"{exc} ({args.bfn} was found at where={where!r}; give --where)") from None
            raise
        base = train(spec, None, None, args.seed, **kw) if bfn is not None else None
        if args.json:
            print(json.dumps({"target": spec.name, "where": list(bfn) if where is None else where,
                              "seed": args.seed,
                              "optimizer": spec.optimizer, "lr": spec.lr, "aulc": run.aulc,
                              "backprop_aulc": None if base is None else base.aulc,
                              "test_accuracy": run.test_accuracy, "diverged": run.diverged,
                              "seconds": run.seconds, "epoch_losses": run.epoch_losses,
                              "step_losses": run.step_losses}))
            return 0
        _print(args, spec, where or ", ".join(bfn), run, base, _lr_source(args, bfn, found))
        return 0


def found_with(meta: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The setting a ``.bfn`` was found in on ``target``, from its ``meta``: the study's target
    overrides, the searched ``lr`` and the patch site ``where`` ({} when found on another target).

    Example:
        >>> found_with({"target": "digits-mlp", "overrides": {"optimizer": "sgd", "lr": 0.1},
        ...             "lr": 0.05, "where": "act2"}, "digits-mlp")
        {'optimizer': 'sgd', 'lr': 0.05, 'where': 'act2'}
        >>> found_with({"target": "digits-mlp", "lr": 0.05}, "gaussians-mlp3")
        {}
    """
    if meta.get("target") != target:
        return {}
    setting = dict(meta.get("overrides") or {})
    for key in ("lr", "where"):
        if meta.get(key) is not None:
            setting[key] = meta[key]
    return setting


def _per_site_where(args: argparse.Namespace, bfn: Any, where: str) -> str | None:
    """``where``, or None for a per-site ``.bfn`` (its sites say where each g goes; no ``--where``)."""
    import metabp
    from metabp.exceptions import ConfigError

    if not metabp.is_per_site(bfn):
        return where
    if args.where is not None:
        raise ConfigError(f"--where {args.where}: {args.bfn} holds one g per site ({', '.join(bfn)}); "
                          "leave --where out")
    return None


def _setting(args: argparse.Namespace, found: dict[str, Any]) -> tuple[Any, str]:
    """The target spec and patch site to train at: the command line's settings, else the .bfn's
    (``found``; its lr is dropped when ``--optimizer`` names another optimizer), else the preset's."""
    from metabp.exceptions import ConfigError
    from metabp.targets import get_target

    given = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    spec = get_target(args.target, **given)  # the command line's own mistakes, named as such
    setting = {k: v for k, v in found.items() if k != "where"}
    if not setting:
        return spec, args.where or found.get("where") or spec.where
    try:
        if "optimizer" in given and given["optimizer"] != get_target(args.target, **setting).optimizer:
            found.pop("lr", None)  # that lr was found for another optimizer
            setting.pop("lr", None)
        spec = get_target(args.target, **{**setting, **given})
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in the setting {args.bfn} was found in, {setting}; override it on the "
                          "command line)") from None
    return spec, args.where or found.get("where") or spec.where


def _lr_source(args: argparse.Namespace, bfn: Any, found: Mapping[str, Any]) -> str:
    """Where the lr came from, in words: the command line, the .bfn or the preset."""
    if args.lr is not None:
        return "--lr"
    if "lr" in found:
        return f"the lr {args.bfn} was found with"
    target = bfn.meta.get("target") if bfn is not None else None
    if target is not None and target != args.target:
        return f"the preset's; {args.bfn} was found on {target}"
    return "the preset's"


def _print(args: argparse.Namespace, spec: Any, where: str, run: Any, base: Any, lr_source: str) -> None:
    what = f"b-function {args.bfn} at {where}" if base is not None else "plain backprop"
    print(f"{spec.name} ({what}, seed {args.seed}): {len(run.step_losses)} steps in {run.seconds:.1f} s")
    print(f"{spec.optimizer} lr {spec.lr:.4g} ({lr_source})")
    if run.diverged:
        print(f"diverged at step {len(run.step_losses)} (loss {run.step_losses[-1]:.4g} > cap "
              f"{spec.max_loss:g} or not finite)")
    print(f"AULC {_aulc(run)}" + ("" if base is None else f"   (backprop, same seed and lr: {_aulc(base)}; "
                                                           f"{_verdict(run, base)})"))
    print(f"test accuracy {run.test_accuracy:.4f}")


def _threads(value: str) -> int | str:
    from metabp.exceptions import ConfigError

    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--threads={value!r} must be 'auto' or a number") from None


def _aulc(run) -> str:
    """The AULC, or the divergence penalty labelled as such."""
    return f"{run.aulc:.6g} (diverged: penalty)" if run.diverged else f"{run.aulc:.6g}"


def _verdict(run, base) -> str:
    """g against backprop in words: AULC ratio (lower is better) or which one diverged."""
    if run.diverged or base.diverged:
        return "g diverged" if run.diverged else "backprop diverged"
    ratio = run.aulc / base.aulc
    return (f"g/backprop {ratio:.3f}, " + ("g learned faster" if ratio < 1 else "g did not help")
            + " on this one seed; `metabp compare` tests it on held-out seeds")
