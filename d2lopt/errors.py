"""The two kinds of bad input: a bad argument of the Python API, and a bad command line.

A :class:`ParamError` carries the *name* of the parameter it is about, so the command line
can name the flag that sets it without reading the message text, and a genuine bug (any
other ``ValueError`` or ``TypeError``) still shows its traceback. Its message keeps the
Python API's wording (``TrainConfig.amp: ... use amp='fp16'``); ``cli`` is the same problem
said in flags (``--amp: ... use --amp fp16``), for the places where the two differ.

This module imports nothing heavy: the command line imports it before deciding whether it
needs PyTorch at all.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ParamError", "ParamTypeError", "ParamUnavailable", "UsageError", "check_int"]


class ParamError(ValueError):
    """A bad value for parameter ``param``: ``str()`` is ``"[owner.]param: problem"``.

    Args:
        param: the parameter (or config field) name, e.g. ``"num_workers"``.
        problem: what is wrong and the fix, in the Python API's terms.
        cli: the same, in command-line terms (flags instead of ``name=value``); ``None``
            when ``problem`` already reads right on a command line.
        owner: the class the parameter belongs to (``"TrainConfig"``), shown in ``str()``.

    Example:
        >>> err = ParamError("lr", "must be > 0, got 0", owner="TrainConfig")
        >>> str(err), err.param
        ('TrainConfig.lr: must be > 0, got 0', 'lr')
        >>> isinstance(err, ValueError)
        True
    """

    def __init__(
        self, param: str, problem: str, *, cli: str | None = None, owner: str | None = None
    ) -> None:
        self.param, self.problem, self.cli, self.owner = param, problem, cli, owner
        super().__init__(self._text())

    def _text(self) -> str:
        return f"{self.owner + '.' if self.owner else ''}{self.param}: {self.problem}"

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self):  # pickles across processes (DataLoader workers, spawn) intact
        return (_rebuild, (self.param, self.problem, self.cli, self.owner))

    def with_owner(self, owner: str) -> ParamError:
        """The same error, reported as a field of ``owner`` (e.g. ``TrainConfig``)."""
        return ParamError(self.param, self.problem, cli=self.cli, owner=owner)

    def renamed(self, param: str) -> ParamError:
        """The same problem about another parameter (a caller's name for the same value)."""
        return ParamError(param, self.problem, cli=self.cli, owner=self.owner)

    def usage(self, flags: Mapping[str, str]) -> UsageError:
        """This error on the command line: the flag that sets ``param``, the ``cli`` text."""
        flag = flags.get(self.param, "--" + self.param.replace("_", "-"))
        return UsageError(f"{flag}: {' '.join((self.cli or self.problem).split())}")


def _rebuild(param: str, problem: str, cli: str | None, owner: str | None) -> ParamError:
    return ParamError(param, problem, cli=cli, owner=owner)


class ParamTypeError(ParamError, TypeError):
    """A :class:`ParamError` about the *kind* of object given; also a ``TypeError``."""

    def __reduce__(self):
        return (_rebuild_type, (self.param, self.problem, self.cli, self.owner))


def _rebuild_type(param: str, problem: str, cli: str | None, owner: str | None):
    return ParamTypeError(param, problem, cli=cli, owner=owner)


class ParamUnavailable(RuntimeError):
    """A valid value that this machine cannot serve now (``source='real'`` offline).

    A ``RuntimeError`` (the value is not wrong, the world is), with ``param``, ``problem``
    and ``cli`` as in :class:`ParamError`, so the command line names the flag to change.
    """

    def __init__(self, param: str, problem: str, *, cli: str | None = None) -> None:
        self.param, self.problem, self.cli = param, problem, cli
        super().__init__(problem)

    def __reduce__(self):
        return (_rebuild_unavailable, (self.param, self.problem, self.cli))

    def usage(self, flags: Mapping[str, str]) -> UsageError:
        flag = flags.get(self.param, "--" + self.param.replace("_", "-"))
        return UsageError(f"{flag}: {' '.join((self.cli or self.problem).split())}")


def _rebuild_unavailable(param: str, problem: str, cli: str | None) -> ParamUnavailable:
    return ParamUnavailable(param, problem, cli=cli)


class UsageError(Exception):
    """A bad command line, already worded in flags: reported as one line, exit code 2."""


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """``TypeError`` for a non-int (bools included), a ParamError for ``name`` outside the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ParamError(name, f"must be {bounds}, got {value}")
