"""``metabp train TARGET [--bfn FILE] [--where SITE] ...``: one training run of a target preset."""

from __future__ import annotations

import argparse
import json


class Train:
    """Train a target preset once, optionally with a saved b-function; print its AULC and accuracy."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from metabp.targets import OPTIMIZERS, list_targets

        parser.add_argument("target", help=f"a preset: {', '.join(list_targets())}")
        parser.add_argument("--bfn", metavar="FILE", help="a .bfn b-function (default: plain backprop)")
        parser.add_argument("--where", help="activation to patch (default: the preset's, e.g. act2)")
        parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (default 0)")
        parser.add_argument("--epochs", type=int, help="override the preset's epochs")
        parser.add_argument("--optimizer", choices=list(OPTIMIZERS), help="override the preset's optimizer")
        parser.add_argument("--lr", type=float, help="override the preset's learning rate")
        parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
        parser.add_argument("--data-dir", metavar="DIR",
                            help="dataset files (idx, CIFAR batches); default $METABP_DATA")
        parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        parser.add_argument("--threads", default="auto",
                            help="CPU threads: auto (1 for small targets), or a number")
        parser.add_argument("--json", action="store_true", help="print the whole run as JSON")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(self, args: argparse.Namespace) -> int:
        import metabp
        from metabp.exceptions import ConfigError
        from metabp.targets import get_target, train

        overrides = {k: getattr(args, k) for k in ("epochs", "optimizer", "lr", "batch_size")
                     if getattr(args, k) is not None}
        spec = get_target(args.target, **overrides)
        bfn = metabp.load(args.bfn) if args.bfn else None
        if args.threads == "auto":
            threads: int | str = "auto"
        else:
            try:
                threads = int(args.threads)
            except ValueError:
                raise ConfigError(f"--threads={args.threads!r} must be 'auto' or a number") from None
        run = train(spec, bfn, args.where, args.seed, device=args.device, progress=not args.no_progress,
                    data_dir=args.data_dir, threads=threads)
        if args.json:
            print(json.dumps({"target": spec.name, "where": args.where or spec.where, "seed": args.seed,
                              "aulc": run.aulc, "test_accuracy": run.test_accuracy,
                              "diverged": run.diverged, "seconds": run.seconds,
                              "epoch_losses": run.epoch_losses, "step_losses": run.step_losses}))
            return 0
        what = f"b-function {args.bfn} at {args.where or spec.where}" if bfn else "plain backprop"
        print(f"{spec.name} ({what}, seed {args.seed}): {len(run.step_losses)} steps in {run.seconds:.1f} s")
        if run.diverged:
            print(f"diverged at step {len(run.step_losses)} (loss {run.step_losses[-1]:.4g} > cap "
                  f"{spec.max_loss:g} or not finite)")
        print(f"AULC {run.aulc:.6g}")
        print(f"test accuracy {run.test_accuracy:.4f}")
        return 0
