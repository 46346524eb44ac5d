"""The command line's shared vocabulary: value types, TrainConfig's flags, the --out check.

``d2lopt train`` and the DDP program (``python -m d2lopt.ddp``, ``d2lopt ddp``) take the same
TrainConfig flags; :func:`add_config_flags` generates them from the fields' metadata
(:mod:`d2lopt.config`), so a setting's help, type and accepted values are written once.
The modules that contribute a sub-command (``ladder``, ``tuning``, ``ddp``) take their value
types and the output-folder check from here, never from :mod:`d2lopt.cli`, which imports
them. Nothing here imports PyTorch: ``d2lopt --help`` answers without loading it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, NoReturn

from .config import TrainConfig
from .errors import UsageError

__all__ = [
    "CONFIG_FLAGS",
    "OneLineParser",
    "add_config_flag",
    "add_config_flags",
    "check_out_dir",
    "config_from_args",
    "dashed",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_float",
    "writable_dir",
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


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise :class:`UsageError` unless ``path`` is, or can become, a writable folder.

    Creates nothing: a run that fails validation later leaves no empty folder behind.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"{flag}: {out} is a file, not a folder; give a folder path (it is created "
            "if missing), or move the file away"
        )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"{flag}: {parent} is a file, so {out} cannot be created inside it; "
            "choose a folder path that does not go through a file"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write to {parent} (permission denied); choose a "
                         "writable folder")  # fmt: skip
    return out


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``path`` if needed and prove it is writable, or raise :class:`UsageError`."""
    out = check_out_dir(path, flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".d2lopt-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"{flag}: cannot write to {out} ({exc.strerror or exc}); choose a writable folder"
        ) from None
    return out


# ------------------------------------------------------------------------------ DDP program
STRATEGIES = ("ddp", "fsdp")  # dist.sharding.STRATEGIES (tests/test_cli.py checks they agree)

_DDP_HELP = {
    "batch_size": "samples per batch on each rank; global batch = ranks x this x --accumulate",
    "device": "auto, cpu or cuda (rank r of a node takes cuda:r); MPS has no distributed backend",
}


class RankParser(OneLineParser):
    """One-line argparse errors, printed by rank 0 only (every rank parses the same argv)."""

    def error(self, message: str) -> NoReturn:
        if os.environ.get("RANK", "0") != "0":
            self.exit(2)
        super().error(message)


def add_program_flags(p: argparse.ArgumentParser) -> None:
    """The DDP program's flags (``python -m d2lopt.ddp``; ``d2lopt ddp`` shows and checks them).

    The TrainConfig flags are :func:`add_config_flags`' (``--batch-size`` is per rank here).
    """
    add_config_flags(p, help=_DDP_HELP)
    g = p.add_argument_group("data-parallel run")
    add = g.add_argument
    # fmt: off
    add("--model", choices=("mlp", "cnn"), default="mlp", help="the course model (default: mlp)")
    add("--strategy", choices=STRATEGIES, default="ddp",
        help="ddp: every rank holds the whole model; fsdp: each rank holds 1/N of the "
        "parameters, gradients and optimizer state (fully_shard), sharded checkpoints "
        "(default: ddp)")
    add("--data", choices=("auto", "real", "synthetic"), default="auto",
        help="FashionMNIST source (default: auto); synthetic with --n-train is the fastest")
    add("--n-train", type=positive_int, help="training samples (default: all 60000)")
    add("--n-test", type=positive_int, help="test samples (default: all 10000)")
    add("--accumulate", type=positive_int, default=1,
        help="micro-batches per optimizer step; all but the last skip the all-reduce (no_sync)")
    add("--backend", choices=("auto", "gloo", "nccl"), default="auto",
        help="process-group backend (default auto: nccl on CUDA, gloo on CPU)")
    add("--bucket-cap-mb", type=positive_float, default=25.0,
        help="DDP gradient bucket size in MiB (default: 25)")
    add("--threads", type=non_negative_int, default=0,
        help="CPU threads per rank; 0: OMP_NUM_THREADS if set, else cores / local processes")
    add("--out", help="folder for checkpoint.pt and metrics.json, written by rank 0")
    add("--checkpoint-every", type=non_negative_int, default=0,
        help="also checkpoint every N optimizer steps (default 0: at epoch ends only)")
    add("--resume", action="store_true",
        help="continue from --out/checkpoint.pt (automatic after a torchrun restart)")
    add("--save", help="rank 0 writes the final model state_dict to this file")
    add("--timeout", type=positive_float, help="seconds a collective waits (default: 600)")
    add("--quiet", action="store_true", help="no log lines (results go to --out)")
    add("--crash-at-step", type=positive_int,
        help="fault injection: rank --crash-rank SIGKILLs itself after this global step, on "
        "the first attempt only (to test torchrun --max-restarts)")
    add("--crash-rank", type=non_negative_int, default=1, help="see --crash-at-step (default: 1)")
    # fmt: on


def build_program_parser() -> argparse.ArgumentParser:
    """``python -m d2lopt.ddp``'s parser (what each torchrun worker parses)."""
    p = RankParser(
        prog="python -m d2lopt.ddp",
        description="Data-parallel training of the course model; launch with torchrun.",
    )
    add_program_flags(p)
    return p


# flags of the DDP program that a ParamError's parameter may name
PROGRAM_FLAGS: dict[str, str] = {**CONFIG_FLAGS, "out_dir": "--out", "source": "--data"}
