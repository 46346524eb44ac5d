"""Tests for d2lopt.profiling: sync counting, peak memory, step statistics."""

import importlib.abc
import logging
import os
import sys

import torch
from conftest import requires_cuda

import d2lopt
from d2lopt.memory import peak_memory
from d2lopt.profiling import (
    filtered_native_stderr,
    profile_host_syncs,
    quiet_cpp_extension,
)


def syncing_loop() -> None:
    total = 0.0
    for _ in range(3):
        loss = torch.ones(4).sum()
        total += float(loss)  # one scalar read
        _ = loss.item()  # another


def sync_free_loop() -> None:
    acc = torch.zeros(())
    for _ in range(3):
        acc += torch.ones(4).sum()  # stays a tensor: no read-back


def test_profiler_counts_scalar_reads():
    assert profile_host_syncs(syncing_loop).scalar_reads == 6
    clean = profile_host_syncs(sync_free_loop)
    assert clean.total == 0 and str(clean) == "0 host sync(s): none"


def test_profiler_agrees_with_python_counter():
    with d2lopt.count_host_syncs() as counter:
        syncing_loop()
    assert counter.count == profile_host_syncs(syncing_loop).scalar_reads


def test_profiling_keeps_kineto_status_lines_out_of_stderr(capfd):
    profile_host_syncs(syncing_loop)
    peak_memory(syncing_loop, "cpu")
    err = capfd.readouterr().err
    assert "SyncActivityProfilerHandler" not in err and "gpuGetDeviceCount" not in err


def test_native_stderr_filter_passes_other_lines_through(capfd):
    with filtered_native_stderr():
        os.write(2, b"USDT: SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "SyncActivityProfilerHandler" not in err


def test_cpu_peak_memory_sees_a_temporary_tensor():
    def work() -> None:
        t = torch.empty(1 << 18)  # 1 MiB of float32, freed at return
        t.fill_(1.0)

    peak, note = peak_memory(work, "cpu")
    assert (1 << 20) <= peak < (2 << 20)
    assert note.startswith("torch.profiler")


def test_peak_memory_skips_devices_without_a_counter():
    peak, note = peak_memory(lambda: None, "meta")
    assert peak is None and note.startswith("skipped")


class _SeeLevelAtImport(importlib.abc.MetaPathFinder):
    """Records the logger's level when the module is imported; lets the import go on."""

    def __init__(self, log: logging.Logger) -> None:
        self.log, self.levels = log, []

    def find_spec(self, name, path=None, target=None):
        if name == "torch.utils.cpp_extension":
            self.levels.append(self.log.level)
        return None  # the regular finders import it


def test_quiet_cpp_extension_imports_with_notices_silenced_then_restores(monkeypatch):
    log = logging.getLogger("torch.utils.cpp_extension")
    before = log.level
    log.setLevel(logging.DEBUG)  # a level of the learner's own
    monkeypatch.delitem(sys.modules, "torch.utils.cpp_extension", raising=False)
    monkeypatch.delattr(torch.utils, "cpp_extension", raising=False)  # imported afresh
    seen = _SeeLevelAtImport(log)
    monkeypatch.setattr(sys, "meta_path", [seen, *sys.meta_path])
    try:
        quiet_cpp_extension()
        assert seen.levels == [logging.ERROR]  # its import-time notice (a warning) is dropped
        assert "torch.utils.cpp_extension" in sys.modules
        assert log.level == logging.DEBUG
    finally:
        log.setLevel(before)


# ---------------------------------------------------------------------------- CUDA only
@requires_cuda
def test_cuda_item_is_a_runtime_sync():
    x = torch.ones(4, device="cuda")
    prof = profile_host_syncs(lambda: x.sum().item(), device="cuda")
    assert prof.scalar_reads == 1 and prof.runtime_syncs >= 1


@requires_cuda
def test_cuda_peak_memory_sees_a_temporary_tensor():
    def work() -> None:
        t = torch.empty(1 << 18, device="cuda")
        t.fill_(1.0)

    peak, note = peak_memory(work, "cuda")
    assert peak >= 1 << 20 and note == "torch.cuda.max_memory_allocated"
