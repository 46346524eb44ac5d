"""Show the lines that matter, not the whole source (``07_cpu_to_gpu``, ``10_ddp``).

A lesson that prints a 100-line function teaches scrolling. These helpers print a short
excerpt under the name of the module it comes from (the learner can open the file for the
rest), and a program next to its corrected version as a diff: the changed lines only.
Both read the source that runs (``inspect``), so what the learner sees is never a copy that
drifted from the code.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

__all__ = ["diff", "excerpt"]


def _where(obj: Any) -> str:
    """``module.qualname (path relative to the package root)``, for the excerpt's header."""
    name = f"{obj.__module__}.{obj.__qualname__}"
    try:
        path = Path(inspect.getsourcefile(obj) or "")
    except TypeError:  # a built-in has no source file
        return name
    top = obj.__module__.split(".")[0]
    parts = path.parts
    rel = Path(*parts[parts.index(top) :]) if top in parts else Path(path.name)
    return f"{name} ({rel.as_posix()})"


def excerpt(
    source: Any,
    *,
    start: str | None = None,
    stop: str | None = None,
    last: str | None = None,
    name: str | None = None,
) -> str:
    """A few lines of ``source`` under a header naming where they come from.

    The header names the module and file, not line numbers: an edit elsewhere in the file
    does not change the excerpt a notebook checks.

    Args:
        source: a function, class or method (its source is read with ``inspect``), or the
            text of a file (then pass ``name``).
        start: the excerpt begins at the first line containing this text (default: the
            first line of code after the signature and docstring, for an object; the first
            line, for text).
        stop: the excerpt ends before the first line after ``start`` containing this text.
        last: the excerpt ends with the first line after ``start`` containing this text.
        name: the header for text (a file name); objects name themselves.

    Raises:
        ValueError: ``start``, ``stop`` or ``last`` not found, both ``stop`` and ``last``
            given, or text without ``name``.

    Example:
        >>> print(excerpt("a = 1\\nb = 2\\nc = 3\\n", name="f.py", start="b =", last="b ="))
        # f.py
        b = 2
    """
    if stop is not None and last is not None:
        raise ValueError("stop, last: give one (stop: before that line; last: through it)")
    if isinstance(source, str):
        if name is None:
            raise ValueError("name: a text excerpt needs the file name for its header")
        lines, where = source.splitlines(), name
    else:
        lines = [ln.rstrip("\n") for ln in inspect.getsourcelines(source)[0]]
        where = _where(source)
    first = _find(lines, start, 0, "start") if start else _body(source, lines)
    end = len(lines)
    if stop is not None:
        end = _find(lines, stop, first + 1, "stop")
    elif last is not None:
        end = _find(lines, last, first, "last") + 1
    body = lines[first:end]
    while body and not body[-1].strip():
        body.pop()
    indent = min((len(ln) - len(ln.lstrip()) for ln in body if ln.strip()), default=0)
    return "\n".join([f"# {where}", *(ln[indent:] for ln in body)])


def _find(lines: list[str], text: str, begin: int, arg: str) -> int:
    for i in range(begin, len(lines)):
        if text in lines[i]:
            return i
    raise ValueError(f"{arg}: {text!r} is not in the source (after line {begin + 1})")


def _body(source: Any, lines: list[str]) -> int:
    """Index of the first line after an object's signature and docstring (0 for text)."""
    if isinstance(source, str):
        return 0
    i = 0
    while not lines[i].rstrip().endswith(":"):  # the signature may span several lines
        i += 1
    i += 1
    doc = lines[i].strip() if i < len(lines) else ""
    if doc[:3] in ('"""', "'''"):
        quote = doc[:3]
        if doc.count(quote) < 2 or len(doc) == 3:
            i += 1
            while quote not in lines[i]:
                i += 1
        i += 1
    return i


def diff(before: str, after: str, *, before_name: str, after_name: str, context: int = 0) -> str:
    """The lines ``after`` changes in ``before``, as a unified diff (``-`` old, ``+`` new).

    ``context`` unchanged lines are kept around each change (0: only the changes and their
    ``@@`` line numbers). Taught in ``10_ddp``: the article's script next to the fixed one.
    """
    return "\n".join(
        line.rstrip("\n")
        for line in difflib.unified_diff(
            before.splitlines(),
            after.splitlines(),
            fromfile=before_name,
            tofile=after_name,
            n=context,
            lineterm="",
        )
    )
