"""``metabp`` command line: a table of sub-commands, each a class with ``add_arguments``/``run``.

Sub-command modules are imported only when their command runs, so ``metabp --help`` is fast
and the core package never imports ``metabp.targets`` or ``metabp.search``. A user's mistake (a
``MetabpError``, an OS error on a path they gave, a bad option) is one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metabp.exceptions import MetabpError

DESCRIPTION = (
    "metabp: search, train and analyse b-functions, the functions that replace an activation's "
    "derivative in the backward pass. Start with `metabp search studies/quickstart.toml`."
)

# name -> (module, class, one-line help). Each class has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("metabp._cli.train", "Train", "train a target preset, optionally with a b-function"),
    "search": ("metabp._cli.search", "Search", "run a b-function search study to its budget"),
    "show": ("metabp._cli.search", "Show", "table (or JSON) of a study's trials"),
    "export": ("metabp._cli.search", "Export", "save a study's best b-function as a .bfn file"),
    "validate": ("metabp._cli.search", "Validate", "score top candidates and controls on held-out seeds"),
    "plot": ("metabp._cli.analysis", "Plot", "plot a b-function: g(z), sigma'(z), implicit lr"),
    "compare": ("metabp._cli.analysis", "Compare", "best b-function vs tuned baseline optimizers"),
    "report": ("metabp._cli.analysis", "Report", "Markdown + PNG report of a study"),
    "transfer": ("metabp._cli.analysis", "Transfer", "a saved b-function vs backprop on other targets"),
    "explain": ("metabp._cli.analysis", "Explain", "a found b-function as simple forms, each trained"),
}
USAGE_ERROR = 2


class UsageError(Exception):
    """A bad command line (argparse's complaint), reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message and exits; we want one line
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def _command(name: str):
    module, cls, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), cls)()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="metabp", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the command being run imports its module
            _command(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``metabp ARGV``; returns the exit code (0 ok, 2 a user error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "metabp"
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("metabp: error: give a command, e.g. `metabp search studies/quickstart.toml` "
                             f"({', '.join(COMMANDS)}; see `metabp --help`)")
        command = f"metabp {args.command}"
        return int(_command(args.command).run(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except MetabpError as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:  # a path the user gave: missing, unwritable, a directory, ...
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"{command}: error:{where} {exc.strerror or _one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    return USAGE_ERROR


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    raise SystemExit(main())
