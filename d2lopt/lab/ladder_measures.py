"""What one ladder run measures: its time, where it went, and its peak memory.

Taught in ``12_putting_it_together``. :class:`Timed` wraps a run's training loader and
times it batch by batch, so :class:`RunStats` keeps the fixed costs (start-up to the first
batch, the first step's extra time: compilation) apart from the steady state, and the data
stalls (time inside ``next()``); :class:`PeakMemory` samples the memory the run holds.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
from collections.abc import Iterable
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
    """The training loader of one run, timed batch by batch (fit reads sampler/dataset)."""

    def __init__(self, loader: Iterable, start: float) -> None:
        self.loader, self.start = loader, start
        self.startup: float | None = None
        self.first_step: float | None = None
        self.waited, self.bodies, self.samples = 0.0, [], 0

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, generator, persistent_workers
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self):
        t = time.perf_counter()
        batches = iter(self.loader)  # non-persistent workers start here: a stall
        for batch in batches:
            got = time.perf_counter()
            if self.startup is None:
                self.startup = got - self.start
            else:
                self.waited += got - t
            self.samples += len(batch[1])
            yield batch
            t = time.perf_counter()
            if self.first_step is None:
                self.first_step = t - got
            else:
                self.bodies.append(t - got)

    def stats(self, seconds: float) -> RunStats:
        step = statistics.median(self.bodies) if self.bodies else (self.first_step or 0.0)
        return RunStats(
            samples=self.samples,
            seconds=seconds,
            startup=self.startup if self.startup is not None else seconds,
            first_step=self.first_step or 0.0,
            step=step,
            waited=self.waited,
            stepped=sum(self.bodies),
        )


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; elsewhere the
    proportional set size (PSS, via psutil) of this process and its loader workers, sampled
    every 50 ms. PSS counts a page a forked worker shares with its parent half for each,
    so workers are not double-counted (RSS where the OS has no PSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._thread = device, 0, None
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
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak / 2**20 if self.peak else None
