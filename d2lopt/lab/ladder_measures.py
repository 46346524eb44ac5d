"""What one ladder run measures: its time, where it went, and its peak memory.

Taught in ``12_putting_it_together``. :class:`Timed` wraps a run's training loader and
times it batch by batch, so :class:`RunStats` keeps the fixed costs (start-up to the first
batch, the first step's extra time: compilation) apart from the steady state, and the data
stalls (time inside ``next()``); :class:`PeakMemory` samples the memory the run holds.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PeakMemory", "RunStats", "Timed"]


@dataclass(frozen=True)
class RunStats:
    """One whole run: its time, and where the time went (fixed costs, stalls)."""

    samples: int  # training samples
    seconds: float  # the whole run: loaders built, training, evaluation
    startup: float  # run start -> first training batch (loader and worker start-up, decode)
    first_step: float  # the first loop body (first-call compilation, lazy initialization)
    step: float  # median loop body after the first
    waited: float  # seconds inside next() after the first batch: data stalls
    stepped: float  # seconds in loop bodies after the first
    peak_memory_mib: float | None = None

    @property
    def fixed(self) -> float:
        """Fixed costs: start-up plus what the first step took beyond a normal one."""
        return self.startup + max(0.0, self.first_step - self.step)

    @property
    def stall_fraction(self) -> float:
        """Share of the steady training loop spent waiting for the next batch."""
        busy = self.waited + self.stepped
        return self.waited / busy if busy > 0 else math.nan

    @property
    def steady_samples_per_s(self) -> float:
        return self.samples / max(self.seconds - self.fixed, 1e-9)


class Timed:
    """The training loader of one run, timed batch by batch (fit reads sampler/dataset).

    On the CPU the stalls are host time inside ``next()``, and a step body is host time:
    the host does the work. On CUDA the host only queues a step, so host time inside
    ``next()`` would include the GPU work that a blocking call in the loader waits for
    (a pageable copy, a stream sync) and report it as a stall. There, a CUDA event is
    recorded when the host asks for the next batch (after the step was queued) and when it
    gets it: the GPU time between the two is what the device *idled* for data (0 when the
    batch came before the queued step ran out; the loader's own GPU work, decode or
    augmentation, counts as data time), and the GPU time from getting a batch to the end
    of its step is the step's. An epoch's first batch follows evaluation (host syncs):
    its wait stays host time.
    """

    def __init__(
        self,
        loader: Iterable,
        start: float,
        device: torch.device | None = None,
        event: Callable[[], Any] | None = None,
    ) -> None:
        self.loader, self.start = loader, start
        self.startup: float | None = None
        self.first_step: float | None = None
        self.waited, self.bodies, self.samples = 0.0, [], 0
        cuda = device is not None and torch.device(device).type == "cuda"
        if event is None and cuda:
            event = functools.partial(torch.cuda.Event, enable_timing=True)
        self._event = event
        self._gaps: list[tuple[Any, Any]] = []  # (step queued, batch got): device idle
        self._steps: list[tuple[Any, Any]] = []  # (batch got, step queued): device busy
        self._epoch_starts = 0.0  # host seconds to each later epoch's first batch

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, generator, persistent_workers
        if name in ("loader", "_event"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _record(self) -> Any:
        ev = self._event()
        ev.record()  # on the current stream, behind the work queued so far
        return ev

    def __iter__(self):
        t = time.perf_counter()
        asked = None  # the event behind the step queued last, in this epoch
        batches = iter(self.loader)  # non-persistent workers start here: a stall
        for batch in batches:
            got = time.perf_counter()
            got_event = None
            if self.startup is None:
                self.startup = got - self.start
            else:
                self.waited += got - t
                if self._event is not None:
                    got_event = self._record()
                    if asked is not None:
                        self._gaps.append((asked, got_event))
                    else:  # an epoch's first batch: evaluation ran before it, host time
                        self._epoch_starts += got - t
            self.samples += len(batch[1])
            yield batch
            t = time.perf_counter()
            asked = self._record() if self._event is not None else None
            if self.first_step is None:
                self.first_step = t - got
            else:
                self.bodies.append(t - got)
                if got_event is not None:
                    self._steps.append((got_event, asked))

    def stats(self, seconds: float) -> RunStats:
        """The run's numbers; on CUDA call it after synchronizing (the events must be done)."""
        step = statistics.median(self.bodies) if self.bodies else (self.first_step or 0.0)
        waited, stepped = self.waited, sum(self.bodies)
        if self._event is not None and self._steps:  # GPU time, ms -> s
            waited = self._epoch_starts + sum(a.elapsed_time(b) for a, b in self._gaps) / 1e3
            stepped = sum(a.elapsed_time(b) for a, b in self._steps) / 1e3
        return RunStats(
            samples=self.samples,
            seconds=seconds,
            startup=self.startup if self.startup is not None else seconds,
            first_step=self.first_step or 0.0,
            step=step,
            waited=waited,
            stepped=stepped,
        )


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; elsewhere the
    proportional set size (PSS, via psutil) of this process and its loader workers, sampled
    every 50 ms. PSS counts a page a forked worker shares with its parent half for each,
    so workers are not double-counted (RSS where the OS has no PSS).

    On a GPU it is the run's *own* peak: what it allocated on top of what was already
    allocated when it started. ``reset_peak_memory_stats`` sets the peak to the memory
    allocated now, not to zero (pytorch/pytorch ``c10/cuda/CUDACachingAllocator.cpp``,
    ``resetPeakStats`` -> ``reset_peak_stat``: ``stat.peak = stat.current``), so the absolute
    ``max_memory_allocated`` would charge every run with whatever earlier runs left behind.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._thread = device, 0, None
        self.baseline = 0  # CUDA: bytes allocated when the run started, not its own
        self._stop = threading.Event()

    @staticmethod
    def _tree_bytes() -> int:
        import psutil

        total = 0
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
        return total

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._tree_bytes())
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.baseline
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak / 2**20 if self.peak else None
