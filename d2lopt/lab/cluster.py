"""Scheduling jobs on a cluster: FIFO, priority and elastic, simulated (B6 in ``11_scheduling``).

:func:`simulate` is a small event-driven job-queue simulation driven by a scaling curve
(:func:`speedup_curve`: measured points; elsewhere Amdahl's law, or a cost per added
worker where the measurement is a slowdown). It is a simulation, fed by
whatever speedup it is given; ``11_scheduling`` feeds it both an assumed curve and the
speedup it measured (:func:`d2lopt.lab.scaling.compare_scaling`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Job",
    "SimResult",
    "amdahl_fraction",
    "describe_curve",
    "overhead_share",
    "simulate",
    "speedup_curve",
]


def amdahl_fraction(speedups: dict[int, float]) -> float:
    """The parallel fraction ``p`` of Amdahl's law fitted to measured speedups.

    ``speedup(n) = 1 / ((1 - p) + p / n)``; ``p`` is fitted to the largest measured ``n``
    and clipped to [0, 1]. A measured slowdown gives ``p = 0``, i.e. a speedup of 1 at any
    ``n``: Amdahl's law cannot express a slowdown (:func:`overhead_share` can).
    """
    n = max(speedups)
    if n < 2:
        return 0.0
    p = (1 - 1 / speedups[n]) / (1 - 1 / n)
    return min(1.0, max(0.0, p))


def overhead_share(speedups: dict[int, float]) -> float:
    """``k`` of ``speedup(n) = n / (1 + k (n - 1))`` through the largest measured ``n``.

    Time on ``n`` workers, as a share of one worker's: ``1/n`` of the work, plus an overhead
    of ``k (n - 1) / n`` -- the share of the gradients a rank of a ring all-reduce sends grows
    as ``(n - 1) / n``. For ``0 <= k <= 1`` this is Amdahl's law with ``p = 1 - k``; ``k > 1``
    is a cost of adding workers larger than what they save: a *slowdown*, which Amdahl's
    law (``speedup >= 1`` for any ``p`` in [0, 1]) cannot express. ``k < 0`` would be more
    than ``n`` times faster on ``n`` workers: no valid curve (an invalid measurement).
    Taught in ``11_scheduling``.
    """
    n = max(speedups)
    if n < 2:
        return 0.0
    return (n / speedups[n] - 1) / (n - 1)


def speedup_curve(speedups: dict[int, float]) -> Callable[[int], float]:
    """Speedup for any worker count: the measured points, :func:`overhead_share`'s model elsewhere.

    Unmeasured counts follow ``n / (1 + k (n - 1))`` through the largest measured point: a
    curve that scales follows Amdahl's law, and a measured slowdown keeps slowing down as
    the overhead grows with every worker, towards ``1 / k``. A speedup above ``n`` on ``n``
    workers (efficiency above 100 %) fits no curve: ``ValueError``.
    """
    if 1 not in speedups or any(n < 1 or s <= 0 for n, s in speedups.items()):
        raise ValueError(f"speedups: need {{1: 1.0, n: speedup, ...}} with n >= 1, got {speedups}")
    k = overhead_share(speedups)
    if k < 0:
        raise ValueError(
            f"speedups: {speedups} is faster than linear (efficiency above 100 %): no scaling "
            "curve fits an invalid measurement; re-measure on an idle machine"
        )

    def curve(n: int) -> float:
        if n in speedups:
            return speedups[n]
        return n / (1 + k * (n - 1)) if n > 0 else 0.0

    return curve


def describe_curve(speedups: dict[int, float]) -> str:
    """One line naming the model :func:`speedup_curve` fitted, and its parameter."""
    k = overhead_share(speedups)
    if k <= 1:
        return f"Amdahl's law, parallel fraction p = {1 - k:.3f}"
    return (
        f"a slowdown, which Amdahl's law cannot express: the work divided by n plus an overhead "
        f"of {k:.2f} x (n-1)/n of one worker's time (ring all-reduce's growth)"
    )


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
