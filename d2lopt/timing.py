"""Timers that tell the truth about asynchronous devices (taught in ``05_disk_to_memory``).

CUDA and MPS kernels run asynchronously: a host clock read right after a launch measures
the launch, not the work. Every timer here synchronizes the device it times. Whether one
block of code is faster than another is for :func:`d2lopt.compare` (:mod:`d2lopt.measure`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .devices import as_device, synchronize

__all__ = ["Timer", "count_host_syncs", "SyncCounter"]


class Timer:
    """Record running times; compatible with ``d2l.Timer`` and usable as a context manager.

    Args:
        device: device whose queued work must finish before each clock read
            (``None``: time host code only, like d2l's timer).

    Example:
        >>> t = Timer()
        >>> with t:
        ...     _ = sum(range(1000))
        >>> len(t.times)
        1
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = as_device(device) if device is not None else None
        self.times: list[float] = []
        self.start()

    def _sync(self) -> None:
        if self.device is not None:
            synchronize(self.device)

    def start(self) -> None:
        """Start the timer."""
        self._sync()
        self.tik = time.perf_counter()

    def stop(self) -> float:
        """Stop the timer, record the time in a list, and return it."""
        self._sync()
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        """Return the average time."""
        return sum(self.times) / len(self.times)

    def median(self) -> float:
        """Return the median time (robust to one slow outlier)."""
        return statistics.median(self.times)

    def sum(self) -> float:
        """Return the sum of time."""
        return sum(self.times)

    def cumsum(self) -> list[float]:
        """Return the accumulated time."""
        out, total = [], 0.0
        for t in self.times:
            total += t
            out.append(total)
        return out

    def __enter__(self) -> Timer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SyncCounter:
    """How many host<->device synchronizations a block of code asked for."""

    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


_SYNC_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@contextlib.contextmanager
def count_host_syncs() -> Iterator[SyncCounter]:
    """Count tensor->Python conversions (``.item()``, ``float(t)``, ``.tolist()``...).

    On a GPU each of these blocks the host until the device catches up; on a CPU they are
    cheap, but they are the *same lines* — so counting them on CPU finds the syncs a GPU run
    would pay for (``04_training_loop``). On CUDA, ``torch.cuda.set_sync_debug_mode`` is the
    complementary runtime check.

    It counts conversions of CPU tensors too, e.g. the DataLoader drawing its base seed
    (``.item()``) or ``RandomSampler``'s ``.tolist()``: to count a loop's own syncs, iterate
    over pre-loaded batches, as ``04_training_loop`` does.

    Example:
        >>> with count_host_syncs() as c:
        ...     _ = float(torch.ones(2).sum())
        >>> c.count
        1
    """
    counter = SyncCounter()
    originals = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}
    depth = 0

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            if depth == 0:  # count the outermost call only (float() may call item())
                counter.count += 1
                counter.by_kind[name] = counter.by_kind.get(name, 0) + 1
            depth += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth -= 1

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
