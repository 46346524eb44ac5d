"""``d2lopt train``: the course's standard training run (:func:`d2lopt.fit` behind flags)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import ParamError, UsageError, writable_dir
from ..flags import (
    CONFIG_FLAGS,
    add_config_flags,
    config_from_args,
    dashed,
    positive_int,
)

# parameter (TrainConfig field, fit/fashion_mnist argument) -> the flag that sets it
FLAGS: dict[str, str] = {
    **CONFIG_FLAGS,
    **dashed("resume", "n_train", "n_test"),
    "out_dir": "--out",
    "source": "--data",
}


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the course model; writes metrics.json, TensorBoard events, checkpoints",
        description="The course's standard training run. SIGINT/SIGTERM save a checkpoint; "
        "--resume continues it exactly.",
    )
    add_config_flags(p)
    g = p.add_argument_group("run")
    # fmt: off
    g.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="the course model to train (default: %(default)s)")
    g.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto",
                   help="FashionMNIST source: real download, the offline synthetic stand-in, "
                   "or auto (default: %(default)s)")
    g.add_argument("--n-train", type=positive_int, default=None,
                   help="use the first N training samples (default: all 60000)")
    g.add_argument("--n-test", type=positive_int, default=None,
                   help="use the first N test samples (default: all 10000)")
    g.add_argument("--out", default="runs/train",
                   help="output folder: metrics.json, tb/, checkpoint.pt (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint is in --out")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: on in a terminal)")
    # fmt: on
    p.set_defaults(run=run, flags=FLAGS)


def _datasets(args: argparse.Namespace) -> list:
    """Train and test sets; raises ParamError naming ``n_train``/``n_test``/``source``."""
    from torch.utils.data import TensorDataset

    from ..data import fashion_mnist

    sets = []
    for train, n in ((True, args.n_train), (False, args.n_test)):
        try:
            images, labels, _ = fashion_mnist(train, source=args.data, n=n)
        except ParamError as exc:  # fashion_mnist's `n` is this split's --n-train/--n-test
            if exc.param != "n":
                raise
            raise exc.renamed("n_train" if train else "n_test") from None
        sets.append(TensorDataset(images.float().div_(255), labels))
    return sets


def run(args: argparse.Namespace) -> int:
    import signal

    from ..checkpoint import load_checkpoint
    from ..models import cnn, init_weights, mlp
    from ..train import CHECKPOINT_NAME, TrainingInterrupted, fit, make_loader

    # every check before anything is written: a refused run leaves no --out folder behind
    config = config_from_args(args)
    out = writable_dir(args.out, create=False)
    if args.resume:
        state = load_checkpoint(out / CHECKPOINT_NAME)  # missing/corrupt: ParamError("resume")
        _check_model(state, args.model, out)
    elif (out / CHECKPOINT_NAME).exists():
        raise UsageError(
            f"--out: {out} already holds a checkpoint; add --resume to continue it, or "
            "choose another --out (nothing was overwritten)"
        )
    sets = _datasets(args)
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
            f"Continue with: {resume_command(getattr(args, 'typed', ['train']))}",
            file=sys.stderr,
        )
        return 128 + exc.signum
    _print_history(history, out)
    return 0


def resume_command(typed: list[str]) -> str:
    """The command that continues an interrupted run: the one typed, with ``--resume``.

    Every flag the run was started with is repeated (the checkpoint continues only with
    the same model, data and settings), so the hint can be copied as it is.

    Example:
        >>> resume_command(["train", "--model", "cnn", "--out", "runs/my cnn"])
        "d2lopt train --model cnn --out 'runs/my cnn' --resume"
    """
    return shlex.join(["d2lopt", *(w for w in typed if w != "--resume"), "--resume"])


def _check_model(state: dict, model: str, out: Path) -> None:
    """Refuse, naming ``--model``, a checkpoint of the other course model (before any data)."""
    from ..models import cnn, mlp

    saved = state.get("model")
    if not isinstance(saved, dict):  # sharded (FSDP) checkpoints hold no full model
        return
    keys = set(saved)
    for name, build in (("mlp", mlp), ("cnn", cnn)):
        if name != model and keys == set(build().state_dict()):
            raise UsageError(
                f"--model: the checkpoint in {out} was trained with --model {name}; "
                f"use --model {name} to continue it, or a new --out"
            )


def _print_history(history: list[dict], out: Path) -> None:
    print(f"{'epoch':>5} {'train_loss':>10} {'test_loss':>10} {'test_acc':>8} {'samples/s':>10}")
    for r in history:
        tl = "-" if r["test_loss"] is None else f"{r['test_loss']:.4f}"
        ta = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        speed = r["samples_per_s"]
        print(f"{r['epoch']:>5} {r['train_loss']:>10.4f} {tl:>10} {ta:>8} {speed:>10.0f}")
    print(f"metrics: {out / 'metrics.json'}; TensorBoard: tensorboard --logdir {out / 'tb'}")
