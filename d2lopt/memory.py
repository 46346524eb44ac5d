"""Memory, measured: what fills it during training, and what a DataLoader's workers cost.

Taught in ``14_memory`` (``07_cpu_to_gpu``, ``08_gpu_compute`` and ``09_the_loop`` read one
run's peak with :func:`peak_memory` too). Training memory has four parts, and three of them
can be predicted to the byte from the model alone:

* **parameters** (:func:`parameter_bytes`), and their **gradients** (the same bytes, after
  the first backward pass);
* **optimizer state** (:func:`optimizer_state_bytes`): SGD with momentum keeps one buffer per
  parameter, Adam two (``exp_avg``, ``exp_avg_sq``) plus a 4-byte ``step`` per tensor;
* **activations**: what autograd saves for the backward pass (:func:`saved_activation_bytes`),
  which grows with the batch; that is the part checkpointing, AMP and gradient accumulation
  shrink.

:func:`measure_memory` runs a function and reads the allocator: the bytes it still holds
afterwards (``retained``) and its highest point above where it started (``peak``). The
worker side: :func:`worker_memory` samples every DataLoader worker's unique and
proportional set size (USS/PSS, psutil) during an epoch, which is how copy-on-read shows.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .devices import synchronize
from .errors import check_int
from .profiling import filtered_native_stderr, profiler_activities

__all__ = [
    "MemoryUse",
    "PeakBytes",
    "WorkerMemory",
    "measure_memory",
    "peak_memory",
    "parameter_bytes",
    "gradient_bytes",
    "optimizer_state_bytes",
    "predict_optimizer_state_bytes",
    "saved_activation_bytes",
    "allocator_bytes",
    "worker_memory",
    "checkpointed_forward",
    "batch_that_fits",
    "MiB",
]

MiB = 1 << 20
# The CUDA caching allocator hands out blocks in multiples of 512 bytes (kMinBlockSize in
# torch 2.14's c10/core/AllocatorConfig.h; CUDACachingAllocator's round_size), and its counters
# (memory_allocated, max_memory_allocated) count those blocks: a 4-byte tensor costs 512.
CUDA_BLOCK = 512
CPU_METHOD = "torch.profiler allocation events (CPU allocator)"
CUDA_METHOD = "torch.cuda.max_memory_allocated"


class PeakBytes(NamedTuple):
    """``(bytes, method)``: a run's own peak, and how it was measured (``None``: no counter)."""

    bytes: int | None
    method: str


@dataclass(frozen=True)
class MemoryUse:
    """What one call of a function did to the allocator.

    Attributes:
        peak: the highest point of allocated bytes *above where the call started*: memory
            that was live before it is not counted. ``None`` where no counter exists.
        retained: bytes the call allocated and had not freed when it returned (a model's
            parameters, the gradients of a first backward, an optimizer's new state). On
            CUDA, frees of older tensors lower it (it can be negative); on a CPU they are
            not seen, since the profiler knows no size for a block allocated before it
            started.
        method: how the bytes were read.
        result: what the function returned (kept alive, so ``retained`` stays allocated).
    """

    peak: int | None
    retained: int | None
    method: str
    result: Any = field(default=None, repr=False, compare=False)


def _cpu_events(fn: Callable[[], Any]) -> tuple[Any, list[int]]:
    """Run ``fn`` under the profiler; the allocator's +/- byte events in time order.

    torch 2.14 keeps no running counters for the CPU allocator (``torch.cpu`` has no
    ``memory_allocated``; ``torch.accelerator`` covers accelerators only), so on a CPU the
    profiler's memory events are the only per-tensor account: ``profile_memory=True`` makes
    the CPU allocator report every allocation and free. Library scratch space that does not
    go through it (oneDNN's own buffers, NumPy arrays) is not seen; the process's RSS would
    see it, mixed with everything else the process does.
    """
    gc.collect()  # garbage of earlier calls would be freed inside this window, as our frees
    with filtered_native_stderr():
        with torch.profiler.profile(activities=profiler_activities(torch.device("cpu")),
                                    profile_memory=True) as prof:  # fmt: skip
            result = fn()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    return result, [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())]


def measure_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> MemoryUse:
    """Run ``fn()`` once and read its peak and retained bytes from the allocator.

    * CUDA: ``reset_peak_memory_stats`` then ``max_memory_allocated`` minus what was
      allocated before (so the peak is the call's own), in 512-byte blocks;
    * CPU: the running sum of the profiler's allocation events (see :func:`_cpu_events`);
      exact bytes of every tensor PyTorch allocates, but the profiler slows the call;
    * other devices: ``None`` with the reason, since there is no counter to read.

    Example:
        >>> kept = torch.ones(1000)  # live before: not counted
        >>> use = measure_memory(lambda: torch.ones(256) + torch.ones(256))
        >>> use.peak, use.retained  # two temporaries and the sum; the sum is kept
        (3072, 1024)
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        synchronize(dev)  # work queued before must not count as this call's
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        result = fn()
        synchronize(dev)  # the call's own queued work must
        end = torch.cuda.memory_allocated(dev)
        return MemoryUse(torch.cuda.max_memory_allocated(dev) - base, end - base, CUDA_METHOD,
                         result)  # fmt: skip
    if dev.type != "cpu":
        return MemoryUse(None, None, f"skipped: no memory counter for {dev.type} in torch")
    result, deltas = _cpu_events(fn)
    current = peak = 0
    for nbytes in deltas:
        current += nbytes  # > 0 allocation, < 0 free
        peak = max(peak, current)
    return MemoryUse(peak, current, CPU_METHOD, result)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> PeakBytes:
    """Peak bytes ``fn()`` allocated *on top of* what was live before it, and how measured.

    The run's own peak: tensors allocated before the call are not counted, so the same
    call reads the same however much memory the program already holds. CUDA:
    ``max_memory_allocated`` after ``reset_peak_memory_stats``; CPU: the profiler's
    allocation events, the only source torch 2.14 offers on a CPU (see
    :func:`measure_memory`); other devices: ``(None, reason)``.

    Example:
        >>> big = torch.zeros(1 << 20)  # 4 MiB already allocated: not in the peak
        >>> peak_memory(lambda: torch.zeros(1024).exp_())
        PeakBytes(bytes=4096, method='torch.profiler allocation events (CPU allocator)')
    """
    use = measure_memory(fn, device)
    return PeakBytes(use.peak, use.method)


def allocator_bytes(nbytes: int, device: torch.device | str = "cpu") -> int:
    """What the device's allocator counts for a tensor of ``nbytes``: CUDA rounds to 512."""
    if torch.device(device).type == "cuda":
        return math.ceil(nbytes / CUDA_BLOCK) * CUDA_BLOCK
    return nbytes


def _tensors_bytes(tensors: Iterable[torch.Tensor], device: torch.device | str | None) -> int:
    """Bytes of ``tensors``; with ``device``, only those on it, as its allocator counts them."""
    if device is None:
        return sum(t.nbytes for t in tensors)
    kind = torch.device(device).type
    return sum(allocator_bytes(t.nbytes, kind) for t in tensors if t.device.type == kind)


def parameter_bytes(model: nn.Module, *, buffers: bool = False,
                    device: torch.device | str | None = None) -> int:  # fmt: skip
    """Bytes of the model's parameters (and, with ``buffers=True``, of its buffers).

    ``device``: count as that device's allocator does (CUDA rounds each tensor up to 512
    bytes); ``None``: the tensors' own bytes. Buffers are the running statistics of batch
    norm: saved with the model, never trained.
    """
    tensors = list(model.parameters()) + (list(model.buffers()) if buffers else [])
    return _tensors_bytes(tensors, device)


def gradient_bytes(model: nn.Module, *, device: torch.device | str | None = None) -> int:
    """Bytes of the ``.grad`` tensors the model holds now (0 before the first backward)."""
    return _tensors_bytes((p.grad for p in model.parameters() if p.grad is not None), device)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, *,
                          device: torch.device | str | None = None) -> int:  # fmt: skip
    """Bytes of every tensor in the optimizer's state (empty until the first ``step``)."""
    return _tensors_bytes(
        (t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)),
        device,
    )


def predict_optimizer_state_bytes(params: Sequence[torch.Tensor], kind: str, *,
                                  device: torch.device | str | None = None) -> int:  # fmt: skip
    """The state ``kind`` will allocate at its first step, predicted from the parameters.

    ``"sgd"``: nothing; ``"momentum"``: one buffer per parameter (``momentum_buffer``);
    ``"adam"``/``"adamw"``: two buffers per parameter (``exp_avg``, ``exp_avg_sq``) and a
    float32 ``step`` counter per parameter tensor, a scalar tensor on the CPU (on the device
    with ``capturable=True`` or ``fused=True``).
    """
    params = [p for p in params if p.requires_grad]
    same = _tensors_bytes(params, device)
    if kind == "sgd":
        return 0
    if kind == "momentum":
        return same
    if kind in ("adam", "adamw"):
        # torch.tensor(0.0) per parameter tensor: a float32 on the CPU, so it counts on a
        # CPU (and with device=None), not in a GPU allocator's bytes
        on_cpu = device is None or torch.device(device).type == "cpu"
        return 2 * same + (4 * len(params) if on_cpu else 0)
    raise ValueError(f"kind: expected 'sgd', 'momentum', 'adam' or 'adamw', got {kind!r}")


def saved_activation_bytes(fn: Callable[[], Any], *, exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes autograd saves for the backward pass while ``fn()`` runs (a forward pass).

    Read with ``torch.autograd.graph.saved_tensors_hooks``: every tensor an op keeps for
    its gradient passes through the pack hook. Tensors that share storage (a ReLU's output
    is also the next layer's input) count once, and the ``exclude`` tensors (pass
    ``model.parameters()``: weights are saved too, but they are the parameters' memory,
    not the activations') not at all. The bytes follow from the ops' autograd formulas, not
    from the machine, so the count is the same on every CPU and GPU.

    Example:
        >>> lin = nn.Linear(4, 3)
        >>> saved_activation_bytes(lambda: lin(torch.ones(2, 4)).relu(), exclude=lin.parameters())
        56
    """
    seen: dict[tuple[str, int], int] = {}
    skip = {(t.device.type, t.untyped_storage().data_ptr()) for t in exclude}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.device.type, t.untyped_storage().data_ptr())
        if key not in skip:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@dataclass(frozen=True)
class WorkerMemory:
    """Every worker's memory, sampled during one pass over a loader.

    Attributes:
        batches: the batch index after which each sample was taken.
        uss: worker pid -> unique set size (bytes only that process maps: what killing it
            would free) at each sample.
        pss: worker pid -> proportional set size (shared pages divided among the processes
            that map them) at each sample.
        batch_bytes: bytes of the first batch's tensors (for prefetch predictions).
    """

    batches: tuple[int, ...]
    uss: dict[int, tuple[int, ...]]
    pss: dict[int, tuple[int, ...]]
    batch_bytes: int = 0

    def growth(self, kind: str = "uss") -> dict[int, int]:
        """Per worker: last sample minus first (the first is taken after the first batch)."""
        series = self.uss if kind == "uss" else self.pss
        return {pid: s[-1] - s[0] for pid, s in series.items() if len(s) >= 2}

    def mean_growth(self, kind: str = "uss") -> float:
        g = self.growth(kind)
        return sum(g.values()) / len(g) if g else math.nan

    def total(self, kind: str = "uss") -> int:
        """The workers' summed USS or PSS at the last sample."""
        series = self.uss if kind == "uss" else self.pss
        return sum(s[-1] for s in series.values() if s)


def _batch_bytes(batch: Any) -> int:
    if torch.is_tensor(batch):
        return batch.nbytes
    if isinstance(batch, (list, tuple)):
        return sum(_batch_bytes(b) for b in batch)
    if isinstance(batch, dict):
        return sum(_batch_bytes(b) for b in batch.values())
    return 0


def _worker_pids(it: Any, before: set[int]) -> list[int]:
    # the iterator's own worker processes (a private attribute, stable since PyTorch 1.0);
    # failing that, the children this process gained since the loader started
    if getattr(it, "_num_workers", None) == 0:
        return []  # the main process loads: no worker to sample
    workers = getattr(it, "_workers", None)
    if workers:
        return [w.pid for w in workers]
    import psutil

    return sorted(p.pid for p in psutil.Process().children() if p.pid not in before)


def worker_memory(
    loader: Iterable,
    *,
    every: int = 1,
    max_batches: int | None = None,
    step: Callable[[Any], Any] | None = None,
) -> WorkerMemory:
    """Iterate ``loader`` once and sample each worker's USS and PSS every ``every`` batches.

    The first sample is taken after the first batch (so a ``spawn`` worker has imported
    PyTorch and unpickled its data set by then), the last after the last batch, while the
    workers are still alive. psutil's ``memory_full_info`` reads ``/proc/<pid>/smaps`` on
    Linux: a few milliseconds per worker, paid in the main process between batches.
    ``step(batch)`` runs on each batch (training, or nothing). With ``num_workers=0`` there
    is no worker to sample, and the result is empty.
    """
    import psutil

    check_int("every", every, 1)  # batches between samples
    if max_batches is not None:
        check_int("max_batches", max_batches, 1)
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n = math.inf
    n = min(n, max_batches or math.inf)
    before = {p.pid for p in psutil.Process().children()}
    it = iter(loader)
    pids: list[int] = []
    batches: list[int] = []
    uss: dict[int, list[int]] = {}
    pss: dict[int, list[int]] = {}
    nbytes = 0
    i = 0
    for i, batch in enumerate(it):
        if i == 0:
            pids = [pid for pid in _worker_pids(it, before) if pid != os.getpid()]
            uss, pss = {pid: [] for pid in pids}, {pid: [] for pid in pids}
            nbytes = _batch_bytes(batch)
        if step is not None:
            step(batch)
        last = i + 1 >= n
        if pids and (i % every == 0 or last):
            batches.append(i)
            for pid in pids:
                try:
                    info = psutil.Process(pid).memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue  # a worker that has exited has no memory to report
                uss[pid].append(info.uss)
                pss[pid].append(getattr(info, "pss", info.uss))  # PSS: Linux only
        if last:
            break
    del it  # shuts the workers down (a persistent loader keeps its own)
    return WorkerMemory(
        tuple(batches),
        {pid: tuple(v) for pid, v in uss.items()},
        {pid: tuple(v) for pid, v in pss.items()},
        nbytes,
    )


def checkpointed_forward(net: nn.Sequential, X: torch.Tensor, every: int) -> torch.Tensor:
    """``net(X)``, keeping only every ``every``-th layer's input for the backward pass.

    Each chunk of ``every`` layers runs under ``torch.utils.checkpoint.checkpoint``: its
    activations are freed after the forward pass and recomputed, chunk by chunk, during
    the backward pass, so the peak holds the chunk inputs plus one chunk's activations.
    Cut chunks at block boundaries: an in-place layer (``ReLU(inplace=True)``) must not be
    the first of a chunk, or it overwrites the input the chunk saved. Batch norm's running
    statistics are updated twice (forward and recomputation). Taught in ``14_memory``.
    """
    from torch.utils.checkpoint import checkpoint

    check_int("every", every, 1)  # layers per checkpointed chunk
    layers = list(net)
    for i in range(0, len(layers), every):
        chunk = nn.Sequential(*layers[i : i + every])
        X = checkpoint(chunk, X, use_reentrant=False)  # the non-reentrant kind, as advised
    return X


def batch_that_fits(batches: Sequence[int], peaks: Sequence[float], budget: float) -> int:
    """The largest batch whose peak stays within ``budget``, from peaks measured at two or
    more batch sizes: a straight line (fixed bytes + bytes per sample) fitted through them.

    Example:
        >>> batch_that_fits([64, 128], [1_000 + 64 * 10, 1_000 + 128 * 10], budget=3_000)
        200
    """
    if len(batches) != len(peaks) or len(batches) < 2:
        raise ValueError("batches/peaks: need the peaks of at least two batch sizes, one each")
    slope, fixed = np.polyfit(np.asarray(batches, float), np.asarray(peaks, float), 1)
    if slope * max(batches) <= 1e-9 * max(abs(float(p)) for p in peaks):  # flat, to rounding
        raise ValueError("peaks: do not grow with the batch; a line cannot say what fits")
    return max(0, int((budget - fixed) / slope + 1e-9))
