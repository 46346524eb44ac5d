"""Tests for d2lopt.lab.transfer: CPU paths always, CUDA paths where a GPU exists."""

import math
import statistics
import time

import pytest
import torch
from conftest import requires_cuda

from d2lopt.lab import transfer
from d2lopt.lab.transfer import (
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
from d2lopt.measure import compare

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
    with pytest.raises(ValueError, match="nbytes: must be >= 4"):
        build(2, mode="pinned", device="cpu")
    with pytest.raises(ValueError, match="nbytes"):
        build(True, mode="pinned", device="cpu")


def test_copy_fn_refuses_a_device_without_cuda():
    with pytest.raises(ValueError, match=r"device: needs a CUDA GPU \(device is cpu\)"):
        copy_fn(1024, mode="pageable", device="cpu")


def test_copy_bandwidth_times_each_copy_between_device_syncs(monkeypatch):
    # the measuring path without a GPU: what is timed, with which device synchronized
    made, timed = {}, {}

    def fake_copy_fn(nbytes, *, mode, device):
        made.update(nbytes=nbytes, mode=mode, device=device)
        return lambda: None

    calls = []

    def fake_time_repeats(fn, *, repeats, warmup, device):
        calls.append(dict(repeats=repeats, warmup=warmup, device=device))
        timed.update(fn=fn)
        return [0.5] if repeats == 1 and warmup == 0 else [0.004, 0.001, 0.002]

    monkeypatch.setattr(transfer, "cuda_skip_reason", lambda device: "")
    monkeypatch.setattr(transfer, "copy_fn", fake_copy_fn)
    monkeypatch.setattr(transfer, "time_repeats", fake_time_repeats)
    result = copy_bandwidth(4_000_003, mode="pinned", device="cuda:1", repeats=3, warmup=2)
    assert made == {"nbytes": 4_000_003, "mode": "pinned", "device": "cuda:1"}
    assert calls == [  # synchronized around every copy; the first call timed apart (24.6)
        {"repeats": 1, "warmup": 0, "device": "cuda:1"},
        {"repeats": 3, "warmup": 1, "device": "cuda:1"},
    ]
    assert result.first == 0.5  # a size not yet cached may pay the page-locked allocation
    assert result.nbytes == 4_000_000  # whole float32 elements: the bytes really copied
    assert result.seconds == [0.004, 0.001, 0.002] and not result.skipped
    assert result.gb_per_s == pytest.approx(4_000_000 / 0.002 / 1e9)


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
    assert not result.skipped and result.nbytes == 1 << 20 and len(result.seconds) == 3
    # the rate is the bytes really copied over the median of the real, synchronized times
    assert result.gb_per_s == pytest.approx((1 << 20) / statistics.median(result.seconds) / 1e9)


@requires_cuda
def test_copies_can_be_compared_on_cuda():
    r = compare(
        copy_fn(1 << 20, mode="pageable", device="cuda"),
        copy_fn(1 << 20, mode="pinned", device="cuda"),
        device="cuda",
        max_seconds=2,
    )
    assert r.rounds == len(r.baseline_seconds) == len(r.candidate_seconds) >= 1
    ratios = [b / c for b, c in zip(r.baseline_seconds, r.candidate_seconds, strict=True)]
    assert min(ratios) * (1 - 1e-9) <= r.speedup <= max(ratios) * (1 + 1e-9)  # within its rounds


@requires_cuda
def test_cuda_event_seconds_times_stream_work():
    x = torch.ones(1 << 20, device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    times = cuda_event_seconds(lambda: x.mul_(1.0), repeats=3, warmup=1)
    host = time.perf_counter() - start
    # the events are stamped inside the host's window (it waits for each end event), so
    # their intervals, in seconds, cannot add up to more than the window
    assert len(times) == 3 and 0 < sum(times) <= host


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
