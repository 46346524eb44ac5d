"""Throughput measurements shared by the optimization notebooks and the CLI benchmarks.

Taught in ``05_disk_to_memory``. Loader speed is measured the honest way: the iterator is
created inside the timed region when worker start-up is part of the question, batches are
touched (so lazy work happens), warm-up epochs are discarded, and the median of repeats is
reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .devices import synchronize

__all__ = ["Throughput", "loader_throughput", "time_repeats"]


@dataclass
class Throughput:
    """Samples per second over repeated passes (median and spread)."""

    label: str
    samples_per_s: float
    seconds: list[float] = field(repr=False)
    samples: int = 0

    @property
    def spread(self) -> float:
        """Relative spread of the repeats: (max - min) / median time."""
        return relative_spread(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"spread": self.spread}


def relative_spread(seconds: list[float]) -> float:
    """(max - min) / median of repeated timings: how noisy a measurement was."""
    med = statistics.median(seconds)
    return (max(seconds) - min(seconds)) / med if med > 0 else 0.0


def time_repeats(
    fn: Callable[[], Any],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> list[float]:
    """Wall-clock seconds of ``fn()`` for each of ``repeats`` runs after ``warmup`` runs.

    ``device`` is synchronized before and after each run, so queued GPU work is counted.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"time_repeats: need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}"
        )
    times = []
    for i in range(warmup + repeats):
        if device is not None:
            synchronize(device)
        start = time.perf_counter()
        fn()
        if device is not None:
            synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def loader_throughput(
    loader: Iterable,
    *,
    label: str = "",
    max_batches: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
    non_blocking: bool = False,
) -> Throughput:
    """Samples/s of one pass (or ``max_batches`` batches) over ``loader``, median of repeats.

    Each pass creates a fresh iterator, so worker start-up is included unless the loader
    has ``persistent_workers=True`` (then only the first, warm-up pass pays it). With
    ``device``, each batch is copied there (``non_blocking`` as given), so the host-to-device
    transfer is part of the measurement.
    """
    counted: list[int] = []

    def one_pass() -> None:
        n = 0
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            X = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                X = X.to(device, non_blocking=non_blocking)
            n += len(X)
        counted.append(n)

    seconds = time_repeats(one_pass, repeats=repeats, warmup=warmup, device=device)
    samples = counted[-1]
    return Throughput(label, samples / statistics.median(seconds), seconds, samples)
