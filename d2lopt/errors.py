"""Bad input, said once: the parameter it is about, the problem and the fix.

A :class:`ParamError` carries the *name* of the parameter it is about, so the command line
can name the flag that sets it (:meth:`ParamError.usage`) without reading the message text,
and a genuine bug (any other ``ValueError`` or ``TypeError``) still shows its traceback.
The message has one wording, about the parameter (``amp: 'bf16' cannot run on ...; use
'fp16'``); the command line puts the flag in front of it instead of the name.

The checks below are the package's one way to refuse a bad argument (``check_int`` ...).
This module imports nothing heavy: the command line imports it before deciding whether it
needs PyTorch at all.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

__all__ = [
    "ParamError",
    "ParamTypeError",
    "ParamUnavailable",
    "UsageError",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "writable_dir",
]


class UsageError(Exception):
    """A bad command line, already worded in flags: reported as one line, exit code 2."""


class ParamError(ValueError):
    """A bad value for parameter ``param``: ``str()`` is ``"[owner.]param: problem"``.

    Its ``args`` are its fields, so it pickles across processes intact (DataLoader workers,
    spawn) with no ``__reduce__`` of its own.

    Example:
        >>> err = ParamError("lr", "must be > 0, got 0", "TrainConfig")
        >>> str(err), err.param, isinstance(err, ValueError)
        ('TrainConfig.lr: must be > 0, got 0', 'lr', True)
    """

    def __init__(self, param: str, problem: str, owner: str | None = None) -> None:
        super().__init__(param, problem, owner)
        self.param, self.problem, self.owner = param, problem, owner

    def __str__(self) -> str:
        return f"{self.owner + '.' if self.owner else ''}{self.param}: {self.problem}"

    def with_owner(self, owner: str) -> ParamError:
        """The same error, reported as a field of ``owner`` (e.g. ``TrainConfig``)."""
        return type(self)(self.param, self.problem, owner)

    def renamed(self, param: str) -> ParamError:
        """The same problem about another parameter (a caller's name for the same value)."""
        return type(self)(param, self.problem, self.owner)

    def usage(self, flags: Mapping[str, str]) -> UsageError:
        """This error on the command line: the flag that sets ``param``, then the problem."""
        flag = flags.get(self.param, "--" + self.param.replace("_", "-"))
        return UsageError(f"{flag}: {' '.join(self.problem.split())}")


class ParamTypeError(ParamError, TypeError):
    """A :class:`ParamError` about the *kind* of object given; also a ``TypeError``."""


class ParamUnavailable(RuntimeError):
    """A valid value that this machine cannot serve now (``source='real'`` offline).

    A ``RuntimeError`` (the value is not wrong, the world is), not a ParamError, so that
    no caller renaming a bad value's parameter renames it; the command line still names
    the flag to change, with :meth:`ParamError.usage`.
    """

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(param, problem)
        self.param, self.problem = param, problem

    def __str__(self) -> str:
        return self.problem

    usage = ParamError.usage


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """A :class:`ParamTypeError` for a non-int (bools included), a ParamError outside the range."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamTypeError(name, f"must be an int {bounds}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ParamError(name, f"must be {bounds}, got {value}")


def check_number(
    name: str, value: object, *, above: float | None = None, below: float | None = None,
    minimum: float | None = None,
) -> None:  # fmt: skip
    """A finite real number (bools refused), ``> above``, ``< below`` and ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamTypeError(name, f"must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ParamError(name, f"must be a finite number, got {value!r}")
    if above is not None and value <= above:
        raise ParamError(name, f"must be > {above}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParamError(name, f"must be >= {minimum}, got {value!r}")
    if below is not None and value >= below:
        raise ParamError(name, f"must be < {below}, got {value!r}")


def check_bool(name: str, value: object) -> None:
    """``True`` or ``False`` only (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ParamTypeError(name, f"must be True or False, got {value!r}")


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise ParamError(name, f"must be one of {tuple(choices)}, got {value!r}")


def writable_dir(path: str | os.PathLike, param: str = "out_dir", *, create: bool = True) -> Path:
    """``path`` as a folder this process can write, or a ParamError naming ``param``.

    ``create=False`` only checks that it is, or can become, one and creates nothing: a run
    refused later leaves no empty folder behind. ``create=True`` makes it and proves a file
    can be written there (fail now, not at the first checkpoint an epoch from now).
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ParamError(param, f"{out} is a file, not a folder; give a folder path (it is "
                         "created if missing), or move the file away")  # fmt: skip
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParamError(param, f"{parent} is a file, so {out} cannot be created inside it; "
                         "choose a folder path that does not go through a file")  # fmt: skip
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParamError(param, f"cannot write to {parent} (permission denied); choose a "
                         "writable folder")  # fmt: skip
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out):
                pass
        except OSError as exc:
            raise ParamError(
                param, f"cannot write to {out} ({exc.strerror or exc}); choose a writable folder"
            ) from None
    return out
