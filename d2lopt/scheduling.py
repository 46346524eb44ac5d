"""Load balancing, communication and job scheduling, measured (taught in ``11_scheduling``).

The article names three scheduling concerns — load balancing, communication, dynamic
adjustment — and, for clusters, priority scheduling and dynamic allocation. This module
holds the experiments that measure them on the machine at hand:

* :func:`launch` runs a worker function once on N forked processes joined in a gloo process
  group (``torch.multiprocessing.start_processes``) and returns what each rank returned:
  for experiments with an exact outcome (:func:`uneven_inputs_worker`, :func:`comm_worker`);
* :class:`RankPool` keeps N spawned ranks alive so that timings can be compared in paired,
  interleaved rounds (:mod:`d2lopt.compare`): one process vs N ranks
  (:func:`compare_scaling`, B1 in ``10_ddp``), a straggler (:func:`straggler_compare`),
  communication configs (:func:`comm_compare`), the latter two timed by rank 0 while the
  other ranks follow in lockstep (:func:`lockstep_compare_many`);
* :class:`CollectiveCounter` counts the all-reduce calls and bytes DDP really issues;
* :func:`simulate` is a small job-queue simulation (FIFO, priority, elastic) driven by a
  scaling curve (:func:`speedup_curve`): a simulation, fed by whatever speedup it is given.

Worker functions are importable, so they work under fork, spawn and torchrun. These
experiments run on CPU processes with gloo: they measure mechanisms (how many collectives,
how many bytes, who waits for whom). NCCL on GPUs changes the constants.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from .compare import Comparison, Sweep, compare, compare_many
from .devices import synchronize
from .distributed import free_port, rank_device, setup, teardown
from .envinfo import _usable_cores
from .models import cnn, init_weights, mlp
from .verdict import INCONCLUSIVE, Verdict

__all__ = [
    "COMM_WIDTHS",
    "CollectiveCounter",
    "Job",
    "RankPool",
    "SimResult",
    "amdahl_fraction",
    "comm_compare",
    "comm_model",
    "comm_worker",
    "compare_scaling",
    "count_collectives",
    "data_parallel_step",
    "delay_name",
    "launch",
    "lockstep_compare_many",
    "sampler_shards",
    "scaling_verdict",
    "simulate",
    "speedup_curve",
    "straggler_compare",
    "uneven_inputs_worker",
]


# ------------------------------------------------------------------------------ launching
def _rank_main(rank: int, fn: Callable, world: int, port: int, folder: str, kwargs: dict) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    # one thread: a forked child inherits the parent's OpenMP pool without its threads
    # (GNU libgomp is not fork-safe), and a multi-threaded kernel would wait forever
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=kwargs.pop("timeout_s", 60))
    dist.init_process_group("gloo", timeout=timeout)
    try:
        result = fn(rank, world, **kwargs)
    finally:
        dist.destroy_process_group()
    Path(folder, f"{rank}.json").write_text(json.dumps(result))


def launch(fn: Callable[..., Any], nprocs: int, **kwargs: Any) -> list[Any]:
    """Run ``fn(rank, world_size, **kwargs)`` on ``nprocs`` forked CPU processes (gloo).

    It is ``torch.multiprocessing.start_processes(..., start_method="fork")``: each child
    joins a gloo process group on 127.0.0.1, runs ``fn`` on one CPU thread, and its
    JSON-serialisable result is returned in rank order. The children print nothing (what
    forked children print reaches a notebook in any order); a child's exception is
    re-raised here by ``start_processes``.
    ``timeout_s`` (default 60) bounds every collective, so a broken experiment fails
    instead of hanging.
    """
    if not isinstance(nprocs, int) or isinstance(nprocs, bool) or nprocs < 1:
        raise ValueError(f"nprocs: must be a positive int, got {nprocs!r}")
    if torch.cuda.is_initialized():
        raise RuntimeError("launch: CUDA is initialised in this process; forked children "
                           "cannot use it. Run from a fresh kernel or use torchrun")  # fmt: skip
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="d2lopt-launch-") as folder:
        mp.start_processes(
            _rank_main,
            args=(fn, nprocs, free_port(), folder, kwargs),
            nprocs=nprocs,
            start_method="fork",
        )
        return [json.loads(Path(folder, f"{r}.json").read_text()) for r in range(nprocs)]


# ------------------------------------------------------------------------------ sampling
def sampler_shards(
    n: int, world_size: int, *, drop_last: bool = False, shuffle: bool = False, seed: int = 0
) -> list[list[int]]:
    """The indices ``DistributedSampler`` gives each rank for a data set of ``n`` samples.

    Without ``drop_last`` it pads with repeated samples up to a multiple of ``world_size``
    (every rank must run the same number of steps); with it, it drops the tail instead.
    """
    from torch.utils.data import DistributedSampler

    if n < 1 or world_size < 1:
        raise ValueError(f"sampler_shards: need n >= 1 and world_size >= 1, got {n}, {world_size}")
    data = range(n)  # a sampler only needs len()
    kwargs = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    return [list(DistributedSampler(data, world_size, r, **kwargs)) for r in range(world_size)]


# ------------------------------------------------------------------------------ counting
@dataclass
class CollectiveCounter:
    """All-reduce calls and bytes issued through ``torch.distributed.all_reduce``."""

    calls: int = 0
    bytes: int = 0

    def reset(self) -> None:
        self.calls, self.bytes = 0, 0


@contextlib.contextmanager
def count_collectives() -> Iterator[CollectiveCounter]:
    """Count ``dist.all_reduce`` calls and their payload in this process.

    DDP's built-in reducer calls C++ directly; a communication hook (even
    ``default_hooks.allreduce_hook``, which does what the built-in does) goes through
    ``dist.all_reduce``, so every bucket is seen here with the dtype actually sent.
    """
    counter = CollectiveCounter()
    original = dist.all_reduce

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        counter.bytes += tensor.numel() * tensor.element_size()  # the dtype actually sent
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        yield counter
    finally:
        dist.all_reduce = original


# ------------------------------------------------------------------------------ workers
COMM_WIDTHS: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 10)


def comm_model(widths: Sequence[int] = COMM_WIDTHS, seed: int = 0) -> nn.Sequential:
    """A stack of ``Linear`` layers of the given widths: lots of gradient, little compute.

    The default has five 512x512 layers (1 MiB of fp32 gradient each), so bucket sizes
    around 1 MiB change how many all-reduces DDP issues.
    """
    torch.manual_seed(seed)  # the same initial weights on every rank
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def uneven_inputs_worker(
    rank: int, world: int, *, batches: Sequence[int], use_join: bool
) -> dict[str, Any]:
    """Rank ``r`` trains on ``batches[r]`` batches: what happens when they differ?

    Without ``Join`` the rank with more batches waits in an all-reduce that its finished
    peers never join: it fails (here: the peer left, the connection closed) or hangs until
    the timeout. With ``torch.distributed.algorithms.Join`` the finished ranks shadow the
    missing all-reduces with zeros and everyone completes.
    """
    from torch.distributed.algorithms.join import Join

    model = DDP(comm_model([8, 16, 1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    done, error = 0, None
    try:
        with Join([model]) if use_join else contextlib.nullcontext():
            for _ in range(batches[rank]):
                opt.zero_grad()
                model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
                opt.step()
                done += 1
    except RuntimeError as exc:  # gloo reports a vanished peer as a RuntimeError
        error = type(exc).__name__
    return {"rank": rank, "planned": batches[rank], "done": done, "error": error}


def _register_hook(model: DDP, hook: str) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if hook == "allreduce":  # what DDP does built in, but visible to count_collectives
        model.register_comm_hook(None, default_hooks.allreduce_hook)
    elif hook == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif hook == "bf16":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    elif hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=2, start_powerSGD_iter=2
        )
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    else:
        raise ValueError(f"hook: must be allreduce, fp16, bf16 or powersgd, got {hook!r}")


def _comm_ddp(cfg: dict[str, Any], widths: Sequence[int]) -> DDP:
    """The DDP model of one communication config (bucket size and hook)."""
    model = DDP(comm_model(widths), bucket_cap_mb=cfg.get("bucket_cap_mb", 25.0))
    _register_hook(model, cfg.get("hook", "allreduce"))
    return model


def _comm_step(model: DDP, opt: torch.optim.Optimizer, batches: Iterator, cfg: dict) -> None:
    """One optimizer step of ``cfg``: ``accumulate`` micro-batches, with or without no_sync."""
    K = cfg.get("accumulate", 1)
    for k in range(K):
        skip = cfg.get("no_sync", False) and k < K - 1
        with model.no_sync() if skip else contextlib.nullcontext():  # no all-reduce inside
            model(next(batches)).pow(2).mean().div(K).backward()
    opt.step()
    opt.zero_grad()


def _comm_data(rank: int, widths: Sequence[int], batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own samples
    return [torch.randn(batch, widths[0], generator=g) for _ in range(8)]


def comm_worker(
    rank: int,
    world: int,
    *,
    configs: Sequence[dict[str, Any]],
    widths: Sequence[int] = COMM_WIDTHS,
    batch: int = 32,
    steps: int = 6,
) -> list[dict[str, Any]]:
    """Count DDP's gradient traffic for each config: all-reduce calls and bytes per step.

    A config is ``{"name", "bucket_cap_mb", "hook", "accumulate", "no_sync"}``: the bucket
    size, a communication hook (``allreduce``, ``fp16``, ``bf16``, ``powersgd``), and
    ``accumulate`` micro-batches per optimizer step with or without ``no_sync``. Each
    result also holds the relative error of the communicated gradient against an exact
    fp32 average (compression is not free). Counts and bytes are exact on any machine; the
    time of a step is measured by :func:`comm_compare`, in paired rounds.
    """
    results = []
    data = _comm_data(rank, widths, batch)
    for cfg in configs:
        model = _comm_ddp(cfg, widths)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        batches = itertools.cycle(data)
        with count_collectives() as counter:
            for step in range(steps + 3):  # 3 warm-up steps: DDP rebuilds buckets after one
                if step == 3:
                    counter.reset()
                _comm_step(model, opt, batches, cfg)
        results.append({
            "name": cfg["name"], "calls_per_step": counter.calls / steps,
            "bytes_per_step": counter.bytes / steps, "grad_error": _gradient_error(model, data[0]),
        })  # fmt: skip
    return results


def _gradient_error(model: DDP, x: torch.Tensor) -> float:
    """Relative error of DDP's (hooked) averaged gradient against an exact fp32 all-reduce."""
    model.zero_grad()
    model(x).pow(2).mean().backward()  # through DDP and its hook
    communicated = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    model.module(x).pow(2).mean().backward()  # the plain module: local gradient only
    exact = torch.cat([p.grad.flatten() for p in model.module.parameters()])
    dist.all_reduce(exact)  # the reference: an fp32 sum over ranks...
    exact /= dist.get_world_size()  # ...averaged, as DDP does
    model.zero_grad()
    return ((communicated - exact).norm() / exact.norm()).item()


# ------------------------------------------------------------------------------ persistent ranks
class RankPool:
    """N ranks started once, joined in one process group, that run functions on demand.

    Taught in ``10_ddp`` and ``11_scheduling``. A timing verdict needs paired, interleaved
    rounds (:func:`d2lopt.compare.compare`); launching a fresh job for every round would time
    interpreter start-up and the rendezvous, not training. These ranks start once and then
    wait on a pipe (idle, taking no core) until :meth:`run` sends them an importable function
    ``fn(rank, world_size, **kwargs)``; every rank runs it and :meth:`run` returns what each
    returned, in rank order. They are *spawned*, not forked, so each may use several OpenMP
    threads (a forked child cannot), and on a GPU node rank ``r`` owns ``cuda:r``.

    Example:
        >>> with RankPool(2) as pool:  # doctest: +SKIP
        ...     pool.run(data_parallel_step, mode="ddp", steps=4, batch=64)
        [None, None]
    """

    def __init__(self, nprocs: int, *, device: str = "cpu", timeout_s: float = 120.0) -> None:
        if not isinstance(nprocs, int) or isinstance(nprocs, bool) or nprocs < 1:
            raise ValueError(f"nprocs: must be a positive int, got {nprocs!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and torch.cuda.device_count() < nprocs:
            raise ValueError(
                f"nprocs: {nprocs} ranks need {nprocs} GPUs, this machine has "
                f"{torch.cuda.device_count()}; use fewer ranks or device='cpu'"
            )
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"timeout_s: must be a number of seconds > 0, got {timeout_s!r}")
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.world, self.device, self.timeout_s = nprocs, device, float(timeout_s)
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        port = free_port()
        for rank in range(nprocs):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_pool_main, args=(rank, nprocs, port, device, theirs,
                                                        timeout_s), daemon=True)  # fmt: skip
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
        try:
            for rank in range(nprocs):
                self._answer(rank)  # "ready": the process group exists
        except BaseException:
            self.close()
            raise

    def run(self, fn: Callable[..., Any], /, **kwargs: Any) -> list[Any]:
        """Run ``fn(rank, world_size, **kwargs)`` on every rank; their results in rank order."""
        if not self._conns:
            raise RuntimeError("RankPool.run: the pool is closed; start a new RankPool")
        for conn in self._conns:
            conn.send((fn, kwargs))
        return [self._answer(rank) for rank in range(self.world)]

    def _answer(self, rank: int) -> Any:
        conn = self._conns[rank]
        # a rank stuck in a collective fails after timeout_s; wait a little longer for its report
        if not conn.poll(self.timeout_s + 30):
            raise TimeoutError(
                f"RankPool: rank {rank} did not answer within {self.timeout_s:.0f} s; raise "
                "timeout_s, or close the pool and start a new one"
            )
        try:
            status, value = conn.recv()
        except EOFError:
            code = self._procs[rank].exitcode
            raise RuntimeError(
                f"RankPool: rank {rank} died (exit code {code}); start a new one"
            ) from None
        if status == "error":
            raise RuntimeError(f"RankPool: rank {rank} failed:\n{value}")
        return value

    def close(self) -> None:
        """Let every rank leave the process group and exit (idempotent)."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()  # stuck in a collective: no clean exit possible
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pool_main(rank: int, world: int, port: int, device: str, conn: Any, timeout_s: float) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    try:
        setup(device, timeout_s=timeout_s)  # gloo on CPU, NCCL on cuda:rank
        conn.send(("ok", "ready"))
        while (message := conn.recv()) is not None:  # idle here: no core is taken
            fn, kwargs = message
            try:
                conn.send(("ok", fn(rank, world, **kwargs)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except EOFError:
        pass  # the parent went away
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        teardown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of torch: seconds per rank, nothing to save


_STATE: dict[tuple, dict[str, Any]] = {}  # per rank process: what the first call built


def _cores() -> int:
    return _usable_cores()  # the cores this process may use (01_environment)


def data_parallel_step(
    rank: int, world: int, *, mode: str, steps: int, batch: int, device: str = "cpu",
    model: str = "mlp",
) -> None:  # fmt: skip
    """``steps`` optimizer steps of the course model on one global batch of ``world * batch``.

    ``mode="one"``: rank 0 alone trains on the whole global batch, with every core; the
    other ranks return at once and wait idle. ``mode="ddp"``: every rank trains on its
    ``batch`` under DDP, with ``cores // world`` threads each. Both do the same work with the
    same cores (or one GPU vs ``world`` GPUs), so comparing them changes exactly one thing:
    how many processes share it (B1 in ``10_ddp``). The batches are already on the device:
    this measures computation and gradient communication, not loading. The first call of a
    mode builds the model, optimizer and data; later calls reuse them.
    """
    if mode not in ("one", "ddp"):
        raise ValueError(f"mode: must be 'one' or 'ddp', got {mode!r}")
    if model not in ("mlp", "cnn"):
        raise ValueError(f"model: must be 'mlp' or 'cnn' (the course models), got {model!r}")
    if mode == "one" and rank != 0:
        return None  # back to the pipe: this rank takes no core while rank 0 trains
    dev = rank_device(rank, device)
    torch.set_num_threads(_cores() if mode == "one" else max(1, _cores() // world))
    key = ("data_parallel_step", mode, batch, model, str(dev))
    if key not in _STATE:
        torch.manual_seed(0)  # the same initial weights on every rank and in both modes
        net = (mlp() if model == "mlp" else cnn()).apply(init_weights).to(dev)
        ids = [dev.index] if dev.type == "cuda" else None
        wrapped = DDP(net, device_ids=ids) if mode == "ddp" else net
        n = batch * (world if mode == "one" else 1)  # samples per step on this rank
        g = torch.Generator().manual_seed(rank)  # FashionMNIST's shapes; values do not matter
        images, labels = torch.rand(4 * n, 1, 28, 28, generator=g), torch.arange(4 * n) % 10
        data = list(zip(images.to(dev).split(n), labels.to(dev).split(n), strict=True))
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        _STATE[key] = {"model": wrapped, "opt": opt, "batches": itertools.cycle(data)}
    state = _STATE[key]
    for _ in range(steps):
        X, y = next(state["batches"])
        state["opt"].zero_grad(set_to_none=True)
        F.cross_entropy(state["model"](X), y).backward()  # DDP: all-reduce inside
        state["opt"].step()
    synchronize(dev)  # the parent times until every rank answers: queued GPU work counts
    return None


def compare_scaling(
    pool: RankPool, *, batch: int, steps: int = 4, model: str = "mlp", **compare_kwargs: Any
) -> Comparison:
    """One process vs ``pool.world`` DDP ranks on the same global batch, in paired rounds.

    Returns the :class:`~d2lopt.compare.Comparison` of the claim "``pool.world`` processes
    train faster than one" (speedup = time of one process / time of the ranks). Taught in
    ``10_ddp`` (B1) and fed to the cluster simulation of ``11_scheduling``.
    """

    def run(mode: str) -> Callable[[], Any]:
        return lambda: pool.run(data_parallel_step, mode=mode, steps=steps, batch=batch,
                                device=pool.device, model=model)  # fmt: skip

    for mode in ("one", "ddp"):  # untimed: the first call of a mode builds model and data
        run(mode)()
    label = f"{pool.world} ranks vs 1 process"
    return compare(run("one"), run("ddp"), label=label, **compare_kwargs)


def scaling_verdict(
    result: Comparison, world: int, claim: str, statement: str, condition: str = ""
) -> Verdict:
    """The verdict row of a :func:`compare_scaling` result, with its parallel efficiency.

    Efficiency = speedup / ``world``. Above 100 % the ranks did more than ``world`` times the
    work of one process with the same cores, which means the baseline was handicapped (busy
    cores, an OpenMP pool waiting for a descheduled thread): such a row is an *invalid
    measurement*, reported as inconclusive, never as a result.
    """
    efficiency = result.speedup / world
    if efficiency > 1:
        return Verdict(claim, statement,
                       f"invalid measurement: {result} is a parallel efficiency of "
                       f"{efficiency:.0%}, above 100 %; the one-process baseline was slowed "
                       "by something else (busy cores?): re-run on an idle machine",
                       INCONCLUSIVE, "invalid measurement")  # fmt: skip
    row = result.to_verdict(claim, statement, condition=condition)
    return replace(row, evidence=f"{row.evidence}; efficiency {efficiency:.0%}")


def lockstep_compare_many(
    fns: dict[str, Callable[[], Any]], *, reference: str, **kwargs: Any
) -> Sweep | None:
    """:func:`d2lopt.compare.compare_many` on rank 0, every other rank in lockstep.

    Call it on every rank with the same variant names (each rank's functions may differ,
    e.g. only the straggler sleeps). Rank 0 measures: before each call it broadcasts which
    variant comes next, and the other ranks run the same variant, so a DDP step meets its
    peers in every all-reduce. The broadcast is a sync point that starts every call on all
    ranks together, the same small cost in every variant. Returns the
    :class:`~d2lopt.compare.Sweep` on rank 0 and None elsewhere.
    """
    names = list(fns)
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL broadcasts CUDA tensors only
    order = torch.zeros(1, dtype=torch.int64, device=on)
    if dist.get_rank() == 0:

        def announced(i: int) -> Callable[[], Any]:
            def call() -> Any:
                order.fill_(i)
                dist.broadcast(order, 0)  # "variant i next": the others start it with us
                return fns[names[i]]()

            return call

        try:
            return compare_many({n: announced(i) for i, n in enumerate(names)},
                                reference=reference, **kwargs)  # fmt: skip
        finally:
            order.fill_(-1)
            dist.broadcast(order, 0)  # stop
    while True:
        dist.broadcast(order, 0)
        i = int(order.item())
        if i < 0:
            return None
        fns[names[i]]()


def straggler_compare(
    rank: int, world: int, *, delays: Sequence[float], slow_rank: int = 1, width: int = 256,
    batch: int = 64, **compare_kwargs: Any,
) -> Sweep | None:  # fmt: skip
    """Rank 0's DDP step time while ``slow_rank`` spends each extra delay per step.

    The delay stands for a slower GPU, a throttled node or a data loader that cannot keep
    up; rank 0 is never delayed itself. The variants are named ``"no delay"`` and
    ``"+10 ms"`` etc.; the reference is the largest delay, so each comparison asks "is rank
    0 faster when the straggler is less slow?" (B3 in ``11_scheduling``). Returns the
    :class:`~d2lopt.compare.Sweep` on rank 0, None elsewhere.
    """
    if not delays or any(d < 0 for d in delays):
        raise ValueError(f"delays: need seconds >= 0, e.g. [0.0, 0.01], got {delays!r}")
    if not 0 < slow_rank < world:
        raise ValueError(f"slow_rank: must be in 1..{world - 1} (rank 0 measures), got {slow_rank}")
    torch.set_num_threads(max(1, _cores() // world))
    model = DDP(comm_model([width, width, width, 10]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(rank))

    def step(delay: float) -> None:
        loss = model(x).pow(2).mean()
        if rank == slow_rank:
            time.sleep(delay)  # the straggler's extra work
        loss.backward()  # DDP's all-reduce inside waits for every rank's gradients
        opt.step()
        opt.zero_grad()

    fns = {delay_name(d): functools.partial(step, d) for d in delays}
    return lockstep_compare_many(fns, reference=delay_name(max(delays)), **compare_kwargs)


def delay_name(delay: float) -> str:
    """The variant name :func:`straggler_compare` gives a delay: ``"no delay"``, ``"+10 ms"``."""
    return "no delay" if delay == 0 else f"+{delay * 1e3:g} ms"


def comm_compare(
    rank: int, world: int, *, configs: Sequence[dict[str, Any]], reference: str,
    widths: Sequence[int] = COMM_WIDTHS, batch: int = 32, **compare_kwargs: Any,
) -> Sweep | None:  # fmt: skip
    """Time one optimizer step of each communication config in paired rounds (rank 0).

    The configs are those of :func:`comm_worker`; ``reference`` names one of them. Returns
    the :class:`~d2lopt.compare.Sweep` on rank 0, None elsewhere (``11_scheduling``).
    """
    torch.set_num_threads(max(1, _cores() // world))
    data = _comm_data(rank, widths, batch)
    fns = {}
    for cfg in configs:
        model = _comm_ddp(cfg, widths)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        fns[cfg["name"]] = functools.partial(_comm_step, model, opt, itertools.cycle(data), cfg)
    # DDP rebuilds its buckets after the first step and PowerSGD compresses from the third
    compare_kwargs.setdefault("warmup", 3)
    return lockstep_compare_many(fns, reference=reference, **compare_kwargs)


# ------------------------------------------------------------------------------ cluster
def amdahl_fraction(speedups: dict[int, float]) -> float:
    """The parallel fraction ``p`` of Amdahl's law fitted to measured speedups.

    ``speedup(n) = 1 / ((1 - p) + p / n)``; ``p`` is fitted to the largest measured ``n``
    and clipped to [0, 1] (a measured slowdown means ``p = 0``: nothing to gain).
    """
    n = max(speedups)
    if n < 2:
        return 0.0
    p = (1 - 1 / speedups[n]) / (1 - 1 / n)
    return min(1.0, max(0.0, p))


def speedup_curve(speedups: dict[int, float]) -> Callable[[int], float]:
    """Speedup for any worker count: the measured points, Amdahl's law elsewhere.

    Unmeasured counts follow Amdahl's law through the largest measured point, so a measured
    slowdown stays a slowdown (more workers never look better than measured).
    """
    if 1 not in speedups or any(n < 1 or s <= 0 for n, s in speedups.items()):
        raise ValueError(f"speedups: need {{1: 1.0, n: speedup, ...}} with n >= 1, got {speedups}")
    p, m = amdahl_fraction(speedups), max(speedups)

    def amdahl(n: int) -> float:
        return 1 / ((1 - p) + p / n)

    def curve(n: int) -> float:
        if n in speedups:
            return speedups[n]
        return amdahl(n) * speedups[m] / amdahl(m) if n > 0 else 0.0

    return curve


@dataclass
class Job:
    """A training job: ``work`` is its run time on one worker (seconds)."""

    name: str
    arrival: float
    work: float
    workers: int  # what it asks for (FIFO/priority), its maximum under elastic
    priority: int = 0
    min_workers: int = 1


@dataclass
class SimResult:
    """Per-job start and finish times of one simulated schedule."""

    policy: str
    start: dict[str, float]
    finish: dict[str, float]
    busy: float  # worker-seconds allocated
    total_workers: int

    def jct(self, jobs: Sequence[Job]) -> dict[str, float]:
        """Job completion time: finish - arrival."""
        return {j.name: self.finish[j.name] - j.arrival for j in jobs}

    def makespan(self) -> float:
        return max(self.finish.values())

    def utilization(self) -> float:
        return self.busy / (self.total_workers * self.makespan())


def _elastic_allocation(active: list[Job], total: int, speedup: Callable[[int], float]):
    """Minimums by priority, then each spare worker where it adds the most speedup."""
    alloc: dict[str, int] = {}
    free = total
    for job in sorted(active, key=lambda j: (-j.priority, j.arrival)):
        if job.min_workers <= free:
            alloc[job.name], free = job.min_workers, free - job.min_workers
    while free > 0:
        best, gain = None, 0.0
        for job in active:
            n = alloc.get(job.name, 0)
            if 0 < n < job.workers:
                g = (speedup(n + 1) - speedup(n)) * (1 + job.priority)
                if g > gain + 1e-12:
                    best, gain = job, g
        if best is None:
            break
        alloc[best.name] += 1
        free -= 1
    return alloc


def simulate(
    jobs: Sequence[Job],
    total_workers: int,
    policy: str,
    speedup: Callable[[int], float],
    *,
    resize_cost: float = 0.0,
) -> SimResult:
    """Event-driven schedule of ``jobs`` on ``total_workers`` under ``policy``.

    ``fifo``: arrival order, each job waits for all the workers it asks for (the head of the
    queue blocks the rest). ``priority``: the same, but the waiting job with the highest
    priority goes first. ``elastic``: at every arrival and completion, workers are
    re-divided among all jobs (minimums by priority first, then by marginal speedup), like
    torchrun ``--nnodes MIN:MAX`` jobs that resume from a checkpoint; each resize of a
    running job costs ``resize_cost`` seconds of no progress. A job on ``n`` workers runs
    ``speedup(n)`` times faster than on one.
    """
    if policy not in ("fifo", "priority", "elastic"):
        raise ValueError(f"policy: must be 'fifo', 'priority' or 'elastic', got {policy!r}")
    if any(j.workers > total_workers or j.min_workers > j.workers for j in jobs):
        raise ValueError("jobs: every job needs min_workers <= workers <= total_workers")
    left = {j.name: j.work for j in jobs}
    alloc: dict[str, int] = {}
    paused: dict[str, float] = {}
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    pending = sorted(jobs, key=lambda j: j.arrival)
    waiting: list[Job] = []
    now, busy = 0.0, 0.0
    while len(finish) < len(jobs):
        while pending and pending[0].arrival <= now + 1e-9:
            waiting.append(pending.pop(0))
        running = [j for j in jobs if j.name in alloc]
        if policy == "elastic":
            new = _elastic_allocation(running + waiting, total_workers, speedup)
            for name, n in new.items():
                if name in alloc and alloc[name] != n and resize_cost:
                    paused[name] = now + resize_cost
            alloc = new
            waiting = [j for j in waiting if j.name not in alloc]
        else:
            if policy == "priority":
                waiting.sort(key=lambda j: (-j.priority, j.arrival))
            free = total_workers - sum(alloc.values())
            while waiting and waiting[0].workers <= free:
                job = waiting.pop(0)
                alloc[job.name], free = job.workers, free - job.workers
        for name in alloc:
            start.setdefault(name, now)
        # next event: an arrival, a completion, or the end of a pause
        events = [pending[0].arrival] if pending else []
        for name, n in alloc.items():
            t0 = max(now, paused.get(name, now))
            events.append(t0 + left[name] / speedup(n))
            if t0 > now:
                events.append(t0)
        t_next = min(events)
        for name, n in alloc.items():
            run = max(0.0, t_next - max(now, paused.get(name, now)))
            left[name] -= run * speedup(n)
            busy += n * (t_next - now)
        now = t_next
        for name in [n for n in alloc if left[n] <= 1e-9]:
            finish[name] = now
            del alloc[name]
    return SimResult(policy, start, finish, busy, total_workers)
