"""Timers: d2l compatibility, context manager, one call timed alone, sync counting."""

from __future__ import annotations

import pytest
import torch

import d2lopt.measure
import d2lopt.timing
from d2lopt import Timer, count_host_syncs
from d2lopt.measure import time_repeats


class _Clock:
    """A fake ``time.perf_counter``: each read returns the next of the given instants."""

    def __init__(self, *instants: float) -> None:
        self.instants = list(instants)

    def __call__(self) -> float:
        return self.instants.pop(0)


def test_timer_api_matches_d2l() -> None:
    d2l = pytest.importorskip("d2l.torch")
    ours, theirs = Timer(), d2l.Timer()
    times = [0.25, 0.5, 0.125]  # binary fractions: every sum below is exact
    ours.times, theirs.times = list(times), list(times)
    assert ours.avg() == theirs.avg() == 0.875 / 3
    assert ours.sum() == theirs.sum() == 0.875
    assert ours.cumsum() == list(theirs.cumsum()) == [0.25, 0.75, 0.875]
    assert ours.times == theirs.times  # methods read the list, never change it


def test_timer_records_the_clock_between_start_and_stop(monkeypatch) -> None:
    # the constructor starts the timer (as d2l's does): the first read is taken there
    monkeypatch.setattr(d2lopt.timing.time, "perf_counter", _Clock(10.0, 10.5, 11.0, 13.0))
    timer = Timer()
    assert timer.stop() == 0.5
    timer.start()
    assert timer.stop() == 2.0 and timer.times == [0.5, 2.0]


def test_timer_synchronizes_the_device_before_every_clock_read(monkeypatch) -> None:
    events: list[str] = []
    clock = _Clock(0.0, 1.0, 1.25, 2.0, 2.0625, 3.0)

    def read() -> float:
        events.append("clock")
        return clock()

    monkeypatch.setattr(d2lopt.timing.time, "perf_counter", read)
    monkeypatch.setattr(d2lopt.timing, "synchronize", lambda device: events.append(str(device)))
    timer = Timer(device="cpu")
    for _ in range(2):
        with timer:
            events.append("work")
    assert events == ["cpu", "clock"] + ["cpu", "clock", "work", "cpu", "clock"] * 2
    assert timer.times == [0.25, 0.0625]
    events.clear()
    Timer()  # without a device: host time only, no synchronization
    assert events == ["clock"]


def test_timer_median_ignores_one_slow_outlier() -> None:
    timer = Timer()
    timer.times = [0.001, 0.05, 0.002]
    assert timer.median() == 0.002 and timer.sum() == pytest.approx(0.053, rel=1e-12)


def test_time_repeats_times_each_call_alone_the_device_synchronized(monkeypatch) -> None:
    events = []
    monkeypatch.setattr(d2lopt.measure, "synchronize", lambda device: events.append("sync"))
    seconds = time_repeats(lambda: events.append("call"), repeats=2, warmup=1, device="cpu")
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)
    assert events == ["call"] + ["sync", "call", "sync"] * 2  # the warm-up call is untimed
    with pytest.raises(ValueError, match="repeats"):
        time_repeats(print, repeats=0)


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
