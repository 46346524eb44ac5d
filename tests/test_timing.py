"""Timers: d2l compatibility, context manager, benchmark summary, sync counting."""

from __future__ import annotations

import time

import pytest
import torch

from d2lopt import Timer, benchmark, count_host_syncs


def test_timer_api_matches_d2l() -> None:
    d2l = pytest.importorskip("d2l.torch")
    ours, theirs = Timer(), d2l.Timer()
    for timer in (ours, theirs):
        for _ in range(3):
            timer.start()
            time.sleep(0.01)
            timer.stop()
    assert len(ours.times) == len(theirs.times) == 3
    for name in ("avg", "sum"):
        assert getattr(ours, name)() == pytest.approx(getattr(theirs, name)(), abs=0.02)
    assert ours.cumsum() == pytest.approx([sum(ours.times[: i + 1]) for i in range(3)], rel=1e-12)
    assert ours.avg() >= 0.009


def test_timer_context_manager_and_median() -> None:
    timer = Timer(device="cpu")
    for delay in (0.001, 0.05, 0.001):
        with timer:
            time.sleep(delay)
    assert len(timer.times) == 3
    assert timer.median() < 0.04 < timer.sum()


def test_benchmark_reports_median_and_spread() -> None:
    calls = []
    result = benchmark(lambda: calls.append(1), label="noop", warmup=3, min_run_time=0.05)
    assert result.label == "noop"
    assert result.median > 0 and result.iqr >= 0
    assert len(calls) > 3  # warm-up plus the measured runs
    assert "noop" in str(result)


def test_benchmark_keeps_the_current_thread_count() -> None:
    seen = []
    benchmark(lambda: seen.append(torch.get_num_threads()), min_run_time=0.01, warmup=0)
    assert set(seen) == {torch.get_num_threads()}


def test_benchmark_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_run_time"):
        benchmark(lambda: None, min_run_time=0)
    with pytest.raises(ValueError, match="warmup"):
        benchmark(lambda: None, warmup=-1)


def test_count_host_syncs_counts_conversions_and_restores_methods() -> None:
    original = torch.Tensor.item
    t = torch.arange(4.0)
    with count_host_syncs() as c:
        t.sum().item()
        float(t[0])
        t.tolist()
        bool(t[1] > 0)
        _ = t * 2  # pure compute: no sync
    assert c.count == 4
    assert c.by_kind == {"item": 1, "__float__": 1, "tolist": 1, "__bool__": 1}
    assert torch.Tensor.item is original
