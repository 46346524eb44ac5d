"""Profiler helpers: find host syncs and measure peak memory.

Taught in ``09_the_loop`` (hidden syncs) and ``08_gpu_compute`` (AMP: time *and* memory).
Timing verdicts go through :func:`d2lopt.compare`, never through this module.
``torch.profiler`` sees what Python cannot: every ``aten::_local_scalar_dense`` is a tensor
read back to the host (``.item()``, ``float(t)``, ``print(t)``, ``if t:``), and on CUDA the
runtime calls that block the host (``cudaStreamSynchronize``...). Peak memory
(:func:`d2lopt.memory.peak_memory`) reads the profiler's allocation events on a CPU with
:func:`profiler_activities` and :func:`filtered_native_stderr` from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .devices import synchronize

__all__ = [
    "SyncProfile",
    "filtered_native_stderr",
    "profile_host_syncs",
    "profiler_activities",
    "quiet_cpp_extension",
]

# Ops that copy a device value to the host (and so wait for the device to finish).
SCALAR_READ_OPS = ("aten::_local_scalar_dense",)
# CUDA runtime calls that block the host thread until the GPU catches up.
CUDA_SYNC_CALLS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
)
# Status lines the profiler's native library (kineto) prints on the C-level stderr: they
# would land in notebook outputs. Anything else it prints is passed through untouched.
_NATIVE_NOISE = re.compile(
    r"SyncActivityProfilerHandler|gpuGetDeviceCount failed|"
    r"Memory block of unknown size was allocated before the profiling started"
)


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 while profiling; re-emit every line but kineto's status."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode(errors="replace").splitlines()
                if line.strip() and not _NATIVE_NOISE.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def profiler_activities(device: torch.device) -> list[torch.profiler.ProfilerActivity]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


@dataclass
class SyncProfile:
    """What the profiler saw: host reads of device values and blocking runtime calls."""

    scalar_reads: int
    runtime_syncs: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.scalar_reads + self.runtime_syncs

    def __str__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.by_op.items())) or "none"
        return f"{self.total} host sync(s): {ops}"


def profile_host_syncs(
    fn: Callable[[], object], *, device: torch.device | str = "cpu"
) -> SyncProfile:
    """Run ``fn()`` once under ``torch.profiler`` and count the ops that sync the host.

    On CPU the scalar reads are counted (the same lines stall a GPU run); on CUDA the
    runtime's synchronizing calls are counted as well. Pair it with
    :func:`d2lopt.count_host_syncs`, which sees the Python side (``.item()``, ``float()``).

    Example:
        >>> profile_host_syncs(lambda: torch.ones(3).sum().item()).scalar_reads
        1
    """
    dev = torch.device(device)
    synchronize(dev)  # earlier queued work must not be blamed on fn (outside the profile)
    with filtered_native_stderr():
        with torch.profiler.profile(activities=profiler_activities(dev)) as prof:
            fn()
        names = Counter(e.name for e in prof.events())
    by_op = {k: names[k] for k in SCALAR_READ_OPS + CUDA_SYNC_CALLS if names[k]}
    scalar = sum(names[k] for k in SCALAR_READ_OPS)
    runtime = sum(names[k] for k in CUDA_SYNC_CALLS)
    return SyncProfile(scalar, runtime, by_op)


def quiet_cpp_extension() -> None:
    """Import ``torch.utils.cpp_extension`` with its import-time notice silenced.

    ``torch.compile`` imports it; on a machine with a CUDA toolkit but no GPU it logs "No
    CUDA runtime is found" to stderr, which is noise for a CPU run (``08_gpu_compute``).
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        log.setLevel(level)
