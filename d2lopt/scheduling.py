"""Load balancing, communication and job scheduling, measured (taught in ``11_scheduling``).

The article names three scheduling concerns — load balancing, communication, dynamic
adjustment — and, for clusters, priority scheduling and dynamic allocation. This module
holds the experiments that measure them on the machine at hand:

* :func:`launch` runs a worker function on N forked processes joined in a gloo process
  group (``torch.multiprocessing.start_processes``) and returns what each rank returned;
* worker functions (:func:`uneven_inputs_worker`, :func:`straggler_worker`,
  :func:`comm_worker`) are importable, so they also work under spawn and torchrun;
* :class:`CollectiveCounter` counts the all-reduce calls and bytes DDP really issues;
* :func:`simulate` is a small job-queue simulation (FIFO, priority, elastic) driven by a
  scaling curve measured here (:func:`speedup_curve`).

These experiments run on CPU processes with gloo: they measure mechanisms (how many
collectives, how many bytes, who waits for whom). NCCL on GPUs changes the constants.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .distributed import free_port

__all__ = [
    "COMM_WIDTHS",
    "CollectiveCounter",
    "Job",
    "SimResult",
    "amdahl_fraction",
    "comm_model",
    "comm_worker",
    "count_collectives",
    "launch",
    "sampler_shards",
    "simulate",
    "speedup_curve",
    "straggler_worker",
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


def straggler_worker(
    rank: int, world: int, *, steps: int, slow_rank: int, delay_s: float, width: int = 256
) -> dict[str, Any]:
    """Every rank trains ``steps`` steps; ``slow_rank`` spends ``delay_s`` more per step.

    The delay stands for a slower GPU, a throttled node or a data loader that cannot keep
    up. Returned per rank: median step time, and the median time spent inside
    ``backward()`` — where DDP's all-reduce waits for the slowest rank.
    """
    model = DDP(comm_model([width, width, width, 10]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(rank))
    step_times, backward_times = [], []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        loss = model(x).pow(2).mean()
        if rank == slow_rank:
            time.sleep(delay_s)  # the straggler's extra work
        t1 = time.perf_counter()
        loss.backward()  # the all-reduce inside waits for every rank's gradients
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            step_times.append(time.perf_counter() - t0)
            backward_times.append(t2 - t1)
    return {
        "rank": rank,
        "step_s": statistics.median(step_times),
        "backward_s": statistics.median(backward_times),
    }


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


def comm_worker(
    rank: int,
    world: int,
    *,
    configs: Sequence[dict[str, Any]],
    widths: Sequence[int] = COMM_WIDTHS,
    batch: int = 32,
    steps: int = 6,
) -> list[dict[str, Any]]:
    """Measure DDP's gradient traffic for each config: calls, bytes and time per step.

    A config is ``{"name", "bucket_cap_mb", "hook", "accumulate", "no_sync"}``: the bucket
    size, a communication hook (``allreduce``, ``fp16``, ``bf16``, ``powersgd``), and
    ``accumulate`` micro-batches per optimizer step with or without ``no_sync``. Each
    result also holds the relative error of the communicated gradient against an exact
    fp32 average (compression is not free).
    """
    results = []
    g = torch.Generator().manual_seed(100 + rank)
    data = [torch.randn(batch, widths[0], generator=g) for _ in range(8)]
    for cfg in configs:
        K = cfg.get("accumulate", 1)
        model = DDP(comm_model(widths), bucket_cap_mb=cfg.get("bucket_cap_mb", 25.0))
        _register_hook(model, cfg.get("hook", "allreduce"))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        times = []
        with count_collectives() as counter:
            for step in range(steps + 3):  # 3 warm-up steps: DDP rebuilds buckets after one
                if step == 3:
                    counter.reset()
                t0 = time.perf_counter()
                for k in range(K):
                    skip = cfg.get("no_sync", False) and k < K - 1
                    with model.no_sync() if skip else contextlib.nullcontext():
                        model(data[(step * K + k) % len(data)]).pow(2).mean().div(K).backward()
                opt.step()
                opt.zero_grad()
                if step >= 3:
                    times.append(time.perf_counter() - t0)
        results.append({
            "name": cfg["name"], "calls_per_step": counter.calls / steps,
            "bytes_per_step": counter.bytes / steps, "step_s": statistics.median(times),
            "grad_error": _gradient_error(model, data[0]),
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
