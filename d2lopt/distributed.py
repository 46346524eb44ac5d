"""torchrun-driven process groups: set-up, teardown, rank-0 logging, the DDP switches.

Taught in ``10_ddp``. A training program launched by ``torchrun`` (or by
``torch.multiprocessing.start_processes``) learns who it is from the environment that the
launcher sets — ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` —
never from hard-coded ports or ``cuda.device_count()``. :func:`setup` reads those variables,
picks the backend from the hardware (NCCL for CUDA, gloo for CPU), gives each rank its own
device, and :func:`teardown` leaves cleanly. Run without a launcher, the same program is a
world of one and needs no process group at all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import ParamError, check_choice, check_int
from .sharding import STRATEGIES, gradient_sync, shard_model

__all__ = [
    "emulate_torchrun",
    "Replicas",
    "env_ranks",
    "free_port",
    "is_main_process",
    "log0",
    "pick_backend",
    "rank_device",
    "setup",
    "teardown",
    "torchrun_command",
    "torchrun_env",
]

_ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Replicas:
    """Who this process is in the job, and how it trains next to the others (``10_ddp``).

    :func:`setup` returns this rank's (rank, world, device, backend); the DDP program adds
    its switches with ``dataclasses.replace(env, strategy=..., ...)`` from its flags, and
    :func:`d2lopt.fit` takes it as ``replicas=``: the same loop on one process and on N
    ranks (as nanoGPT's ``train.py`` does), the switches decided once. The default is a
    world of one started without a launcher, where every switch is a no-op: no process
    group, no wrapper, no ``no_sync``, this process logs and writes, the meter's all-reduce
    is skipped.

    Attributes:
        distributed: a process group exists (collectives run); False for a world of one.
        local_rank, backend: this rank's index on its node, and the group's backend.
        strategy: ``'ddp'`` (every rank holds the whole model) or ``'fsdp'`` (each rank 1/N).
        accumulate: micro-batches per optimizer step; all but the last skip the gradient
            collective (``no_sync``).
        verbose: rank 0 prints progress lines (the DDP program's log).
        run_id, restarts: torchrun's job id and restart count, recorded in checkpoints.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # None: config.device
    distributed: bool = False  # a process group exists: collectives run
    local_rank: int = 0
    backend: str | None = None
    strategy: str = "ddp"
    accumulate: int = 1
    bucket_cap_mb: float = 25.0
    verbose: bool = False
    run_id: str | None = None
    restarts: int = 0

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, STRATEGIES)
        if self.strategy == "fsdp" and not self.distributed:
            raise ParamError("strategy", "fsdp shards over a process group; launch with torchrun")
        check_int("accumulate", self.accumulate, 1)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes checkpoints and metrics."""
        return self.rank == 0

    def wrap(self, net: nn.Module) -> nn.Module:
        """What the loop calls: the net itself, a DDP wrapper, or the net sharded in place."""
        if self.strategy == "fsdp":  # every parameter becomes this rank's shard
            return shard_model(net, self.device)
        if not self.distributed:
            return net
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP broadcasts rank 0's weights, then all-reduces every gradient in buckets; the
        # article's device_ids=[rank] fails on CPU: a CPU module takes no device ids
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(net, device_ids=ids, bucket_cap_mb=self.bucket_cap_mb)

    def gradient_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """``no_sync`` on all but the last micro-batch (a null context on one process)."""
        return gradient_sync(model, self.strategy if self.distributed else "", sync)

    def log(self, *line: object) -> None:
        """Print on rank 0 only, unless quiet (the article's script printed on every rank)."""
        if self.verbose:
            log0(*line)  # rank 0 only: N ranks printing the same line, in any order, is noise


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{name}: environment variable must be an integer, got {text!r}; "
            "let torchrun set it (torchrun --nproc-per-node N ...)"
        ) from None
    if value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value}; let torchrun set it")
    return value


def env_ranks() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without it.

    Raises:
        ValueError: the variables are only partly set or inconsistent (e.g. ``RANK=3`` with
            ``WORLD_SIZE=2``), naming the variable.
    """
    values = {name: _env_int(name) for name in _ENV_VARS}
    missing = [name for name, v in values.items() if v is None]
    if len(missing) == len(_ENV_VARS):
        return 0, 0, 1
    if missing:
        raise ValueError(
            f"{missing[0]}: not set while {', '.join(n for n in _ENV_VARS if n not in missing)} "
            "is; launch with torchrun, which sets RANK, LOCAL_RANK and WORLD_SIZE together"
        )
    rank, local_rank, world = values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"]
    if world < 1 or rank >= world:
        raise ValueError(f"RANK: {rank} is not below WORLD_SIZE={world}; let torchrun set both")
    return rank, local_rank, world


def rank_device(local_rank: int, device: str = "auto") -> torch.device:
    """The one device of this rank: ``cuda:LOCAL_RANK`` on a GPU node, else the CPU.

    ``device='auto'`` picks CUDA when present and the CPU otherwise (Apple MPS has no
    distributed backend, so DDP runs on its CPU cores). ``device='cuda'`` on a machine
    without enough GPUs fails with the fix.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: must be 'auto', 'cpu' or 'cuda' for DDP, got {device!r}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but CUDA is not available; use 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"device: local rank {local_rank} has no GPU (this node has {count}); start at most "
            f"{count} processes per node (--nproc-per-node {count}) or use device 'cpu'"
        )
    return torch.device("cuda", local_rank)


def pick_backend(device: torch.device) -> str:
    """NCCL for CUDA tensors (GPU-to-GPU over NVLink/InfiniBand), gloo for CPU tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: str = "auto", backend: str = "auto", timeout_s: float | None = None) -> Replicas:
    """Join the process group that torchrun (or ``start_processes``) prepared.

    Args:
        device: ``'auto'``, ``'cpu'`` or ``'cuda'`` (see :func:`rank_device`).
        backend: ``'auto'`` (from the device), ``'gloo'`` or ``'nccl'``.
        timeout_s: how long a collective may wait for the other ranks before failing
            (``None``: PyTorch's default of 10 minutes).

    Returns:
        this process's :class:`Replicas` (the default switches: add the program's with
        ``dataclasses.replace``).
    """
    rank, local_rank, world = env_ranks()
    dev = rank_device(local_rank, device)
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"backend: must be 'auto', 'gloo' or 'nccl', got {backend!r}")
    chosen = pick_backend(dev) if backend == "auto" else backend
    if chosen == "nccl" and dev.type != "cuda":
        raise ValueError("backend: 'nccl' needs CUDA devices; use 'gloo' (or 'auto') on CPU")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # one GPU per rank, before any CUDA work or NCCL init
    launched = os.environ.get("RANK") is not None
    if not launched:
        return Replicas(device=dev)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if restarted and rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        print(
            "d2lopt: restarted on torchrun's shared TCPStore; if the process group hangs, "
            "relaunch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (see torchrun_env)",
            file=sys.stderr,
        )
    if not dist.is_initialized():
        kwargs = {}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        # env:// reads MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE set by the launcher
        dist.init_process_group(chosen, **kwargs)
    return Replicas(rank, world, dev, True, local_rank=local_rank, backend=chosen)


def teardown() -> None:
    """Leave the process group (every rank calls it once, after its last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> None:
    """End a rank's process now, with ``code``, skipping the interpreter's shutdown.

    Why: a gloo process group outlives ``destroy_process_group`` while something still
    references it (the DDP wrapper, FSDP's device mesh), and its worker thread may still be
    releasing the last collective's tensors when the interpreter finalizes. Releasing a
    tensor then needs the GIL of a dying interpreter, and the rank aborts with "terminate
    called without an active exception" (SIGABRT) after finishing its work (pytorch issue
    190489; about 1 run in 7 of 2-rank FSDP here). Everything a rank writes is closed
    before this, so only the buffered standard streams need flushing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_main_process() -> bool:
    """True on rank 0, or when no process group exists."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def log0(*args: object, file=None) -> None:
    """``print`` on rank 0 only: N ranks printing the same line, in any order, is noise."""
    if is_main_process():
        print(*args, file=file or sys.stdout, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, for ``MASTER_PORT`` or ``--rdzv-endpoint``.

    The port is released before returning, so another program could take it first; that is
    why torchrun's ``--standalone`` picks its own. Use this for launches that need a port
    named up front (two "nodes" on one machine, ``start_processes``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def torchrun_command(
    module: str,
    args: Sequence[str] = (),
    *,
    nproc_per_node: int | str = 1,
    nnodes: str | int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    max_restarts: int = 0,
    extra: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """The ``torchrun`` command line that runs ``python -m module args`` on this node.

    It calls ``python -m torch.distributed.run`` (what the ``torchrun`` script runs) with this
    interpreter, so a notebook launches with its own virtual environment. Without
    ``rdzv_endpoint`` it is a single-node ``--standalone`` job; with it, a c10d rendezvous
    that every node joins with the same ``rdzv_id``.

    Example:
        >>> torchrun_command("d2lopt.ddp", ["--epochs", "1"], nproc_per_node=2, python="python")
        ['python', '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--nnodes', '1', \
'--max-restarts', '0', '--standalone', '-m', 'd2lopt.ddp', '--epochs', '1']
    """
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--nproc-per-node", str(nproc_per_node), "--nnodes", str(nnodes)]
    cmd += ["--max-restarts", str(max_restarts)]
    if rdzv_endpoint is None:
        if str(nnodes) != "1":
            raise ValueError(
                f"rdzv_endpoint: {nnodes} nodes need a rendezvous address (HOST:PORT of the "
                "first node), e.g. rdzv_endpoint='10.0.0.1:29400'"
            )
        cmd.append("--standalone")
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
        cmd += ["--rdzv-id", rdzv_id or "d2lopt"]
    return [*cmd, *extra, "-m", module, *args]


def emulate_torchrun(rank: int, world_size: int, master_port: int) -> None:
    """Set what torchrun sets for rank ``rank`` of a one-node job, in this process.

    For ranks forked from a notebook (``torch.multiprocessing.start_processes``): the same
    variables, so :func:`setup` and ``init_process_group("env://")`` run as under torchrun.
    """
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master_port),
    )  # fmt: skip


def torchrun_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a torchrun launch whose workers may restart (``--max-restarts``,
    ``--nnodes MIN:MAX``).

    Since PyTorch 2.5 torchrun's agent shares one TCPStore with its workers. Restarted
    workers then meet the previous attempt's keys in that store (pytorch/pytorch#135712);
    with this PyTorch, restarted gloo workers hang in ``connectFullMesh``.
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives every rendezvous round a fresh store.
    A value already set in ``base`` (default ``os.environ``) is kept.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    return env
