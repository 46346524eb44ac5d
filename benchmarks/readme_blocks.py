"""Generated blocks of README.md: each sits between two marker comments, and a script
(``stopping_rule.py``, ``ladder_table.py``, ``collect_verdicts.py``) computes its text.

One writer for all of them: :func:`main` prints the block, or with ``--write`` replaces it in
README.md, or with ``--check`` exits 1 when README.md's copy is stale (what the tests check).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def replaced(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the markers ``start`` and ``end`` replaced by ``body``."""
    if start not in text or end not in text:
        raise SystemExit(f"README.md: the markers {start!r} and {end!r} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def write(start: str, end: str, body: str) -> None:
    """Replace the block between ``start`` and ``end`` in README.md with ``body``."""
    README.write_text(replaced(README.read_text(encoding="utf-8"), start, end, body), "utf-8")


def main(argv: list[str] | None, *, doc: str, start: str, end: str, body: Callable[[], str]) -> int:
    """Print ``body()``; ``--write``: put it in README.md; ``--check``: 1 when README.md differs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the block in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md differs")
    args = parser.parse_args(argv)
    text = body()
    if args.write:
        write(start, end, text)
    elif args.check:
        readme = README.read_text(encoding="utf-8")
        if replaced(readme, start, end, text) != readme:
            script = Path(sys.argv[0]).name
            print(f"README.md: the block {start!r} is stale: run "
                  f"python benchmarks/{script} --write", file=sys.stderr)  # fmt: skip
            return 1
    else:
        print(text)
    return 0
