"""Host -> GPU copies measured honestly, and overlapped with compute (``07_cpu_to_gpu``).

Three ways to copy one batch (the PyTorch tutorial "A guide on good usage of non_blocking
and pin_memory()" compares the same three):

* ``pageable``: ``x.to(device)``: the driver stages the pageable buffer through its own
  page-locked bounce buffer; the host waits.
* ``pinned``: ``x_pinned.to(device, non_blocking=True)`` from memory pinned *once*, in
  advance (what ``DataLoader(pin_memory=True)`` does on its pinning thread): a true DMA,
  and the host returns at once.
* ``pin_then_copy``: ``x.pin_memory().to(device, non_blocking=True)`` on the spot: the
  pinning (page-locked allocation + a host copy) is paid on the critical path, which can
  make it *slower* than the plain pageable copy.
* ``pin_only``: ``x.pin_memory()`` alone, no copy: the price of pinning on the spot.

Everything here needs CUDA. On other devices each function returns a result whose
``skipped`` field says why, so notebooks print "skipped" instead of inventing numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .bench import time_repeats
from .devices import synchronize

__all__ = [
    "COPY_MODES",
    "CopyResult",
    "cuda_skip_reason",
    "copy_bandwidth",
    "cuda_event_seconds",
    "CudaPrefetcher",
    "OverlapResult",
    "overlap_benchmark",
]

COPY_MODES: tuple[str, ...] = (
    "pageable",
    "pageable_non_blocking",
    "pinned",
    "pin_then_copy",
    "pin_only",
)


def cuda_skip_reason(device: torch.device | str) -> str:
    """``""`` when ``device`` is a CUDA device that exists, else why CUDA-only work is skipped."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return f"needs a CUDA GPU (device is {dev.type}): pinned memory and async copies are CUDA"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
    return ""


@dataclass
class CopyResult:
    """Seconds per copy of ``nbytes`` (median of repeats), or why it was not measured."""

    label: str
    nbytes: int
    seconds: list[float] = field(default_factory=list, repr=False)
    skipped: str = ""

    @property
    def median(self) -> float:
        """Median seconds per copy (``nan`` when skipped)."""
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def gb_per_s(self) -> float:
        """Effective bandwidth in GB/s (10^9 bytes), ``nan`` when skipped."""
        return self.nbytes / self.median / 1e9 if self.seconds else float("nan")

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.label}: skipped ({self.skipped})"
        return f"{self.label}: {self.median * 1e3:.3f} ms, {self.gb_per_s:.2f} GB/s"


def copy_bandwidth(
    nbytes: int,
    *,
    mode: str,
    device: torch.device | str = "cuda",
    repeats: int = 5,
    warmup: int = 2,
) -> CopyResult:
    """Time host->``device`` copies of a float32 tensor of ``nbytes`` bytes in ``mode``.

    Each repeat is timed on the host clock between two device synchronizations, so the
    time is the full cost the training loop pays: pinning (for ``pin_then_copy``), the
    transfer, and any staging, not only the DMA itself.

    Args:
        nbytes: size of the tensor (rounded down to whole float32 elements, at least one).
        mode: one of :data:`COPY_MODES`.
        device: a CUDA device; anything else returns a skipped result.
        repeats: timed copies (median reported).
        warmup: untimed copies first (CUDA context, allocator, pinned-memory cache).

    Example:
        >>> copy_bandwidth(1 << 20, mode="pinned", device="cpu").skipped != ""
        True
    """
    if mode not in COPY_MODES:
        raise ValueError(f"mode: must be one of {COPY_MODES}, got {mode!r}")
    if not isinstance(nbytes, int) or nbytes < 4:
        raise ValueError(f"nbytes: must be an int >= 4 (one float32), got {nbytes!r}")
    reason = cuda_skip_reason(device)
    if reason:
        return CopyResult(mode, nbytes, skipped=reason)
    dev = torch.device(device)
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    if mode == "pinned":
        x = x.pin_memory()  # pinned once, outside the timed region (the DataLoader's job)

    def copy() -> None:
        if mode == "pageable":
            x.to(dev)  # blocking: staged through the driver's bounce buffer
        elif mode == "pageable_non_blocking":
            x.to(dev, non_blocking=True)  # pageable source: the driver still stages it
        elif mode == "pinned":
            x.to(dev, non_blocking=True)  # DMA from page-locked memory; host returns at once
        elif mode == "pin_then_copy":
            x.pin_memory().to(dev, non_blocking=True)  # pinning is paid here, every call
        else:
            x.pin_memory()  # page-locked allocation (cached) + a host-to-host copy

    seconds = time_repeats(copy, repeats=repeats, warmup=warmup, device=dev)
    return CopyResult(mode, x.numel() * 4, seconds)


def cuda_event_seconds(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cuda",
    repeats: int = 5,
    warmup: int = 2,
) -> list[float]:
    """Seconds between two CUDA events recorded around ``fn()`` on the current stream.

    The GPU stamps each event when its stream reaches it, so the host never has to wait in
    between (only once, for the end event): the way to time GPU work without adding syncs
    to the loop. Caveat: when the stream is idle, the start event is stamped at once, so
    host-side work inside ``fn`` (``pin_memory()``, Python) is included too. Raises
    ``ValueError`` off CUDA (check :func:`cuda_skip_reason` first).
    """
    reason = cuda_skip_reason(device)
    if reason:
        raise ValueError(f"device: cuda_event_seconds {reason}")
    dev = torch.device(device)
    times = []
    with torch.cuda.device(dev):
        for i in range(warmup + repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()  # host waits for the end event: a deliberate sync point
            if i >= warmup:
                times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
    return times


class CudaPrefetcher:
    """Iterate ``(X, y)`` batches already on ``device``, copying batch i+1 during step i.

    On CUDA the copy of the next batch is issued on a side stream *before* the caller
    computes on the current one, so the copy engine and the compute units work at the
    same time. The compute stream waits for the copy (``wait_stream``) before using a
    batch, and ``record_stream`` tells the caching allocator the batch is used there.
    Pinned source batches (``DataLoader(pin_memory=True)``) are needed for the copy to be
    asynchronous. On CPU or MPS it degrades to a plain ``.to(device)`` per batch.

    Example:
        >>> batches = [(torch.ones(2, 3), torch.zeros(2))]
        >>> [X.shape for X, y in CudaPrefetcher(batches, "cpu")]
        [torch.Size([2, 3])]
    """

    def __init__(self, loader: Iterable, device: torch.device | str) -> None:
        self.loader = loader
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for X, y in self.loader:
                yield X.to(self.device), y.to(self.device)  # a no-op on CPU
            return
        copy_stream = torch.cuda.Stream(self.device)
        compute_stream = torch.cuda.current_stream(self.device)
        batches = iter(self.loader)

        def load_next() -> tuple[torch.Tensor, torch.Tensor] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            X, y = batch
            with torch.cuda.stream(copy_stream):
                # async only from pinned memory; the host does not wait for it
                return X.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

        nxt = load_next()
        while nxt is not None:
            compute_stream.wait_stream(copy_stream)  # device-side wait: the host keeps going
            X, y = nxt
            X.record_stream(compute_stream)  # memory is used on the compute stream too
            y.record_stream(compute_stream)
            nxt = load_next()  # start copying batch i+1 before the caller computes on batch i
            yield X, y


@dataclass
class OverlapResult:
    """Seconds for one pass over the batches in each copy/compute arrangement."""

    seconds: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    @property
    def ideal(self) -> float:
        """The best overlap can do: the longer of copy-only and compute-only."""
        if self.skipped:
            return float("nan")
        return max(self.seconds["copy only"], self.seconds["compute only"])


def overlap_benchmark(
    batches: Sequence[torch.Tensor],
    compute: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device | str = "cuda",
    repeats: int = 3,
    warmup: int = 1,
) -> OverlapResult:
    """Median seconds of one pass over ``batches`` (host tensors) in five arrangements.

    * ``copy only`` / ``compute only``: the two parts alone (compute on resident copies);
    * ``blocking (pageable)``: ``X.to(device)`` then ``compute(X)``: nothing overlaps;
    * ``non_blocking (pinned)``: pinned batches, ``non_blocking=True`` on the default
      stream: the host runs ahead, but copy and compute still take turns on the GPU;
    * ``prefetch (side stream)``: :class:`CudaPrefetcher`: copy i+1 overlaps compute i.

    Off CUDA the result is skipped (nothing to overlap: the CPU computes on host memory).
    """
    reason = cuda_skip_reason(device)
    if reason:
        return OverlapResult(skipped=reason)
    if not batches:
        raise ValueError("batches: need at least one host tensor")
    dev = torch.device(device)
    pageable = [b.cpu() for b in batches]
    pinned = [b.pin_memory() for b in pageable]  # pinned once, up front
    resident = [b.to(dev) for b in pageable]
    labels = [torch.zeros(len(b), dtype=torch.long).pin_memory() for b in pageable]

    def run_copy_only() -> None:
        for b in pinned:
            b.to(dev, non_blocking=True)

    def run_compute_only() -> None:
        for b in resident:
            compute(b)

    def run_blocking() -> None:
        for b in pageable:
            compute(b.to(dev))

    def run_non_blocking() -> None:
        for b in pinned:
            compute(b.to(dev, non_blocking=True))

    def run_prefetch() -> None:
        for X, _ in CudaPrefetcher(list(zip(pinned, labels, strict=True)), dev):
            compute(X)

    arrangements = {
        "copy only": run_copy_only,
        "compute only": run_compute_only,
        "blocking (pageable)": run_blocking,
        "non_blocking (pinned)": run_non_blocking,
        "prefetch (side stream)": run_prefetch,
    }
    seconds = {}
    for name, fn in arrangements.items():
        times = time_repeats(fn, repeats=repeats, warmup=warmup, device=dev)
        seconds[name] = statistics.median(times)
    synchronize(dev)
    return OverlapResult(seconds)
