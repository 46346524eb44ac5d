"""Tests for d2lopt.transfer: CPU paths always, CUDA paths where a GPU exists."""

import math

import pytest
import torch
from conftest import requires_cuda

from d2lopt.transfer import (
    COPY_MODES,
    CopyResult,
    CudaPrefetcher,
    OverlapResult,
    copy_bandwidth,
    cuda_event_seconds,
    cuda_skip_reason,
    overlap_benchmark,
)

requires_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def test_skip_reason_names_the_device():
    assert cuda_skip_reason("cpu").startswith("needs a CUDA GPU (device is cpu)")
    assert cuda_skip_reason(torch.device("meta")) != ""


@requires_no_cuda
def test_skip_reason_without_cuda_runtime():
    assert "is_available() is False" in cuda_skip_reason("cuda")


@pytest.mark.parametrize("mode", COPY_MODES)
def test_copy_bandwidth_is_skipped_off_cuda(mode):
    result = copy_bandwidth(1 << 16, mode=mode, device="cpu")
    assert result.skipped and result.seconds == []
    assert math.isnan(result.median) and math.isnan(result.gb_per_s)
    assert str(result) == f"{mode}: skipped ({result.skipped})"


def test_copy_bandwidth_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode: must be one of"):
        copy_bandwidth(1024, mode="fast", device="cpu")
    with pytest.raises(ValueError, match="nbytes: must be an int >= 4"):
        copy_bandwidth(2, mode="pinned", device="cpu")


def test_copy_result_bandwidth_arithmetic():
    r = CopyResult("pinned", nbytes=2_000_000_000, seconds=[2.0, 1.0, 4.0])
    assert r.median == 2.0
    assert r.gb_per_s == pytest.approx(1.0)
    assert str(r) == "pinned: 2000.000 ms, 1.00 GB/s"


def test_cuda_event_seconds_refuses_cpu():
    with pytest.raises(ValueError, match="device: cuda_event_seconds needs a CUDA GPU"):
        cuda_event_seconds(lambda: None, device="cpu")


def test_prefetcher_on_cpu_yields_the_same_batches_in_order():
    batches = [(torch.full((2, 3), float(i)), torch.tensor([i, i])) for i in range(4)]
    out = list(CudaPrefetcher(batches, "cpu"))
    assert len(out) == 4 and len(CudaPrefetcher(batches, "cpu")) == 4
    for (X, y), (X0, y0) in zip(out, batches, strict=True):
        assert torch.equal(X, X0) and torch.equal(y, y0)


def test_overlap_is_skipped_off_cuda():
    result = overlap_benchmark([torch.ones(4)], lambda x: x * 2, device="cpu")
    assert result.skipped.startswith("needs a CUDA GPU") and result.seconds == {}
    assert math.isnan(result.ideal)


def test_overlap_ideal_is_the_longer_part():
    r = OverlapResult({"copy only": 0.2, "compute only": 0.5})
    assert r.ideal == 0.5


# ---------------------------------------------------------------------------- CUDA only
@requires_cuda
@pytest.mark.parametrize("mode", COPY_MODES)
def test_copy_bandwidth_measures_on_cuda(mode):
    result = copy_bandwidth(1 << 20, mode=mode, device="cuda", repeats=3, warmup=1)
    assert not result.skipped and len(result.seconds) == 3
    assert all(t > 0 for t in result.seconds) and result.gb_per_s > 0


@requires_cuda
def test_cuda_event_seconds_times_stream_work():
    x = torch.ones(1 << 20, device="cuda")
    times = cuda_event_seconds(lambda: x.mul_(1.0), repeats=3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)


@requires_cuda
def test_prefetcher_on_cuda_delivers_correct_device_batches():
    batches = [
        (torch.full((8, 3), float(i)).pin_memory(), torch.arange(8).pin_memory()) for i in range(5)
    ]
    seen = []
    for X, y in CudaPrefetcher(batches, "cuda"):
        assert X.device.type == "cuda" and y.device.type == "cuda"
        seen.append((X * 2).sum().item())  # compute on the default stream after the wait
    assert seen == [float(i * 2 * 24) for i in range(5)]


@requires_cuda
def test_overlap_benchmark_reports_every_arrangement():
    batches = [torch.randn(256, 256) for _ in range(4)]
    result = overlap_benchmark(batches, lambda x: x @ x, device="cuda", repeats=2)
    assert not result.skipped
    assert set(result.seconds) == {
        "copy only",
        "compute only",
        "blocking (pageable)",
        "non_blocking (pinned)",
        "prefetch (side stream)",
    }
    assert all(t > 0 for t in result.seconds.values()) and result.ideal > 0
