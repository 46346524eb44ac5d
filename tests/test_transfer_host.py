"""Tests for d2lopt.lab.transfer's host-side helpers, what 07_cpu_to_gpu shows on a CPU."""

from __future__ import annotations

import pytest
import torch

from d2lopt.lab import transfer
from d2lopt.lab.transfer import host_copy_bandwidth, pinning_skip_reason


def test_pinning_skip_reason_agrees_with_what_pinning_does():
    reason = pinning_skip_reason()
    if reason:  # pinning raises here: the reason is the error, never a guess
        assert reason.startswith("RuntimeError: ")
        with pytest.raises(RuntimeError):
            torch.empty(1, pin_memory=True)
    else:
        assert torch.empty(1, pin_memory=True).is_pinned()


def test_pinning_skip_reason_reports_the_first_line_of_the_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no pinned allocator here\nsecond line")

    monkeypatch.setattr(transfer.torch, "empty", refuse)
    assert pinning_skip_reason() == "RuntimeError: no pinned allocator here"


def test_host_copy_bandwidth_times_each_copy(monkeypatch):
    calls = []

    def fake_repeats(fn, *, repeats, warmup, device=None):
        fn()
        calls.append((repeats, warmup, device))
        return [0.5] * repeats

    monkeypatch.setattr(transfer, "time_repeats", fake_repeats)
    r = host_copy_bandwidth(1 << 20, repeats=3, warmup=2)
    assert r.label == "host_copy" and r.nbytes == 1 << 20 and not r.skipped
    assert r.first == 0.5 and r.seconds == [0.5] * 3
    assert r.gb_per_s == pytest.approx((1 << 20) / 0.5 / 1e9)
    assert calls == [(1, 0, None), (3, 1, None)]  # the first call apart, then the repeats
    assert "host_copy" in str(r)


def test_host_copy_bandwidth_copies_for_real():
    r = host_copy_bandwidth(4096, repeats=2, warmup=1)
    assert len(r.seconds) == 2 and all(s > 0 for s in r.seconds) and r.first > 0


@pytest.mark.parametrize("nbytes", [0, 3, 2.5, True, "8"])
def test_host_copy_bandwidth_rejects_bad_sizes(nbytes):
    with pytest.raises(ValueError, match="nbytes"):
        host_copy_bandwidth(nbytes)
