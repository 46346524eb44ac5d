"""Host -> GPU copies measured honestly, and overlapped with compute (``07_cpu_to_gpu``).

The ways to copy one batch (the PyTorch tutorial "A guide on good usage of non_blocking and
pin_memory()" compares the same ones), each differing from its neighbour in one thing:

* ``pageable``: ``x.to(device)``: the driver stages the pageable buffer through its own
  page-locked bounce buffer; the host waits.
* ``pageable_non_blocking``: the same source with ``non_blocking=True``: the host still
  copies the data into the driver's staging buffer before the call returns (CUDA runtime
  API, "API synchronization behavior"), so the flag cannot make this copy asynchronous.
* ``pinned``: ``x_pinned.to(device)`` from memory pinned *once*, in advance (what
  ``DataLoader(pin_memory=True)`` does on its pinning thread): a direct DMA; the host waits.
* ``pinned_non_blocking``: the same DMA with ``non_blocking=True``: the host returns at once.
* ``pin_then_copy``: ``x.pin_memory().to(device)`` on the spot: a host copy into a pinned
  block, then the DMA, both on the critical path, which can make it *slower* than the plain
  pageable copy.
* ``pin_only``: ``x.pin_memory()`` alone, no copy: the price of pinning on the spot.

What "pinning on the spot" costs: ``pin_memory()`` takes its block from PyTorch's caching
host allocator (pytorch/pytorch ``aten/src/ATen/cuda/CachingHostAllocator.cpp``, the
allocator ``CUDAHooks::getPinnedMemoryAllocator`` returns). Only a call that finds no free
cached block of its size pays the page-locked allocation (``cudaHostAlloc``); once the
block is freed (after the copies recorded on it have finished) it is reused. So after
warm-up the timed calls pay a host memcpy into a reused pinned block (plus the DMA for
``pin_then_copy``), not a page-locked allocation each time. :func:`copy_bandwidth` times
the first call apart (``CopyResult.first``): what a size that is not yet cached pays.

:func:`copy_fn` and :func:`overlap_loops` return the functions to time, for
:func:`d2lopt.compare` (verdicts: paired rounds, an interval); :func:`copy_bandwidth` is a
single number for a chart. Everything here needs CUDA: off CUDA the builders raise and
``copy_bandwidth`` returns a result whose ``skipped`` says why, so notebooks print
"skipped" instead of inventing numbers (check :func:`cuda_skip_reason` first).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import check_int
from ..measure import time_repeats

__all__ = [
    "COPY_MODES",
    "OVERLAP_LOOPS",
    "CopyResult",
    "cuda_skip_reason",
    "copy_fn",
    "copy_bandwidth",
    "cuda_event_seconds",
    "CudaPrefetcher",
    "overlap_loops",
    "host_copy_bandwidth",
    "pinning_skip_reason",
]

COPY_MODES: tuple[str, ...] = (
    "pageable",
    "pageable_non_blocking",
    "pinned",
    "pinned_non_blocking",
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
    # the first call, timed apart from the repeats (``pin_*``: a size with no cached pinned
    # block yet pays cudaHostAlloc here; the repeats reuse the caching host allocator's block)
    first: float | None = None

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


def _require_cuda(arg: str, device: torch.device | str) -> torch.device:
    reason = cuda_skip_reason(device)
    if reason:
        raise ValueError(f"{arg}: {reason}; check cuda_skip_reason(device) first")
    return torch.device(device)


def copy_fn(
    nbytes: int, *, mode: str, device: torch.device | str = "cuda"
) -> Callable[[], torch.Tensor]:
    """One host->``device`` copy of a float32 tensor of ``nbytes`` bytes in ``mode``, to time.

    The source tensor is made (and, for ``pinned*`` modes, pinned) once, here, outside the
    timed region: that is the DataLoader's pinning thread's job. Time the function with
    :func:`d2lopt.compare` (which synchronizes the device around each timed block, so the
    whole copy is counted, asynchronous or not) or :func:`d2lopt.measure.time_repeats`.

    Args:
        nbytes: size of the tensor (rounded down to whole float32 elements, at least one).
        mode: one of :data:`COPY_MODES`.
        device: a CUDA device.

    Raises:
        ValueError: a bad ``mode`` or ``nbytes``, or ``device`` is not an available CUDA device.
    """
    if mode not in COPY_MODES:
        raise ValueError(f"mode: must be one of {COPY_MODES}, got {mode!r}")
    check_int("nbytes", nbytes, 4)  # one float32 at least
    dev = _require_cuda("device", device)
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    if mode.startswith("pinned"):
        x = x.pin_memory()  # pinned once, outside the timed region (the DataLoader's job)

    def copy() -> torch.Tensor:
        if mode == "pageable":
            return x.to(dev)  # blocking: staged through the driver's bounce buffer
        if mode == "pageable_non_blocking":
            return x.to(dev, non_blocking=True)  # pageable source: the driver still stages it
        if mode == "pinned":
            return x.to(dev)  # DMA from page-locked memory; blocking: the host waits for it
        if mode == "pinned_non_blocking":
            return x.to(dev, non_blocking=True)  # the same DMA; the host returns at once
        if mode == "pin_then_copy":  # a host copy into a pinned block, then the DMA; the
            # block comes from the caching host allocator: page-locked once, then reused
            return x.pin_memory().to(dev)
        return x.pin_memory()  # pin_only: a cached pinned block (allocated once) + a host copy

    return copy


def copy_bandwidth(
    nbytes: int,
    *,
    mode: str,
    device: torch.device | str = "cuda",
    repeats: int = 5,
    warmup: int = 2,
) -> CopyResult:
    """Median seconds of host->``device`` copies of ``nbytes`` bytes in ``mode``: one number.

    Each repeat is timed on the host clock between two device synchronizations, so the
    time is the full cost the training loop pays: the host copy into a cached pinned block
    (for ``pin_then_copy``), the transfer, and any staging, not only the DMA itself. The
    first call is timed apart (``first``): only it can pay a page-locked allocation. For a
    chart; to decide whether one mode beats another, time both :func:`copy_fn` with
    :func:`d2lopt.compare`.

    Args:
        nbytes, mode: as for :func:`copy_fn`.
        device: a CUDA device; anything else returns a skipped result.
        repeats: timed copies (median reported).
        warmup: copies before the timed repeats (CUDA context, allocators); the first of
            them is timed apart as ``first``.

    Example:
        >>> copy_bandwidth(1 << 20, mode="pinned", device="cpu").skipped != ""
        True
    """
    if mode not in COPY_MODES:
        raise ValueError(f"mode: must be one of {COPY_MODES}, got {mode!r}")
    check_int("nbytes", nbytes, 4)  # one float32 at least
    reason = cuda_skip_reason(device)
    if reason:
        return CopyResult(mode, nbytes, skipped=reason)
    fn = copy_fn(nbytes, mode=mode, device=device)
    # the first call alone (it counts as one of the warm-up calls): the one that may pay
    # the CUDA context, the device allocator and, for pin_*, the page-locked allocation
    (first,) = time_repeats(fn, repeats=1, warmup=0, device=device)
    seconds = time_repeats(fn, repeats=repeats, warmup=max(warmup - 1, 0), device=device)
    return CopyResult(mode, nbytes // 4 * 4, seconds, first=first)


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


OVERLAP_LOOPS: tuple[str, ...] = (
    "copy only",
    "compute only",
    "blocking (pageable)",
    "blocking (pinned)",
    "non_blocking (pinned)",
    "prefetch (side stream)",
)


def overlap_loops(
    batches: Sequence[torch.Tensor],
    compute: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device | str = "cuda",
) -> dict[str, Callable[[], None]]:
    """One pass over ``batches`` (host tensors) in each arrangement of :data:`OVERLAP_LOOPS`.

    Neighbours differ in one thing, so :func:`d2lopt.compare` can judge each change:

    * ``copy only`` / ``compute only``: the two parts alone (compute on resident copies);
      the best overlap can do is the longer of the two;
    * ``blocking (pageable)`` -> ``blocking (pinned)``: the source memory (pinned once, up
      front); each blocking copy makes the host wait for the stream, so nothing overlaps;
    * ``blocking (pinned)`` -> ``non_blocking (pinned)``: only the flag: the host queues
      copy and compute without waiting, but on one stream the GPU still takes them in turn;
    * ``non_blocking (pinned)`` -> ``prefetch (side stream)``: only the stream:
      :class:`CudaPrefetcher` copies batch i+1 while batch i computes.

    Raises:
        ValueError: ``device`` is not an available CUDA device, or ``batches`` is empty.
    """
    dev = _require_cuda("device", device)
    if not batches:
        raise ValueError("batches: need at least one host tensor")
    pageable = [b.cpu() for b in batches]
    pinned = [b.pin_memory() for b in pageable]  # pinned once, up front
    resident = [b.to(dev) for b in pageable]
    labels = [torch.zeros(len(b), dtype=torch.long).pin_memory() for b in pageable]

    def copy_only() -> None:
        for b in pinned:
            b.to(dev, non_blocking=True)

    def compute_only() -> None:
        for b in resident:
            compute(b)

    def blocking_pageable() -> None:
        for b in pageable:
            compute(b.to(dev))  # the host waits for the copy (and for the stream before it)

    def blocking_pinned() -> None:
        for b in pinned:
            compute(b.to(dev))  # a DMA, but blocking: the host still waits

    def non_blocking_pinned() -> None:
        for b in pinned:
            compute(b.to(dev, non_blocking=True))  # the host queues both and moves on

    def prefetch() -> None:
        for X, _ in CudaPrefetcher(list(zip(pinned, labels, strict=True)), dev):
            compute(X)

    loops = (copy_only, compute_only, blocking_pageable, blocking_pinned,
             non_blocking_pinned, prefetch)  # fmt: skip
    return dict(zip(OVERLAP_LOOPS, loops, strict=True))


# ---------------------------------------------------------------- what a CPU can show (07)
def pinning_skip_reason() -> str:
    """``""`` when this PyTorch can page-lock host memory here, else the error it raises.

    Pinning needs an accelerator runtime: ``torch.empty(..., pin_memory=True)`` asks the
    accelerator's host allocator for the block. A CUDA build without a driver raises
    ("Found no NVIDIA driver"), a CPU-only build raises too; the message differs between
    builds, so a notebook prints it only in a cell whose output is not compared. Nothing is
    estimated when it is not available: ``07_cpu_to_gpu`` then measures the host copy alone.
    """
    try:
        torch.empty(1, pin_memory=True)
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return ""


def host_copy_bandwidth(nbytes: int, *, repeats: int = 5, warmup: int = 2) -> CopyResult:
    """Median seconds of one host memory copy of ``nbytes`` bytes, measured on any machine.

    After warm-up, ``x.pin_memory()`` is a cached page-locked block plus exactly this copy
    (see the module docstring): the part of "pinning on the spot" a CPU can measure. The
    destination is allocated once, as the caching host allocator's block is reused; the
    first copy is timed apart (``first``: it may fault the destination's pages in).

    Example:
        >>> host_copy_bandwidth(1 << 20, repeats=1).label
        'host_copy'
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 4:
        raise ValueError(f"nbytes: must be an int >= 4 (one float32), got {nbytes!r}")
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)  # allocated once, like a cached pinned block

    def copy() -> torch.Tensor:
        return dst.copy_(src)

    (first,) = time_repeats(copy, repeats=1, warmup=0)
    seconds = time_repeats(copy, repeats=repeats, warmup=max(warmup - 1, 0))
    return CopyResult("host_copy", nbytes // 4 * 4, seconds, first=first)
