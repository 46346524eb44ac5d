"""The article's DDP script, corrected: data-parallel training on torchrun (``10_ddp``).

Run it on N processes of one machine (N GPUs, or N CPU processes with gloo)::

    torchrun --standalone --nproc-per-node N -m d2lopt.ddp --epochs 2 --batch-size 64 \\
        --seed 0 --save runs/ddp/model.pt

Every rank runs this same program. What differs from the article's script, line by line:
the rank and world come from torchrun's environment (:func:`d2lopt.distributed.setup`); the
backend follows the hardware (NCCL on CUDA, gloo on CPU); each rank owns one device; a
``DistributedSampler`` gives each rank its own shard and ``set_epoch`` reshuffles it every
epoch; only rank 0 logs and writes checkpoints; losses are all-reduced before they are
reported; AMP runs inside DDP. ``--batch-size`` is *per rank*: the global batch is
``world_size x batch_size x accumulate``, and N ranks with batch B follow exactly the
trajectory of one process with batch N*B on the same sample order (``tests/test_ddp.py``).

Checkpoints (``--out DIR``) are atomic and ``weights_only``-loadable. When torchrun
restarts the workers (``--max-restarts``), the program resumes from the last checkpoint of
its run, even with a different number of processes (elastic ``--nnodes MIN:MAX``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from ..checkpoint import CHECKPOINT_NAME, batch_change, check_resume, load_checkpoint
from ..data import fashion_mnist, notice_once, synthetic_fashion_mnist
from ..distributed import (
    Replicas,
    emulate_torchrun,
    exit_rank,
    rank_device,
    setup,
    teardown,
)
from ..errors import ParamError, UsageError, writable_dir
from ..flags import config_from_args
from ..loop import save_weights
from ..models import cnn, init_weights, mlp
from ..train import TrainingInterrupted, fit, make_loader
from .flags import PROGRAM_FLAGS, add_program_flags, build_parser

__all__ = [
    "CHECKPOINT_NAME",
    "PROGRAM_FLAGS",
    "add_program_flags",
    "build_parser",
    "fork_entry",
    "main",
    "parse_args",
    "train",
]


# ------------------------------------------------------------------------------ arguments
def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
    """Parse and validate the program's flags before any process group exists.

    Returns:
        the namespace and its :class:`~d2lopt.TrainConfig`.

    Raises:
        UsageError: a bad value or combination, naming the flag and the fix.
    """
    args = build_parser().parse_args(argv)
    return args, validate(args, read_checkpoint=False)  # each rank reads it once, in train()


def validate(args: argparse.Namespace, *, read_checkpoint: bool = True) -> Any:
    """Check the flags of one run; return its ``TrainConfig`` (raises :class:`UsageError`).

    ``read_checkpoint``: also read and check the checkpoint in ``--out`` that the run would
    continue (``d2lopt ddp`` does, before it starts torchrun; a rank reads it in
    :func:`train`, once).
    """
    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(
            f"--device: {args.device!r} cannot be shared by ranks; use 'cuda' (each rank takes "
            "cuda:LOCAL_RANK), 'cpu' or 'auto' (MPS has no distributed backend: use cpu)"
        )
    try:  # TrainConfig decides AMP too: whether this machine's GPU can run it
        config = config_from_args(args)
        device = rank_device(0, args.device)  # counts GPUs without initialising CUDA
        out = None if args.out is None else writable_dir(args.out, create=False)
    except ParamError as exc:
        raise exc.usage(PROGRAM_FLAGS) from None
    if args.backend == "nccl" and device.type != "cuda":
        raise UsageError("--backend: nccl needs CUDA GPUs; use gloo (or auto) on CPU")
    if args.channels_last and args.model != "cnn":
        raise UsageError("--channels-last: only the cnn has conv layers; add --model cnn")
    if args.crash_at_step is not None and args.out is None:
        raise UsageError("--crash-at-step: a restart can only resume with --out DIR; add --out")
    if out is not None:  # created only now: a refused run leaves no folder
        if read_checkpoint:
            _resume_state(args, config, out, check=True)  # fails before any rank starts
        if os.environ.get("RANK", "0") == "0":  # one probe: N ranks probing one folder race
            try:
                writable_dir(out)
            except ParamError as exc:
                raise exc.usage(PROGRAM_FLAGS) from None
    elif args.resume:
        raise UsageError("--resume: needs --out DIR, the folder whose checkpoint to continue")
    return config


# ------------------------------------------------------------------------------ data, model
def _split(train: bool, source: str, n: int | None) -> TensorDataset:
    if source == "synthetic" and n is not None:
        # generate just n samples (fast) instead of slicing the 60k synthetic split
        images, labels = synthetic_fashion_mnist(n, seed=0 if train else 1)
    else:
        images, labels, _ = fashion_mnist(train, source=source, n=n)
    return TensorDataset(images.float().div_(255), labels)


def _datasets(args: argparse.Namespace, env: Replicas) -> tuple[TensorDataset, TensorDataset]:
    download = args.data != "synthetic" and env.distributed
    if download and env.local_rank != 0:
        dist.barrier()  # local rank 0 downloads first: N ranks writing one file corrupt it
    sets = _split(True, args.data, args.n_train), _split(False, args.data, args.n_test)
    if download and env.local_rank == 0:
        dist.barrier()
    return sets


def _loaders(args, config, env: Replicas) -> tuple[DataLoader, DataLoader]:
    """This rank's training batches (its share of one global order) and its test shard."""
    train_set, test_set = _datasets(args, env)
    # every rank draws the same permutation (same seed) and keeps every world-th index of it
    sampler = DistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, seed=config.seed
    )
    loader = make_loader(train_set, config, train=True, sampler=sampler, announce=env.is_main)
    # evaluation shards without padding: a DistributedSampler would count repeats twice
    shard = Subset(test_set, range(env.rank, len(test_set), env.world_size))
    return loader, make_loader(shard, config, train=False, announce=False)


def _model(args, config, env: Replicas) -> nn.Module:
    """The course model, identical on every rank; ``fit`` places it and wraps it (DDP/FSDP)."""
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    net = mlp() if args.model == "mlp" else cnn()
    net.apply(init_weights)
    if args.model == "cnn" and env.distributed and env.device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # batch statistics over all ranks
    return net


def _set_threads(requested: int) -> None:
    if requested:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it to 1 for several processes
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))  # no oversubscription


# ------------------------------------------------------------------------------ checkpoints
def _resume_state(args, config, out: Path | None, *, check: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None for a fresh start (``check``: check it too;
    a rank leaves that to ``fit``, which checks it once, with the data's size).

    ``--resume`` continues any checkpoint. Without it, a checkpoint is continued only when it
    belongs to this job: torchrun restarted the workers (after a failure, or because a node
    joined or left) and the checkpoint carries the job's ``TORCHELASTIC_RUN_ID``. Anything
    else is refused: it would silently continue somebody else's run.
    """
    if out is None:
        return None
    path = out / CHECKPOINT_NAME
    if not path.exists():
        if args.resume:
            raise UsageError(f"--resume: no checkpoint in {out}; run once without --resume")
        return None
    try:
        state = load_checkpoint(path, map_location="cpu")  # every rank reads the shared file
    except ParamError as exc:  # missing or corrupt: name the flag that pointed at it
        raise exc.usage(_resume_flags(args)) from None
    restarts, run_id = _restart_info()
    same_job = state.get("run_id") == run_id and (restarts > 0 or run_id not in (None, "none"))
    if not (args.resume or same_job):
        raise UsageError(
            f"--out: {out} already holds a checkpoint; add --resume to continue it, or choose "
            "another --out (nothing was overwritten)"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if check:  # fit's own check, before the job starts (samples: once data is loaded)
        try:
            check_resume(state, path, config, world_size=world, accumulate=args.accumulate,
                         strategy=args.strategy)  # fmt: skip
        except ParamError as exc:
            raise exc.usage(_resume_flags(args)) from None
    if args.resume and "WORLD_SIZE" in os.environ:  # a rank: it knows the new world size
        # allowed, but never silent (issue 22); an elastic restart changes the world by
        # design (notebook 11), so only a resume the learner asked for says it
        change = batch_change(state, config, world_size=world, accumulate=args.accumulate)
        if change:
            notice_once("batch-change", change)  # rank 0 only, once per process
    return state


def _resume_flags(args: argparse.Namespace) -> dict[str, str]:
    """The flags a resume problem names: ``--resume``, or ``--out`` that pointed at the file."""
    return {**PROGRAM_FLAGS, "resume": "--resume" if args.resume else "--out"}


def _restart_info() -> tuple[int, str | None]:
    """torchrun's restart counter (failures of this node) and the job's rendezvous id."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return restarts, os.environ.get("TORCHELASTIC_RUN_ID")


# ------------------------------------------------------------------------------ training
def train(args: argparse.Namespace, config, env: Replicas) -> list[dict[str, Any]]:
    """What every rank runs: its data and model, then :func:`d2lopt.fit` with the DDP switches.

    The switches (``DistributedSampler.set_epoch``, ``no_sync`` for ``--accumulate``, rank-0
    logging and checkpoints, all-reduced losses, sharded checkpoints) are decided once, in
    :class:`~d2lopt.distributed.Replicas`: the program has no training loop of its own.
    ``env`` comes from :func:`d2lopt.distributed.setup`; ``config`` is the run's
    :class:`~d2lopt.TrainConfig` (``batch_size`` per rank). Returns the per-epoch records.
    """
    if args.strategy == "fsdp" and not env.distributed:
        raise UsageError(
            "--strategy: fsdp shards over a process group; launch with torchrun "
            "(torchrun --nproc-per-node N -m d2lopt.ddp ...; N=1 works too)"
        )
    restarts, run_id = _restart_info()
    replicas = replace(
        env, strategy=args.strategy, accumulate=args.accumulate,
        bucket_cap_mb=args.bucket_cap_mb, verbose=not args.quiet,
        run_id=run_id, restarts=restarts,
    )  # fmt: skip
    out = Path(args.out) if args.out else None
    state = _resume_state(args, config, out, check=False)  # --resume, or this job restarted
    train_loader, test_loader = _loaders(args, config, env)
    net = _model(args, config, env)
    world, B, K = env.world_size, config.batch_size, args.accumulate
    replicas.log(f"world_size={world} strategy={args.strategy} backend={env.backend or 'none'} "
                 f"device={env.device.type} batch={B}/rank global_batch={world * B * K} "
                 f"amp={config.amp}")  # fmt: skip

    def log_epoch(r: dict[str, Any]) -> None:
        test = "" if r["test_loss"] is None else (
            f" test_loss {r['test_loss']:.4f} test_acc {r['test_acc']:.4f}")  # fmt: skip
        compiled = f", first step {r['compile_time']:.1f} s apart" if r.get("compile_time") else ""
        replicas.log(f"epoch {r['epoch']}/{config.num_epochs} train_loss {r['train_loss']:.4f}"
                     f"{test} ({r['samples_per_s']:.0f} samples/s{compiled})")  # fmt: skip

    try:
        history = fit(net, train_loader, test_loader, config, out_dir=out, resume=state or False,
                      progress=False, on_epoch_end=log_epoch, replicas=replicas,
                      on_step=_crash_at(args.crash_at_step, env.rank, args.crash_rank, restarts),
                      checkpoint_every=args.checkpoint_every)  # fmt: skip
    except ParamError as exc:  # a checkpoint of other data (--n-train), found once it is read
        raise exc.usage(_resume_flags(args)) from None
    if args.save:  # fsdp: the full weights are gathered from every rank's shard (a collective)
        save_weights(args.save, net, replicas)
        replicas.log(f"saved the final state_dict to {args.save}")
    return history


def _crash_at(step: int | None, rank: int, crash_rank: int, restarts: int) -> Any:
    """``--crash-at-step``: fit's ``on_step`` hook that SIGKILLs rank ``crash_rank`` after that
    global step, on the first attempt only (tests and ``11_scheduling`` restart the job)."""
    if step is None or rank != crash_rank or restarts:
        return None

    def crash(global_step: int) -> None:
        if global_step == step:  # said first, by the process that dies: torchrun logs only
            print(f"crash injected: rank {rank} kills itself with SIGKILL after global step "
                  f"{global_step}", file=sys.stderr, flush=True)  # its first failure  # fmt: skip
            os.kill(os.getpid(), signal.SIGKILL)  # a real, unclean death (as by the OOM killer)

    return crash


# ------------------------------------------------------------------------------ entry points
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of every rank: parse, join the group, train, leave. Returns an exit code."""
    rank = os.environ.get("RANK", "0")
    try:
        args, config = parse_args(argv)
    except UsageError as exc:
        if rank == "0":  # every rank parsed the same flags: one message is enough
            print(f"d2lopt ddp: error: {exc}", file=sys.stderr)
        return 2
    _set_threads(args.threads)
    try:
        env = setup(args.device, args.backend, args.timeout)
    except ValueError as exc:  # rank-specific (e.g. no GPU for this local rank): every rank says
        print(f"d2lopt ddp: error: rank {rank}: {exc}", file=sys.stderr)
        return 2
    try:
        train(args, config, env)
    except UsageError as exc:  # a resume mismatch, found once the checkpoint is read
        if rank == "0":
            print(f"d2lopt ddp: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:  # one process without torchrun: fit saved, then stopped
        name = signal.Signals(exc.signum).name
        typed = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
        again = shlex.join(["python", "-m", "d2lopt.ddp", *typed, "--resume"])  # issue 22
        print(f"d2lopt ddp: {name} received; checkpoint saved to {exc.path}; continue with: "
              f"{again}", file=sys.stderr)  # fmt: skip
        return 128 + exc.signum
    finally:
        teardown()
    return 0


def fork_entry(local_rank: int, argv: list[str], world_size: int, master_port: int) -> None:
    """One rank, for ``torch.multiprocessing.start_processes`` from a notebook.

    ``start_processes(fork_entry, args=(argv, N, port), nprocs=N, start_method="fork")``
    calls it as ``fork_entry(i, argv, N, port)`` in N forked children; it sets the variables
    torchrun would set (one node, ranks ``0..N-1``) and runs :func:`main`. Fork works with
    functions of an importable module (not of a notebook cell under spawn) and needs a
    parent that has not initialised CUDA. Each rank runs one CPU thread: a forked child
    inherits the parent's OpenMP thread pool without its threads (GNU libgomp is not
    fork-safe), so a multi-threaded kernel in the child would wait forever.
    """
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "fork_entry: CUDA was initialised in the parent before forking, so the children "
            "cannot use it; launch with torchrun (subprocess) instead"
        )
    emulate_torchrun(local_rank, world_size, master_port)
    code = main([*argv, "--threads", "1"])  # the last --threads wins: see the docstring
    if code:
        raise SystemExit(code)  # start_processes reports which rank failed, with this code


if __name__ == "__main__":
    exit_rank(main())  # not sys.exit: see exit_rank
