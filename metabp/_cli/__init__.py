"""``metabp`` command line: a table of sub-commands, each a class with ``add_arguments``/``run``.

Sub-command modules are imported only when their command runs, so ``metabp --help`` is fast
and the core package never imports ``metabp.targets`` or ``metabp.search``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metabp.exceptions import MetabpError

# name -> (module, class, one-line help). Each class has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("metabp._cli.train", "Train", "train a target preset, optionally with a b-function"),
    "search": ("metabp._cli.search", "Search", "run a b-function search study to its budget"),
    "show": ("metabp._cli.search", "Show", "table (or JSON) of a study's trials"),
    "export": ("metabp._cli.search", "Export", "save a study's best b-function as a .bfn file"),
    "validate": ("metabp._cli.search", "Validate", "train a study's top candidates and controls on held-out seeds"),
    "plot": ("metabp._cli.analysis", "Plot", "plot a b-function: g(z), sigma'(z), implicit lr"),
    "compare": ("metabp._cli.analysis", "Compare", "best b-function vs tuned baseline optimizers"),
    "report": ("metabp._cli.analysis", "Report", "Markdown + PNG report of a study"),
    "transfer": ("metabp._cli.analysis", "Transfer", "train a saved b-function and backprop on other targets"),
}


def _command(name: str):
    module, cls, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), cls)()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metabp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the command being run imports its module
            _command(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_command(args.command).run(args) or 0)
    except MetabpError as exc:
        print(f"metabp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"metabp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
