"""Device selection on CPU, CUDA and MPS."""

from __future__ import annotations

import contextlib

import pytest
import torch

from d2lopt import resolve_device, synchronize, try_all_gpus, try_gpu
from d2lopt.devices import accelerator_name, cpu_has_bf16_units, supports_bf16
from d2lopt.precision import check_amp


def test_try_all_gpus_is_never_empty() -> None:
    devices = try_all_gpus()
    assert devices and all(isinstance(d, torch.device) for d in devices)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert devices == [torch.device("cpu")]


def test_try_gpu_falls_back_to_cpu_for_missing_indices() -> None:
    assert try_gpu(10_000) == torch.device("cpu")
    assert try_gpu().type in {"cpu", "cuda", "mps"}


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_try_gpu_rejects_bad_indices(bad) -> None:
    with pytest.raises(ValueError, match="i: must be"):
        try_gpu(bad)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == try_gpu()
    assert resolve_device("auto") == try_gpu()
    with pytest.raises(ValueError, match="device: unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_resolve_device_names_the_fix_when_cuda_is_missing() -> None:
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        resolve_device("cuda")


def test_synchronize_and_name_on_cpu() -> None:
    synchronize("cpu")  # a no-op, but must not fail
    assert isinstance(accelerator_name("cpu"), str)


def test_supports_bf16_on_cpu_reads_the_cpu_flags() -> None:
    assert supports_bf16("cpu") == cpu_has_bf16_units()


def test_supports_bf16_ignores_emulation_on_cuda(monkeypatch) -> None:
    # a T4/V100: bf16 runs (emulated) but has no units; the default argument says True
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert supports_bf16("cuda:0") is False
    check_amp("cuda:0", "bf16")  # emulated bf16 still runs: not refused
    assert asked == [False, True]
