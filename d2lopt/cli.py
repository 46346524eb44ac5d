"""The ``d2lopt`` command: ``env``, ``train`` and the experiment commands.

Every command has ``--help``. A bad flag or value ends with exit code 2 and one line on
stderr that names the flag and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser", "positive_int", "non_negative_int", "positive_float"]


class UsageError(Exception):
    """A bad command-line value: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line (argparse prints the whole usage block otherwise), and a pointer to --help
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``path`` if needed and prove it is writable, or raise :class:`UsageError`."""
    out = Path(path)
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


# ------------------------------------------------------------------------------------- env
def _add_env(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "env",
        help="hardware/software report and recommended starting settings",
        description="Print versions, devices, cores, bf16/TF32 support, and starting settings.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(args: argparse.Namespace) -> int:
        from .envinfo import environment_report, format_report, recommend_settings

        report = environment_report()
        recommended = recommend_settings(report)
        if args.json:
            print(json.dumps({"report": report, "recommended": recommended}, indent=2))
        else:
            print(format_report(report, recommended))
        return 0

    p.set_defaults(run=run)
    return run


# ------------------------------------------------------------------------------------- train
def add_train_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~d2lopt.TrainConfig` field (shared by ``train`` and ``ddp``)."""
    from .config import TrainConfig
    from .precision import AMP_MODES

    d = TrainConfig()
    g = p.add_argument_group("training configuration (TrainConfig)")
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=d.num_epochs,
        dest="num_epochs",
        help="passes over the training set (default: %(default)s)",
    )
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help="samples per batch (default: %(default)s)",
    )
    g.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=d.num_workers,
        help="DataLoader worker processes; 0 loads in the main process (default: %(default)s)",
    )
    g.add_argument(
        "--prefetch-factor",
        type=positive_int,
        default=d.prefetch_factor,
        help="batches loaded ahead per worker; needs --num-workers > 0 (default: PyTorch's 2)",
    )
    g.add_argument(
        "--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)"
    )
    g.add_argument(
        "--lr", type=positive_float, default=d.lr, help="learning rate (default: %(default)s)"
    )
    g.add_argument(
        "--momentum",
        type=unit_float,
        default=d.momentum,
        help="SGD momentum (default: %(default)s)",
    )
    g.add_argument(
        "--pin-memory",
        action=argparse.BooleanOptionalAction,
        default=d.pin_memory,
        help="page-locked batches for async host-to-GPU copies (CUDA only)",
    )
    g.add_argument(
        "--persistent-workers",
        action=argparse.BooleanOptionalAction,
        default=d.persistent_workers,
        help="keep loader workers between epochs",
    )
    g.add_argument(
        "--non-blocking",
        action=argparse.BooleanOptionalAction,
        default=d.non_blocking,
        help="asynchronous .to(device) copies",
    )
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=d.amp,
        help="automatic mixed precision (default: %(default)s)",
    )
    g.add_argument(
        "--eval-every",
        type=positive_int,
        default=d.eval_every,
        help="evaluate every N epochs and after the last (default: %(default)s)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=d.channels_last,
        help="NHWC memory format for the CNN",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d.compile,
        help="wrap the model in torch.compile",
    )
    g.add_argument("--seed", type=non_negative_int, default=d.seed,
                   help="seed for order, init and workers (default: %(default)s)")  # fmt: skip


def config_from_args(args: argparse.Namespace):
    from .config import TrainConfig

    return TrainConfig(**{k: getattr(args, k) for k in TrainConfig.field_names()})


_FIELD_FLAGS = {"num_epochs": "--epochs"}
# fit()/load_checkpoint() parameters that a `train` flag sets
_PARAM_FLAGS = {"resume": "--resume", "out_dir": "--out"}


def _flag_error(exc: ValueError) -> UsageError:
    """Map ``TrainConfig.<field>: problem`` onto the CLI flag that sets the field."""
    text = " ".join(str(exc).split())  # one line, whatever the message
    if text.startswith("TrainConfig."):
        field, _, problem = text[len("TrainConfig.") :].partition(": ")
        flag = _FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))
        return UsageError(f"{flag}: {problem}")
    param, _, problem = text.partition(": ")
    if param in _PARAM_FLAGS:
        return UsageError(f"{_PARAM_FLAGS[param]}: {problem}")
    return UsageError(text)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the course model; writes metrics.json, TensorBoard events, checkpoints",
        description="The course's standard training run. SIGINT/SIGTERM save a checkpoint; "
        "--resume continues it exactly.",
    )
    add_train_config_flags(p)
    g = p.add_argument_group("run")
    g.add_argument(
        "--model",
        choices=("mlp", "cnn"),
        default="mlp",
        help="the course model to train (default: %(default)s)",
    )
    g.add_argument(
        "--data",
        choices=("auto", "real", "synthetic"),
        default="auto",
        help="FashionMNIST source: real download, the offline synthetic stand-in, "
        "or auto (default: %(default)s)",
    )
    g.add_argument(
        "--n-train",
        type=positive_int,
        default=None,
        help="use the first N training samples (default: all 60000)",
    )
    g.add_argument(
        "--n-test",
        type=positive_int,
        default=None,
        help="use the first N test samples (default: all 10000)",
    )
    g.add_argument(
        "--out",
        default="runs/train",
        help="output folder: metrics.json, tb/, checkpoint.pt (default: %(default)s)",
    )
    g.add_argument(
        "--resume", action="store_true", help="continue the run whose checkpoint is in --out"
    )
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: on in a terminal)")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        import signal

        from .checkpoint import load_checkpoint
        from .data import fashion_mnist
        from .models import cnn, init_weights, mlp
        from .train import CHECKPOINT_NAME, TrainingInterrupted, fit, make_loader

        try:
            config = config_from_args(args)
        except ValueError as exc:
            raise _flag_error(exc) from None
        out = Path(args.out)
        if args.resume:
            try:  # fail fast on a missing/corrupt file, before creating anything
                load_checkpoint(out / CHECKPOINT_NAME)
            except ValueError as exc:
                raise _flag_error(exc) from None
        elif (out / CHECKPOINT_NAME).exists():
            raise UsageError(
                f"--out: {out} already holds a checkpoint; add --resume to continue it, or "
                "choose another --out (nothing was overwritten)"
            )
        out = writable_dir(out)
        from torch.utils.data import TensorDataset

        sets = []
        for train, n, flag in ((True, args.n_train, "--n-train"), (False, args.n_test, "--n-test")):
            try:
                images, labels, _ = fashion_mnist(train, source=args.data, n=n)
            except ValueError as exc:  # more samples than the split has
                raise UsageError(f"{flag}: {str(exc).partition(': ')[2]}") from None
            except RuntimeError as exc:  # --data real without a connection
                raise UsageError(f"--data: {exc}") from None
            sets.append(TensorDataset(images.float().div_(255), labels))
        import torch

        torch.manual_seed(config.seed)
        net = mlp() if args.model == "mlp" else cnn()
        net.apply(init_weights)
        try:
            history = fit(
                net,
                make_loader(sets[0], config, train=True),
                make_loader(sets[1], config, train=False),
                config,
                out_dir=out,
                resume=args.resume,
                progress=args.progress,
            )
        except TrainingInterrupted as exc:
            name = signal.Signals(exc.signum).name
            print(
                f"d2lopt train: {name} received; checkpoint saved to {exc.path}. "
                f"Continue with: d2lopt train --out {out} --resume (same flags)",
                file=sys.stderr,
            )
            return 128 + exc.signum
        print(
            f"{'epoch':>5} {'train_loss':>10} {'test_loss':>10} {'test_acc':>8} {'samples/s':>10}"
        )
        for r in history:
            tl = "-" if r["test_loss"] is None else f"{r['test_loss']:.4f}"
            ta = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
            speed = r["samples_per_s"]
            print(f"{r['epoch']:>5} {r['train_loss']:>10.4f} {tl:>10} {ta:>8} {speed:>10.0f}")
        print(f"metrics: {out / 'metrics.json'}; TensorBoard: tensorboard --logdir {out / 'tb'}")
        return 0

    p.set_defaults(run=run)


# ------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="d2lopt",
        description="Measure what makes PyTorch training fast on this machine.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_env(sub)
    _add_train(sub)
    for module in _EXTRA_COMMANDS:
        _import_command(module).add_command(sub)
    return parser


# Modules that contribute a sub-command through ``add_command(subparsers)``.
_EXTRA_COMMANDS: tuple[str, ...] = ("ladder", "tuning", "ddp")


def _import_command(module: str) -> Any:
    import importlib

    return importlib.import_module(f"d2lopt.{module}")


def _version() -> str:
    from . import __version__

    return f"d2lopt {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.error("missing COMMAND, e.g. 'd2lopt env' or 'd2lopt train'")
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"d2lopt {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        # validation errors from the API (config, resume, devices) name the parameter and fix
        if _is_validation_error(exc):
            print(f"d2lopt {args.command}: error: {_flag_error(exc)}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print(f"d2lopt {args.command}: interrupted", file=sys.stderr)
        return 130


def _is_validation_error(exc: BaseException) -> bool:
    # Our validation messages all have the form "<parameter>: <problem>; <fix>".
    head = str(exc).split(":", 1)[0]
    return ":" in str(exc) and " " not in head.strip()


if __name__ == "__main__":
    # run the imported module's main: sub-commands raise d2lopt.cli.UsageError, which is a
    # different class from this __main__ module's copy
    from d2lopt.cli import main as _main

    sys.exit(_main())
