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
import itertools
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from .checkpoint import load_checkpoint, save_checkpoint
from .cli import (
    UsageError,
    _flag_error,
    _Parser,
    add_train_config_flags,
    config_from_args,
    non_negative_int,
    positive_float,
    positive_int,
    writable_dir,
)
from .data import fashion_mnist, seed_worker, synthetic_fashion_mnist
from .distributed import (
    DistEnv,
    DistributedMeter,
    exit_rank,
    log0,
    rank_device,
    setup,
    teardown,
    torchrun_command,
    torchrun_env,
)
from .metrics import evaluate
from .models import cnn, init_weights, mlp
from .precision import autocast_ctx, check_amp, grad_scaler
from .sharding import (
    STRATEGIES,
    full_state_dict,
    gradient_sync,
    load_sharded,
    save_sharded,
    shard_model,
)
from .timing import Timer

__all__ = [
    "CHECKPOINT_NAME",
    "add_command",
    "add_program_flags",
    "build_parser",
    "fork_entry",
    "main",
    "parse_args",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
# settings that must not change when resuming: they define the experiment (the batch may:
# per rank when the world size changes, or to keep the global batch; see _resume_state)
_RESUME_MUST_MATCH = ("lr", "momentum", "amp", "seed")
SHARDS_DIR = "shards"  # --strategy fsdp: one DCP folder per checkpoint, under --out


# ------------------------------------------------------------------------------ arguments
class _RankParser(_Parser):
    """One-line argparse errors, printed by rank 0 only (every rank parses the same argv)."""

    def error(self, message: str) -> NoReturn:
        if os.environ.get("RANK", "0") != "0":
            self.exit(2)
        super().error(message)


def add_program_flags(p: argparse.ArgumentParser) -> None:
    """The training program's flags (shared by ``python -m d2lopt.ddp`` and ``d2lopt ddp``)."""
    add_train_config_flags(p)  # --epochs, --batch-size (per rank here), --lr, --amp, --seed...
    for action in p._actions:  # the shared flags, as DDP reads them
        if action.dest == "batch_size":
            action.help = (
                "samples per batch on each rank; global batch = ranks x this x "
                "--accumulate (default: %(default)s)"
            )
        elif action.dest == "device":
            action.help = "auto, cpu or cuda (rank r of a node takes cuda:r) (default: auto)"
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
    """``python -m d2lopt.ddp``'s parser (what each torchrun worker parses)."""
    p = _RankParser(
        prog="python -m d2lopt.ddp",
        description="Data-parallel training of the course model; launch with torchrun.",
    )
    add_program_flags(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
    """Parse and validate the program's flags before any process group exists.

    Returns:
        the namespace and its :class:`~d2lopt.TrainConfig`.

    Raises:
        UsageError: a bad value or combination, naming the flag and the fix.
    """
    args = build_parser().parse_args(argv)
    return args, validate(args)


def validate(args: argparse.Namespace) -> Any:
    """Check the flags of one run; return its ``TrainConfig`` (raises :class:`UsageError`)."""
    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(
            f"--device: {args.device!r} cannot be shared by ranks; use 'cuda' (each rank takes "
            "cuda:LOCAL_RANK), 'cpu' or 'auto' (MPS has no distributed backend: use cpu)"
        )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise _flag_error(exc) from None
    try:
        device = rank_device(0, args.device)  # counts GPUs without initialising CUDA
        if device.type == "cpu":  # every mode runs on CPU; CUDA's bf16 is checked in
            check_amp(device, args.amp)  # main(), once this rank's GPU is selected
    except ValueError as exc:
        raise _flag_error(exc) from None
    if args.backend == "nccl" and device.type != "cuda":
        raise UsageError("--backend: nccl needs CUDA GPUs; use gloo (or auto) on CPU")
    if args.channels_last and args.model != "cnn":
        raise UsageError("--channels-last: only the cnn has conv layers; add --model cnn")
    if args.crash_at_step is not None and args.out is None:
        raise UsageError("--crash-at-step: a restart can only resume with --out DIR; add --out")
    if args.out is not None:
        out = Path(args.out)
        if os.environ.get("RANK", "0") == "0":  # one probe: N ranks probing one folder race
            writable_dir(out)
        _resume_state(args, config, out)  # fails early on a checkpoint we may not continue
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


def _datasets(args: argparse.Namespace, env: DistEnv) -> tuple[TensorDataset, TensorDataset]:
    download = args.data != "synthetic" and env.distributed
    if download and env.local_rank != 0:
        dist.barrier()  # local rank 0 downloads first: N ranks writing one file corrupt it
    sets = _split(True, args.data, args.n_train), _split(False, args.data, args.n_test)
    if download and env.local_rank == 0:
        dist.barrier()
    return sets


def _loaders(args, config, env: DistEnv) -> tuple[DistributedSampler, DataLoader, DataLoader]:
    train_set, test_set = _datasets(args, env)
    # every rank draws the same permutation (same seed) and keeps every world-th index of it
    sampler = DistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, seed=config.seed
    )
    workers = config.num_workers
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,  # per rank
        sampler=sampler,
        num_workers=workers,
        pin_memory=config.pin_memory and env.device.type == "cuda",  # async H2D copies
        prefetch_factor=config.prefetch_factor if workers else None,
        persistent_workers=config.persistent_workers,
        worker_init_fn=seed_worker if workers else None,
    )
    # evaluation shards without padding: a DistributedSampler would count repeats twice
    shard = Subset(test_set, range(env.rank, len(test_set), env.world_size))
    return sampler, loader, DataLoader(shard, batch_size=config.batch_size)


def _model(args, config, env: DistEnv) -> tuple[nn.Module, nn.Module]:
    """The plain module (for state_dict and evaluation) and what the loop calls."""
    device = env.device
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    net = mlp() if args.model == "mlp" else cnn()
    net.apply(init_weights)
    if args.model == "cnn" and env.distributed and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # batch statistics over all ranks
    net.to(device)  # once, before DDP wraps it
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    model: nn.Module = net
    if args.strategy == "fsdp":  # in place: every parameter becomes this rank's shard
        return shard_model(net), net
    if env.distributed:  # DDP broadcasts rank 0's weights, then all-reduces every gradient
        ids = [device.index] if device.type == "cuda" else None  # CPU modules take no ids
        model = DDP(net, device_ids=ids, bucket_cap_mb=args.bucket_cap_mb)
    return net, model


def _set_threads(requested: int) -> None:
    if requested:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it to 1 for several processes
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))  # no oversubscription


def _evaluate(
    net: nn.Module, loader: DataLoader, criterion, device, strategy: str = "ddp"
) -> tuple[float, float]:
    """Test loss and accuracy over every rank's shard (a collective)."""
    batches = _as_many_batches(loader, device) if strategy == "fsdp" else loader
    r = evaluate(net, batches, criterion, device)  # the plain module: no DDP hooks
    n = r["samples"]
    meter = DistributedMeter(3, device)
    meter.add(r["loss"] * n if n else 0.0, r["accuracy"] * n if n else 0.0, n)
    loss_sum, correct, count = meter.reduced()
    return loss_sum / count, correct / count


def _as_many_batches(loader: DataLoader, device: torch.device):
    """The shard's batches, then empty ones until every rank has run as many forwards.

    With FSDP every forward all-gathers each layer's weights, a collective: a rank whose
    test shard has one batch fewer would leave the others waiting forever.
    """
    most = torch.tensor(len(loader), device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    X0, y0 = loader.dataset[0]
    yield from loader
    for _ in range(int(most) - len(loader)):  # an empty batch adds 0 samples, 0 loss
        yield X0.new_empty((0, *X0.shape)), torch.as_tensor(y0).new_empty((0,))


# ------------------------------------------------------------------------------ checkpoints
def _resume_state(args, config, out: Path | None) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None for a fresh start.

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
    except ValueError as exc:  # missing or corrupt: name the flag that pointed at it
        flag = "--resume" if args.resume else "--out"
        raise UsageError(f"{flag}: {str(exc).removeprefix('resume: ')}") from None
    restarts, run_id = _restart_info()
    same_job = state.get("run_id") == run_id and (restarts > 0 or run_id not in (None, "none"))
    if not (args.resume or same_job):
        raise UsageError(
            f"--out: {out} already holds a checkpoint; add --resume to continue it, or choose "
            "another --out (nothing was overwritten)"
        )
    if state.get("strategy", "ddp") != args.strategy:
        raise UsageError(
            f"--strategy: the checkpoint was written with --strategy "
            f"{state.get('strategy', 'ddp')}; use it, or a new --out"
        )
    for key in _RESUME_MUST_MATCH:
        if state["config"].get(key) != getattr(config, key):
            raise UsageError(
                f"--resume: the checkpoint used {key}={state['config'].get(key)!r}, this run "
                f"{key}={getattr(config, key)!r}; use the same value or a new --out"
            )
    old_b, old_global = state["config"]["batch_size"], state["global_batch"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.batch_size != old_b and world * config.batch_size * args.accumulate != old_global:
        raise UsageError(
            f"--batch-size: the checkpoint trained {old_b} per rank ({old_global} per step); "
            f"keep --batch-size {old_b}, or choose one that gives {old_global} per step"
        )
    return state


def _restart_info() -> tuple[int, str | None]:
    """torchrun's restart counter (failures of this node) and the job's rendezvous id."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return restarts, os.environ.get("TORCHELASTIC_RUN_ID")


def _write_metrics(out: Path, config, world: int, history: list[dict[str, Any]]) -> None:
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps({"config": config.to_dict(), "world_size": world,
                               "epochs": history}, indent=2))  # fmt: skip
    tmp.replace(out / "metrics.json")


# ------------------------------------------------------------------------------ training
def train(args: argparse.Namespace, config, env: DistEnv) -> list[dict[str, Any]]:
    """The loop every rank runs; returns the per-epoch records (all-reduced metrics).

    ``env`` comes from :func:`d2lopt.distributed.setup`; ``config`` is the run's
    :class:`~d2lopt.TrainConfig` (``batch_size`` per rank).
    """
    device, world, B, K = env.device, env.world_size, config.batch_size, args.accumulate
    if args.strategy == "fsdp" and not env.distributed:
        raise UsageError(
            "--strategy: fsdp shards over a process group; launch with torchrun "
            "(torchrun --nproc-per-node N -m d2lopt.ddp ...; N=1 works too)"
        )

    def log(*line: object) -> None:
        if not args.quiet:
            log0(*line)  # rank 0 only: N ranks printing the same line, in any order, is noise

    sampler, loader, test_loader = _loaders(args, config, env)
    net, model = _model(args, config, env)
    forward = torch.compile(model) if config.compile else model
    nb = config.non_blocking and loader.pin_memory  # non_blocking only helps pinned batches
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    autocast = autocast_ctx(device, config.amp)  # AMP inside DDP: the forward in bf16/fp16
    scaler = grad_scaler(device, config.amp)  # enabled for fp16 only

    out = Path(args.out) if args.out else None
    restarts, run_id = _restart_info()
    history: list[dict[str, Any]] = []
    start_epoch, skip, sums0 = 0, 0, [0.0, 0.0]
    state = _resume_state(args, config, out)
    if state is not None:
        if state.get("shards"):  # fsdp: every rank reads its shard, resharded to this world
            load_sharded(out / state["shards"], net, optimizer)
        else:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, start_epoch = state["history"], state["epoch"]
        # rank r takes every world-th index of one permutation, so the *global* sample
        # stream is the same for any world size: the position in it carries over to a
        # job restarted with more or fewer processes (elastic --nnodes MIN:MAX)
        done = state["step"] * state["global_batch"]  # samples of this epoch already trained
        skip = done // (world * K * B) * K  # micro-batches already trained this epoch
        if skip:
            sums0 = state["train_sums"]
        log(f"resumed from checkpoint: epoch {start_epoch + 1}, micro-batch {skip} (saved by "
            f"{state['world_size']} process(es), now {world}; restart {restarts})")  # fmt: skip

    def checkpoint(epoch: int, step: int, sums: list[float]) -> None:
        if out is None:
            return
        shards = None
        if args.strategy == "fsdp":  # every rank writes its shard (a collective) ...
            shards = f"{SHARDS_DIR}/e{epoch}-s{step}"
            save_sharded(out / shards, net, optimizer)
        if env.is_main:  # ... then one writer points to it; atomic rename: never a torn file
            sharded = shards is not None
            save_checkpoint(out / CHECKPOINT_NAME, {
                "model": None if sharded else net.state_dict(),
                "optimizer": None if sharded else optimizer.state_dict(),
                "shards": shards, "strategy": args.strategy,
                "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "world_size": world, "accumulate": K, "global_batch": world * B * K,
                "train_sums": sums,
                "history": history, "config": config.to_dict(), "run_id": run_id,
            })  # fmt: skip
            if sharded:  # older shard folders are superseded now that the pointer moved
                for old in (out / SHARDS_DIR).iterdir():
                    if old.name != Path(shards).name:
                        shutil.rmtree(old, ignore_errors=True)

    log(f"world_size={world} strategy={args.strategy} backend={env.backend or 'none'} "
        f"device={device.type} batch={B}/rank global_batch={world * B * K} "
        f"amp={config.amp}")  # fmt: skip
    meter = DistributedMeter(2, device)  # [loss sum, samples], all-reduced when read
    timer = Timer(device)
    global_step = sum(r["steps"] for r in history) + skip // K
    for epoch in range(start_epoch, config.num_epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        meter.reset()
        if skip and env.is_main:
            meter.load(sums0)  # the epoch's global sums so far, counted once
        n_batches, first, skip = len(loader), skip, 0
        batches = itertools.islice(loader, first, None)  # same order: skip what was trained
        net.train()
        timer.start()
        for i, (X, y) in enumerate(batches, start=first):
            X = X.to(device, non_blocking=nb)
            y = y.to(device, non_blocking=nb)
            if config.channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            sync = (i + 1) % K == 0 or i + 1 == n_batches
            # no_sync: gradients accumulate locally; only the last micro-batch all-reduces
            # them (ddp) or reduce-scatters them (fsdp)
            with gradient_sync(model, args.strategy if env.distributed else "", sync):
                with autocast:
                    loss = criterion(forward(X), y)
                scaler.scale(loss.mean() / K).backward()  # DDP averages gradients over ranks
            meter.add(loss.detach().float().sum(), y.shape[0])  # on device: no host sync
            if not sync:
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            step = (i + 1 + K - 1) // K
            if args.checkpoint_every and step % args.checkpoint_every == 0 and i + 1 < n_batches:
                checkpoint(epoch, step, meter.reduced())  # reduced() is a collective: all ranks
            if global_step == args.crash_at_step and env.rank == args.crash_rank and not restarts:
                os.kill(os.getpid(), signal.SIGKILL)  # a real, unclean death (as by the OOM killer)
        epoch_time = timer.stop()
        loss_sum, seen = meter.reduced()  # a collective: every rank calls it
        record: dict[str, Any] = {
            "epoch": epoch + 1, "steps": (n_batches + K - 1) // K,
            "train_loss": loss_sum / seen, "test_loss": None, "test_acc": None,
            "epoch_time": epoch_time, "world_size": world, "resumed": first > 0,
            "samples_per_s": (seen - (sums0[1] if first else 0.0)) / epoch_time,
        }  # fmt: skip
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.num_epochs:
            record["test_loss"], record["test_acc"] = _evaluate(
                net, test_loader, criterion, device, args.strategy
            )
        history.append(record)
        checkpoint(epoch + 1, 0, [0.0, 0.0])
        if env.is_main and out is not None:
            _write_metrics(out, config, world, history)
        test = "" if record["test_loss"] is None else (
            f" test_loss {record['test_loss']:.4f} test_acc {record['test_acc']:.4f}")  # fmt: skip
        log(f"epoch {epoch + 1}/{config.num_epochs} train_loss {record['train_loss']:.4f}{test} "
            f"({record['samples_per_s']:.0f} samples/s)")  # fmt: skip
    if args.save:
        # fsdp: the full weights are gathered from every rank's shard (a collective)
        weights = full_state_dict(net) if args.strategy == "fsdp" else net.state_dict()
        if env.is_main:
            save_checkpoint(args.save, weights)
            log(f"saved the final state_dict to {args.save}")
    return history


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
        check_amp(env.device, args.amp)  # after set_device: no stray context on GPU 0
    except ValueError as exc:
        teardown()
        if rank == "0":
            print(f"d2lopt ddp: error: {_flag_error(exc)}", file=sys.stderr)
        return 2
    try:
        train(args, config, env)
    except UsageError as exc:  # a resume mismatch, found once the checkpoint is read
        if rank == "0":
            print(f"d2lopt ddp: error: {exc}", file=sys.stderr)
        return 2
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
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(master_port),
    )
    code = main([*argv, "--threads", "1"])  # the last --threads wins: see the docstring
    if code:
        raise SystemExit(code)  # start_processes reports which rank failed, with this code


# ------------------------------------------------------------------------------ d2lopt ddp
def _program_argv(args: argparse.Namespace) -> list[str]:
    """Turn the parsed program flags back into argv for the workers (defaults omitted)."""
    argv: list[str] = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


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


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``d2lopt ddp``: validate the flags, then hand over to ``torchrun``."""
    p = subparsers.add_parser(
        "ddp",
        help="data-parallel training on N processes/GPUs, launched by torchrun",
        description="Validate the flags, then exec torchrun (python -m torch.distributed.run) "
        "with `-m d2lopt.ddp`. Single node: --nproc-per-node N. Several nodes: the same "
        "command on every node with --nnodes, --node-rank and --rdzv-endpoint HOST:PORT.",
    )
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
    # fmt: on
    add_program_flags(p)

    def run(args: argparse.Namespace) -> int:
        validate(args)
        try:  # this process execs torchrun next: initialising CUDA here costs nothing
            check_amp(rank_device(0, args.device), args.amp)
        except ValueError as exc:
            raise _flag_error(exc) from None
        if args.nnodes != "1" and args.rdzv_endpoint is None:
            raise UsageError("--rdzv-endpoint: several nodes need HOST:PORT of the rendezvous")
        if args.rdzv_endpoint is not None and ":" not in args.rdzv_endpoint:
            raise UsageError(f"--rdzv-endpoint: expected HOST:PORT, got {args.rdzv_endpoint!r}")
        if args.device == "cuda" and args.nproc_per_node.isdigit():
            gpus = torch.cuda.device_count()  # counts devices without initialising CUDA
            if int(args.nproc_per_node) > gpus:
                raise UsageError(
                    f"--nproc-per-node: {args.nproc_per_node} processes but {gpus} GPU(s); "
                    f"use --nproc-per-node {max(gpus, 1)} or --device cpu"
                )
        cmd = torchrun_command(
            "d2lopt.ddp",
            _program_argv(args),
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
        os.execve(
            cmd[0], cmd, torchrun_env()
        )  # torchrun replaces this process: signals and exit code are its

    p.set_defaults(run=run)


if __name__ == "__main__":
    exit_rank(main())  # not sys.exit: see exit_rank
