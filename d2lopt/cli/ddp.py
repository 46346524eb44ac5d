"""``d2lopt ddp``: check the DDP program's flags, then hand them to ``torchrun``.

The launch flags (``--nproc-per-node``, ``--nnodes``, rendezvous) are this command's; every
other argument is the program's (:func:`d2lopt.dist.flags.add_program_flags`). They are checked
here, with the program's own parser and :func:`d2lopt.dist.ddp.validate`, so a bad flag fails
before any process starts; then torchrun (``python -m torch.distributed.run``) runs
``-m d2lopt.ddp`` with the user's own program arguments, exactly as typed.

Two refusals protect the machine and the learner (issue 22): more CPU processes than usable
cores, or more estimated memory than is available, would freeze a laptop, so they are
refused before any rank starts unless ``--oversubscribe`` says so; ``--nproc-per-node gpu``
without CUDA is refused in one line. torchrun then runs under
:mod:`d2lopt.cli.torchrun_output`: the ranks' own messages pass through as they come;
torchrun's ``ChildFailedError`` report of a failure is withheld (shown with
``--torchrun-report`` or ``D2LOPT_TORCHRUN_REPORT=1``), and the ranks' first error is
repeated last, so the line that says what to fix is the first and the last one read.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from ..dist.flags import PROGRAM_FLAGS, add_program_flags
from ..errors import UsageError
from ..flags import non_negative_int, positive_int


def _nproc(text: str) -> str:
    if text in ("auto", "cpu", "gpu"):
        return text
    return str(positive_int(text))


def _nnodes(text: str) -> str:
    lo, _, hi = text.partition(":")
    try:
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX, got {text!r}")
    return text


def _add_launch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("launch (passed to torchrun)")
    add = g.add_argument
    # fmt: off
    add("--nproc-per-node", type=_nproc, default="1",
        help="processes on this node: N, or gpu/cpu/auto (default: 1)")
    add("--nnodes", type=_nnodes, default="1",
        help="nodes: N, or MIN:MAX for an elastic job (default: 1)")
    add("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (needed for several nodes)")
    add("--rdzv-id", default="d2lopt", help="job id, the same on every node (default: d2lopt)")
    add("--local-addr", help="this node's address as the others reach it (torchrun's option)")
    add("--max-restarts", type=non_negative_int, default=0,
        help="restarts of the worker group after a failure (default: 0)")
    add("--print-command", action="store_true", help="print the torchrun command, run nothing")
    add("--oversubscribe", action="store_true",
        help="start the CPU processes even when they exceed this machine's usable cores or "
        "its available memory (refused by default: the machine would freeze)")
    add("--torchrun-report", action="store_true",
        help="on a failure, also show torchrun's own ChildFailedError report (also: "
        "D2LOPT_TORCHRUN_REPORT=1)")
    # fmt: on


def program_argv(argv: Sequence[str]) -> list[str]:
    """The program's arguments of ``d2lopt ddp ARGV``: ARGV without the launch flags.

    Example:
        >>> program_argv(["--nproc-per-node", "2", "--epochs", "3", "--print-command"])
        ['--epochs', '3']
    """
    launch = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_launch_flags(launch)
    return launch.parse_known_args(list(argv))[1]


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``d2lopt ddp``: validate the flags, then hand over to ``torchrun``."""
    p = subparsers.add_parser(
        "ddp",
        help="data-parallel training on N processes/GPUs, launched by torchrun",
        description="Validate the flags, then exec torchrun (python -m torch.distributed.run) "
        "with `-m d2lopt.ddp`. Single node: --nproc-per-node N. Several nodes: the same "
        "command on every node with --nnodes, --node-rank and --rdzv-endpoint HOST:PORT.",
        allow_abbrev=False,  # a launch flag is recognised by its full name only
    )
    _add_launch_flags(p)
    add_program_flags(p)
    parse = p.parse_known_args

    def keep_argv(args=None, namespace=None):
        # the arguments as typed: torchrun gets the program's part of them, unchanged
        ns, extras = parse(args, namespace)
        ns.argv = list(sys.argv[1:] if args is None else args)
        return ns, extras

    p.parse_known_args = keep_argv  # the sub-command action calls it with ddp's arguments
    p.set_defaults(run=run, flags=PROGRAM_FLAGS)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..dist.ddp import validate
    from ..distributed import torchrun_command, torchrun_env

    if args.nnodes != "1" and args.rdzv_endpoint is None:
        raise UsageError("--rdzv-endpoint: several nodes need HOST:PORT of the rendezvous")
    if args.rdzv_endpoint is not None and ":" not in args.rdzv_endpoint:
        raise UsageError(f"--rdzv-endpoint: expected HOST:PORT, got {args.rdzv_endpoint!r}")
    if args.nproc_per_node == "gpu" and not torch.cuda.is_available():
        raise UsageError(
            "--nproc-per-node: gpu starts one process per CUDA GPU, and this machine has none; "
            "use --nproc-per-node N --device cpu (N at most its cores)"
        )
    if args.device == "cuda" and args.nproc_per_node.isdigit():
        gpus = torch.cuda.device_count()  # counts devices without initialising CUDA
        if int(args.nproc_per_node) > gpus:
            raise UsageError(
                f"--nproc-per-node: {args.nproc_per_node} processes but {gpus} GPU(s); "
                f"use --nproc-per-node {max(gpus, 1)} or --device cpu"
            )
    if not (args.print_command or args.oversubscribe):
        check_capacity(args.nproc_per_node, args.device, args.n_train, args.n_test)
    validate(args)  # the last check (AMP too, in TrainConfig): it creates --out if all hold
    cmd = torchrun_command(
        "d2lopt.ddp",
        program_argv(args.argv),
        nproc_per_node=args.nproc_per_node,
        nnodes=args.nnodes,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
        max_restarts=args.max_restarts,
        extra=["--local-addr", args.local_addr] if args.local_addr else (),
    )
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    sys.stdout.flush()
    if args.torchrun_report or os.environ.get("D2LOPT_TORCHRUN_REPORT", "") not in ("", "0"):
        os.execve(cmd[0], cmd, torchrun_env())  # torchrun replaces this process, all its output
    # a fresh interpreter that imports no PyTorch (this one may hold a CUDA context from
    # check_amp) runs torchrun and filters its stderr: see d2lopt.cli.torchrun_output
    supervisor = [sys.executable, "-m", "d2lopt.cli.torchrun_output", *cmd]
    os.execve(supervisor[0], supervisor, torchrun_env())


# ------------------------------------------------------------------------------ capacity
FASHION_MNIST_SAMPLES = (60_000, 10_000)  # the program's data when --n-train/--n-test are unset


def cpu_ranks(nproc: str, device: str) -> int | None:
    """How many CPU processes torchrun would start on this node; None for GPU ranks.

    ``cpu`` means ``os.cpu_count()`` and ``auto`` the GPUs, or else the CPUs, as torchrun
    reads them (``torch.distributed.run.determine_local_world_size``).
    """
    import torch

    cuda = torch.cuda.is_available()
    if nproc == "gpu" or device == "cuda" or (device == "auto" and cuda):
        return None
    if nproc == "cpu" or (nproc == "auto" and not cuda):
        return os.cpu_count() or 1
    return torch.cuda.device_count() if nproc == "auto" else int(nproc)


def rank_memory(n_train: int | None, n_test: int | None) -> int:
    """Bytes one CPU rank of the DDP program needs, at least: an interpreter with PyTorch
    imported (this process's own pages, measured now: the shared libraries are loaded once
    for all ranks) plus its FashionMNIST splits as uint8 and float32 (about 0.55 GB in all
    for the full data set, where issue 22 measured about 0.6 GB per rank).
    """
    import psutil

    samples = (n_train or FASHION_MNIST_SAMPLES[0]) + (n_test or FASHION_MNIST_SAMPLES[1])
    return psutil.Process().memory_full_info().uss + samples * 28 * 28 * (1 + 4)


def check_capacity(nproc: str, device: str, n_train: int | None, n_test: int | None) -> None:
    """Refuse, naming ``--nproc-per-node``, CPU ranks this machine cannot hold.

    N CPU processes on fewer cores only wait for each other, and N processes whose memory
    exceeds what is available swap the machine to a standstill (64 ranks of ~0.6 GB on a
    24 GB laptop froze it: issue 22). Both are decided here, before any rank starts.
    """
    import psutil

    from .. import envinfo

    n = cpu_ranks(nproc, device)
    if n is None:
        return
    cores, per_rank = envinfo.usable_cores(), rank_memory(n_train, n_test)
    available = psutil.virtual_memory().available
    if n <= cores and n * per_rank <= available:
        return
    fits = max(1, min(cores, available // per_rank))
    gb = 1024**3
    raise UsageError(
        f"--nproc-per-node: {n} CPU processes need {n} cores and about "
        f"{n * per_rank / gb:.1f} GB; this machine has {cores} usable core(s) and "
        f"{available / gb:.1f} GB available, so it would freeze; use --nproc-per-node {fits} "
        "(or add --oversubscribe to start them anyway)"
    )
