"""Tests for d2lopt.transfer: CPU paths always, CUDA paths where a GPU exists."""

import math

import pytest
import torch
from conftest import requires_cuda

from d2lopt.compare import compare
from d2lopt.transfer import (
    COPY_MODES,
    OVERLAP_LOOPS,
    CopyResult,
    CudaPrefetcher,
    copy_bandwidth,
    copy_fn,
    cuda_event_seconds,
    cuda_skip_reason,
    overlap_loops,
)

requires_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def test_skip_reason_names_the_device():
    assert cuda_skip_reason("cpu").startswith("needs a CUDA GPU (device is cpu)")
    assert cuda_skip_reason(torch.device("meta")) != ""


@requires_no_cuda
def test_skip_reason_without_cuda_runtime():
    assert "is_available() is False" in cuda_skip_reason("cuda")


def test_copy_modes_pair_up_one_change_at_a_time():
    # each pinned mode has its pageable twin, each non_blocking mode its blocking twin
    assert {"pageable", "pinned", "pageable_non_blocking", "pinned_non_blocking"} <= set(COPY_MODES)
    assert len(set(COPY_MODES)) == len(COPY_MODES)


@pytest.mark.parametrize("mode", COPY_MODES)
def test_copy_bandwidth_is_skipped_off_cuda(mode):
    result = copy_bandwidth(1 << 16, mode=mode, device="cpu")
    assert result.skipped and result.seconds == []
    assert math.isnan(result.median) and math.isnan(result.gb_per_s)
    assert str(result) == f"{mode}: skipped ({result.skipped})"


@pytest.mark.parametrize("build", [copy_bandwidth, copy_fn])
def test_copies_reject_bad_arguments(build):
    with pytest.raises(ValueError, match="mode: must be one of"):
        build(1024, mode="fast", device="cpu")
    with pytest.raises(ValueError, match="nbytes: must be an int >= 4"):
        build(2, mode="pinned", device="cpu")
    with pytest.raises(ValueError, match="nbytes"):
        build(True, mode="pinned", device="cpu")


def test_copy_fn_refuses_a_device_without_cuda():
    with pytest.raises(ValueError, match=r"device: needs a CUDA GPU \(device is cpu\)"):
        copy_fn(1024, mode="pageable", device="cpu")


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


def test_overlap_loops_refuse_a_device_without_cuda():
    with pytest.raises(ValueError, match="device: needs a CUDA GPU"):
        overlap_loops([torch.ones(4)], lambda x: x * 2, device="cpu")


def test_overlap_loops_are_named_from_serial_to_overlapped():
    assert OVERLAP_LOOPS[:2] == ("copy only", "compute only")
    assert OVERLAP_LOOPS[-1] == "prefetch (side stream)"


# ---------------------------------------------------------------------------- CUDA only
@requires_cuda
@pytest.mark.parametrize("mode", COPY_MODES)
def test_copy_fn_delivers_the_tensor_on_cuda(mode):
    out = copy_fn(1 << 12, mode=mode, device="cuda")()
    torch.cuda.synchronize()  # non_blocking copies: wait before reading
    if mode == "pin_only":
        assert out.device.type == "cpu" and out.is_pinned()
    else:
        assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), torch.ones(1 << 10))


@requires_cuda
@pytest.mark.parametrize("mode", COPY_MODES)
def test_copy_bandwidth_measures_on_cuda(mode):
    result = copy_bandwidth(1 << 20, mode=mode, device="cuda", repeats=3, warmup=1)
    assert not result.skipped and len(result.seconds) == 3
    assert all(t > 0 for t in result.seconds) and result.gb_per_s > 0


@requires_cuda
def test_copies_can_be_compared_on_cuda():
    r = compare(
        copy_fn(1 << 20, mode="pageable", device="cuda"),
        copy_fn(1 << 20, mode="pinned", device="cuda"),
        device="cuda",
        max_seconds=2,
    )
    assert r.rounds >= 1 and r.verdict in ("holds", "does not hold", "inconclusive")


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
def test_overlap_loops_compute_every_batch_in_every_arrangement():
    batches = [torch.full((64, 64), float(i)) for i in range(4)]
    sums = []

    def compute(X):
        sums.append(X.sum())  # stays on the device: no sync inside the loop
        return X

    loops = overlap_loops(batches, compute, device="cuda")
    assert tuple(loops) == OVERLAP_LOOPS
    for name, loop in loops.items():
        sums.clear()
        loop()
        torch.cuda.synchronize()
        expected = [] if name == "copy only" else [float(i * 64 * 64) for i in range(4)]
        assert [s.item() for s in sums] == expected, name


@requires_cuda
def test_overlap_loops_need_batches():
    with pytest.raises(ValueError, match="batches"):
        overlap_loops([], lambda x: x, device="cuda")
