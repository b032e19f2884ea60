"""``metabp plot``, ``compare``, ``report``, ``transfer``, ``explain``: pictures and tables of b-functions.

``plot`` needs only the core (and ``metabp.targets`` to read a ``.bfn``'s target); ``compare``,
``report``, ``transfer`` and ``explain`` reach into ``metabp.analysis`` (and so ``metabp.targets`` and
``metabp.search``), imported only when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metabp.exceptions import ConfigError

PLOT_KINDS = ("implicit-lr", "bfunction")


class Plot:
    """``metabp plot implicit-lr best.bfn --optimizer adam --lr 0.01 -o beta.png``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kind", choices=PLOT_KINDS,
                            help="implicit-lr: g, sigma' and beta = lr*g/sigma'; bfunction: g and sigma'")
        parser.add_argument("bfn", type=Path, help="a .bfn file (metabp export, metabp.save); one with a g "
                                                   "per site draws one PNG per site, OUT.SITE.png "
                                                   "(a glob's * as _)")
        parser.add_argument("--activation", default=None,
                            help="the sigma that g replaces (default: the .bfn's target's, else relu)")
        parser.add_argument("--lr", type=float, default=None,
                            help="the learning rate lr in beta = lr*g/sigma' (default: the .bfn's "
                                 "own searched lr, else its target's, else 1)")
        parser.add_argument("--optimizer", default=None,
                            help="the optimizer g trains with, e.g. adam or sgd: says whether a constant "
                                 "factor in g cancels (default: the .bfn's target's)")
        parser.add_argument("--zmin", type=float, default=-4.0,
                            help="smallest pre-activation z drawn (default -4)")
        parser.add_argument("--zmax", type=float, default=4.0,
                            help="largest pre-activation z drawn (default 4)")
        parser.add_argument("-o", "--output", type=Path, default=None,
                            help="PNG to write (default: beside the .bfn, BFN.KIND.png)")

    def run(self, args: argparse.Namespace) -> int:
        import torch

        import metabp
        from metabp.plots import site_file_names

        if not args.zmin < args.zmax:
            raise ConfigError(f"--zmin {args.zmin} --zmax {args.zmax}: zmin must be below zmax")
        g = metabp.load(args.bfn)
        known = trained_with(g.meta)
        activation = args.activation or known.get("activation", "relu")
        lr = args.lr if args.lr is not None else known.get("lr", 1.0)
        optimizer = args.optimizer or known.get("optimizer")
        z = torch.linspace(args.zmin, args.zmax, 401, dtype=torch.float64)
        out = args.output or args.bfn.with_suffix(f".{args.kind}.png")
        sites = dict(g) if metabp.is_per_site(g) else {None: g}  # one g per site: one PNG per site
        names = site_file_names(s for s in sites if s is not None)
        for site, h in sites.items():
            path = out if site is None else out.with_name(f"{out.stem}.{names[site]}{out.suffix}")
            at = "" if site is None else f" at {site}"
            self._draw(args, h, path, at, activation=activation, lr=lr, optimizer=optimizer, z=z)
        return 0

    @staticmethod
    def _draw(args: argparse.Namespace, g, out: Path, at: str, *, activation: str, lr: float,
              optimizer: str | None, z) -> None:
        """One PNG of ``g`` (``at``: which site, for one g per site) and a line saying what it shows."""
        import numpy as np

        from metabp import plots

        if args.kind == "implicit-lr":
            res = plots.plot_implicit_lr(g, activation, lr, out, z=z, optimizer=optimizer)
            beta = res.data["beta"]
            ok = beta[np.isfinite(beta)]
            span = f"beta in [{ok.min():.4g}, {ok.max():.4g}]" if ok.size else "beta undefined everywhere"
            print(f"wrote {res.path}  (g{at}: {span} on z in [{args.zmin:g}, {args.zmax:g}], {activation}, "
                  f"lr {lr:g}; {plots.optimizer_note(optimizer)})")
        else:
            res = plots.plot_bfunction(g, activation, out, z=z)
            print(f"wrote {res.path}" + (f" (g{at})" if at else ""))


def trained_with(meta: dict) -> dict:
    """``activation``, ``lr`` and ``optimizer`` a ``.bfn`` was found with, from its ``meta``: the
    searched ``lr`` when the study searched it, else its target preset's (with the study's
    overrides). Empty when the ``.bfn`` names no known target."""
    from metabp.exceptions import MetabpError

    out: dict = {}
    target = meta.get("target") if isinstance(meta, dict) else None
    if isinstance(target, str):
        from metabp.targets import get_target

        overrides = meta.get("overrides")
        try:
            spec = get_target(target, **(overrides if isinstance(overrides, dict) else {}))
        except (MetabpError, TypeError, ValueError):
            spec = None
        if spec is not None:
            out.update(activation=spec.activation, lr=spec.lr, optimizer=spec.optimizer)
    lr = meta.get("lr") if isinstance(meta, dict) else None
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
        out["lr"] = float(lr)
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="study file (TOML)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL of the study (default: the study file's own)")
    parser.add_argument("-o", "--output", type=Path, default=Path("report"),
                        help="output folder (default report/)")
    parser.add_argument("--device", default=None,
                        help="training device, e.g. cpu or cuda (default: the study's device)")


class Compare:
    """``metabp compare STUDY.toml --seeds 5 -o report/``: the chosen g vs tuned baselines."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--seeds", type=int, default=5,
                            help="held-out evaluation seeds per method, taken right above the study's "
                                 "search and validation seeds (default 5)")
        parser.add_argument("--budget", type=int, default=None,
                            help="trials to tune each baseline's lr, each over the search seeds "
                                 "(default: the study's completed trials)")
        parser.add_argument("--optimizers", default=None,
                            help="comma-separated baseline optimizers (default: all ten)")
        parser.add_argument("--target", default=None,
                            help="which of the study's targets to compare on, a preset name (default: the "
                                 "first)")
        parser.add_argument("--lr-sweep", type=int, default=8,
                            help="train g and plain backprop at this many lrs around the tuned ones, on the "
                                 "held-out seeds, for the lr-robustness verdict (default 8; 0: none)")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import compare_study

        optimizers = None if args.optimizers is None else [o.strip() for o in args.optimizers.split(",")]
        result = compare_study(args.study, storage=args.storage, seeds=args.seeds, budget=args.budget,
                               optimizers=optimizers, target=args.target, output=args.output,
                               device=args.device, lr_sweep=args.lr_sweep, progress=True)
        print(result.markdown)
        print(f"wrote {', '.join(str(p) for p in result.files.values())}")
        return 0


class Report:
    """``metabp report STUDY.toml -o report/``: index.md with the study's findings and figures."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--top", type=int, default=10,
                            help="top candidates whose g(z) spread is drawn (default 10)")
        parser.add_argument("--no-alignment", action="store_true",
                            help="skip the gradient-alignment run (one more training run of the chosen g)")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import report_study

        if args.top < 1:
            raise ConfigError(f"--top {args.top}: give at least 1 candidate")
        files = report_study(args.study, storage=args.storage, output=args.output, top=args.top,
                             alignment=not args.no_alignment, device=args.device, progress=True)
        print(f"wrote {files.index} and {', '.join(p.name for p in files.figures)} beside it")
        return 0


class Transfer:
    """``metabp transfer best.bfn --targets digits-mlp,mnist1d-mlp --seeds 5 -o transfer/``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("bfn", type=Path, help="a .bfn file (metabp export, metabp.save)")
        parser.add_argument("--targets", required=True,
                            help="comma-separated target presets to train g and backprop on")
        parser.add_argument("--seeds", type=int, default=5,
                            help="seeds 0 .. N-1 per target; g and backprop share each seed's initial "
                                 "weights and data order (default 5)")
        parser.add_argument("--where", default=None,
                            help="patch site on every target (default: each target's own)")
        parser.add_argument("--device", default="cpu", help="training device (default cpu)")
        parser.add_argument("-o", "--output", type=Path, default=Path("transfer"),
                            help="folder for transfer.md, transfer.csv, transfer.png (default transfer/)")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import transfer, write_transfer

        result = transfer(args.bfn, args.targets, seeds=args.seeds, where=args.where, device=args.device,
                          progress=True)
        files = write_transfer(result, args.output)
        print(files["markdown"].read_text())
        print(f"wrote {', '.join(str(p) for p in files.values())}")
        return 0


class Explain:
    """``metabp explain best.bfn --study studies/mnist1d.toml -o explain/``: what a found g is."""

    #: (flag, type, default, help) of each option
    OPTIONS = (
        ("--study", Path, None, "its study file, validated (default: the target, site and seeds the .bfn's "
                                "meta records)"),
        ("--storage", str, None, "Optuna storage URL of the study (default: the study file's own)"),
        ("--seeds", int, 10, "held-out seeds, right above every search and validation seed (default 10)"),
        ("--baseline-lr", float, None, "the baseline's lr, e.g. the best tuned row of `metabp compare` "
                                       "(default: backprop at the lr validation tuned, else the target's)"),
        ("--baseline-optimizer", str, None, "the baseline's optimizer (default: the target's)"),
        ("--zmax", float, 4.0, "fit the simple forms on z in [-zmax, zmax] (default 4)"),
        ("--device", str, None, "training device (default: the study's, else cpu)"),
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("bfn", type=Path, help="a .bfn file holding a meta-network, or one per site "
                                                   "(metabp export)")
        for flag, kind, default, help_text in self.OPTIONS:
            parser.add_argument(flag, type=kind, default=default, help=help_text)
        parser.add_argument("-o", "--output", type=Path, default=Path("explain"),
                            help="folder for explain.md, explain.csv, explain.png, forms/*.bfn (default "
                                 "explain/)")

    def run(self, args: argparse.Namespace) -> int:
        from metabp.analysis import explain_file

        result = explain_file(args.bfn, study=args.study, storage=args.storage, seeds=args.seeds,
                              baseline_lr=args.baseline_lr, baseline_optimizer=args.baseline_optimizer,
                              zmax=args.zmax, output=args.output, device=args.device)
        print(result.markdown)
        print(f"wrote {', '.join(str(p) for p in result.files.values())}")
        return 0
