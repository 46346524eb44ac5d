"""The ``d2lopt`` command: ``env``, ``train`` and the experiment commands.

One module per sub-command (``env``, ``train``, ``ladder``, ``tune_loader``, ``ddp``); each
registers its flags without importing PyTorch and imports the work it launches only when it
runs, so ``d2lopt --help`` and a bad flag answer at once. Nothing outside this package
imports it: the modules below take their flag vocabulary from :mod:`d2lopt.flags` and their
error classes from :mod:`d2lopt.errors`.

Every command has ``--help``. A bad flag or value ends with exit code 2 and one line on
stderr that names the flag and the fix, never a traceback. The line comes from a
:class:`~d2lopt.errors.UsageError` (already in flags) or a
:class:`~d2lopt.errors.ParamError` whose parameter the command maps to its flag; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import ParamError, ParamUnavailable, UsageError
from ..flags import OneLineParser

__all__ = ["build_parser", "main"]

# the sub-command modules of this package, in --help order
COMMANDS: tuple[str, ...] = ("env", "train", "ladder", "tune_loader", "ddp")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="d2lopt",
        description="Measure what makes PyTorch training fast on this machine.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_command(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return f"d2lopt {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.typed = list(sys.argv[1:] if argv is None else argv)  # for hints that repeat it
    if not getattr(args, "command", None):
        parser.error("missing COMMAND, e.g. 'd2lopt env' or 'd2lopt train'")
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        return _usage(args.command, exc)
    except (ParamError, ParamUnavailable) as exc:
        # a bad value of a parameter some flag of this command sets: name that flag;
        # any other parameter is a bug in the program, not in the command line
        flags = getattr(args, "flags", {})
        if exc.param not in flags:
            raise
        return _usage(args.command, exc.usage(flags))
    except KeyboardInterrupt:
        print(f"d2lopt {args.command}: interrupted", file=sys.stderr)
        return 130


def _usage(command: str, exc: UsageError) -> int:
    print(f"d2lopt {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2
