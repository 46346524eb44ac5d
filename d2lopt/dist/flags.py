"""The DDP program's flags: what ``python -m d2lopt.ddp`` parses on every rank (``10_ddp``).

``d2lopt ddp`` (:mod:`d2lopt.cli.ddp`) shows and checks the same flags before it starts
torchrun, so they live here, apart from the program: nothing here imports PyTorch, and
``d2lopt --help`` answers without loading it. The TrainConfig flags are the core's shared
vocabulary (:func:`d2lopt.flags.add_config_flags`), as ``d2lopt train`` has them.
"""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

from ..flags import (
    CONFIG_FLAGS,
    OneLineParser,
    add_config_flags,
    non_negative_int,
    positive_float,
    positive_int,
)
from ..sharding import STRATEGIES

__all__ = ["PROGRAM_FLAGS", "RankParser", "add_program_flags", "build_parser"]

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


def build_parser() -> argparse.ArgumentParser:
    """``python -m d2lopt.ddp``'s parser (what each torchrun worker parses).

    Its flags are :func:`add_program_flags`': the TrainConfig flags generated from the
    fields' metadata, as ``d2lopt train`` has them, plus the data-parallel ones.
    """
    p = RankParser(
        prog="python -m d2lopt.ddp",
        description="Data-parallel training of the course model; launch with torchrun.",
    )
    add_program_flags(p)
    return p


# flags of the DDP program that a ParamError's parameter may name
PROGRAM_FLAGS: dict[str, str] = {**CONFIG_FLAGS, "out_dir": "--out", "source": "--data"}
