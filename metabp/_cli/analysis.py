"""``metabp plot``, ``metabp compare``, ``metabp report``: pictures and tables of b-functions.

``plot`` needs only the core; ``compare`` and ``report`` reach into ``metabp.analysis`` (and so
``metabp.targets``/``metabp.search``), imported only when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metabp.exceptions import ConfigError

PLOT_KINDS = ("implicit-lr", "bfunction")


class Plot:
    """``metabp plot implicit-lr best.bfn --activation relu --lr 0.01 -o beta.png``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", choices=PLOT_KINDS,
                            help="implicit-lr: g, sigma' and beta = lr g/sigma'; bfunction: g and sigma'")
        parser.add_argument("bfn", type=Path, help="a .bfn file (metabp export, metabp.save)")
        parser.add_argument("--activation", default="relu", help="the sigma that g replaces (default relu)")
        parser.add_argument("--lr", type=float, default=1.0, help="the optimizer's learning rate alpha")
        parser.add_argument("--optimizer", default=None,
                            help="the optimizer, to say whether a constant in g cancels (adam) or not")
        parser.add_argument("--zmin", type=float, default=-4.0)
        parser.add_argument("--zmax", type=float, default=4.0)
        parser.add_argument("-o", "--output", type=Path, default=None, help="PNG to write")

    def run(self, args: argparse.Namespace) -> int:
        import numpy as np
        import torch

        import metabp
        from metabp import plots

        if not args.zmin < args.zmax:
            raise ConfigError(f"--zmin {args.zmin} --zmax {args.zmax}: zmin must be below zmax")
        g = metabp.load(args.bfn)
        z = torch.linspace(args.zmin, args.zmax, 401, dtype=torch.float64)
        optimizer = args.optimizer or g.meta.get("optimizer")
        out = args.output or args.bfn.with_suffix(f".{args.kind}.png")
        if args.kind == "implicit-lr":
            res = plots.plot_implicit_lr(g, args.activation, args.lr, out, z=z, optimizer=optimizer)
            beta = res.data["beta"]
            ok = beta[np.isfinite(beta)]
            span = f"beta in [{ok.min():.4g}, {ok.max():.4g}]" if ok.size else "beta undefined everywhere"
            print(f"wrote {res.path}  ({span} on z in [{args.zmin:g}, {args.zmax:g}]; "
                  f"{plots.optimizer_note(optimizer)})")
        else:
            res = plots.plot_bfunction(g, args.activation, out, z=z)
            print(f"wrote {res.path}")
        return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="study file (TOML)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL of the study (default: the study file's own)")
    parser.add_argument("-o", "--output", type=Path, default=Path("report"), help="output folder")
    parser.add_argument("--device", default="cpu")


class Compare:
    """``metabp compare STUDY.toml --seeds 5 -o report/``: best g vs tuned baseline optimizers."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds per method")
        parser.add_argument("--budget", type=int, default=None,
                            help="training runs to tune each baseline's lr (default: the study's trials)")
        parser.add_argument("--optimizers", default=None,
                            help="comma-separated baseline optimizers (default: all ten)")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import compare_study

        optimizers = None if args.optimizers is None else [o.strip() for o in args.optimizers.split(",")]
        result = compare_study(args.study, storage=args.storage, seeds=args.seeds, budget=args.budget,
                               optimizers=optimizers, output=args.output, device=args.device, progress=True)
        print(result.markdown)
        print(f"wrote {args.output}/compare.md, compare.csv, compare_loss.png")
        return 0


class Report:
    """``metabp report STUDY.toml -o report/``: index.md with the study's findings and figures."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--top", type=int, default=10, help="top candidates whose g(z) spread is drawn")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import report_study

        path = report_study(args.study, storage=args.storage, output=args.output, top=args.top,
                            device=args.device, progress=True)
        print(f"wrote {path}")
        return 0
