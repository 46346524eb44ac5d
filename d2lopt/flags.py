"""The flags' shared vocabulary: value types and TrainConfig's flags.

``d2lopt train`` (:mod:`d2lopt.cli`) and the DDP program that torchrun starts
(:mod:`d2lopt.dist.ddp`, which parses its own argv on every rank) take the same TrainConfig
flags; :func:`add_config_flags` generates them from the fields' metadata
(:mod:`d2lopt.config`), so a setting's help, type and accepted values are written once.
Because a program of ``dist/`` needs it and layers import downward only, it sits in the
core, below both. Nothing here imports PyTorch: ``d2lopt --help`` answers without loading it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, NoReturn

from .config import TrainConfig

__all__ = [
    "CONFIG_FLAGS",
    "OneLineParser",
    "add_config_flag",
    "add_config_flags",
    "config_from_args",
    "dashed",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_float",
]


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line (argparse prints the whole usage block otherwise), and a pointer to --help
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _value_type(
    name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str, must: str
) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then check it; each error says what to write."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{must}, got {text}")
        return value

    parse.__name__ = parse.__qualname__ = name  # argparse and _TYPES know a type by its name
    return parse


positive_int = _value_type(
    "positive_int", int, lambda v: v >= 1, "a positive integer", "must be >= 1"
)
non_negative_int = _value_type(
    "non_negative_int", int, lambda v: v >= 0, "an integer >= 0", "must be >= 0"
)
positive_float = _value_type(
    "positive_float",
    float,
    lambda v: 0 < v < float("inf"),  # False for nan too
    "a positive number",
    "must be a finite number > 0",
)
unit_float = _value_type(
    "unit_float", float, lambda v: 0 <= v < 1, "a number in [0, 1)", "must be in [0, 1)"
)


_TYPES = {f.__name__: f for f in (positive_int, non_negative_int, positive_float, unit_float)}


def dashed(*params: str) -> dict[str, str]:
    """``{param: flag}`` for parameters whose flag is their name, dashed (``n_train``:
    ``--n-train``), the spelling :meth:`~d2lopt.errors.ParamError.usage` assumes too."""
    return {p: "--" + p.replace("_", "-") for p in params}


# config field -> its flag (``--epochs`` sets num_epochs; the rest are the field's name)
CONFIG_FLAGS: dict[str, str] = {
    f.name: f.metadata.get("flag", "--" + f.name.replace("_", "-")) for f in fields(TrainConfig)
}


def add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    title: str = "training configuration (TrainConfig)",
    help: dict[str, str] | None = None,
) -> None:
    """One flag per :class:`~d2lopt.TrainConfig` field, from the field's metadata.

    ``help`` replaces the help text of some fields where a program reads them differently
    (the DDP program's ``batch_size`` is per rank).
    """
    group = parser.add_argument_group(title)
    for f in fields(TrainConfig):
        add_config_flag(group, f.name, help=(help or {}).get(f.name))


def add_config_flag(parser: Any, name: str, *, help: str | None = None) -> None:
    """The flag of the one TrainConfig field ``name`` (``--device`` for ``ladder`` too)."""
    f = next(f for f in fields(TrainConfig) if f.name == name)
    meta, default = f.metadata, f.default
    assert default is not MISSING, f.name  # every field has a default
    text = help or meta["help"]
    kwargs: dict[str, Any] = {"dest": f.name, "default": default}
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        if "%(default)" not in text and "(default:" not in text:
            text += " (default: %(default)s)"
        if "type" in meta:
            kwargs["type"] = _TYPES[meta["type"]]
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
    parser.add_argument(CONFIG_FLAGS[f.name], help=text, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~d2lopt.TrainConfig` the parsed flags describe (raises ParamError)."""
    return TrainConfig(**{k: getattr(args, k) for k in TrainConfig.field_names()})
