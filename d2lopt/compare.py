"""Is the candidate faster? Paired, interleaved rounds, an interval, and an honest verdict.

Taught in ``05_disk_to_memory`` and used by every timing verdict of the course, the ladder
and ``d2lopt tune-loader``. A single ratio of two timings is decided by noise as often as by
the change being measured: a burst of background load during one of the two runs is enough.
:func:`compare` therefore

1. runs baseline and candidate **back to back in every round**, alternating their order
   (AB, BA, BA, AB, ...), with the device synchronized around each timed block, so a slow
   drift of the machine's load hits both alike and cancels in the per-round ratio;
2. summarizes the per-round ratios with the **Hodges-Lehmann estimate** and its
   **Wilcoxon signed-rank confidence interval** (on log ratios, see :func:`ratio_interval`);
3. looks at the intervals only at rounds planned before the first one (9, 14, 21, 32, ...
   up to ``max_rounds``: :func:`d2lopt.stats.planned_looks`), with the error split over
   the looks, and stops at the first look where the verdict is decided *and* the interval
   narrow (about ±10 %), at ``max_rounds``, or when ``max_seconds`` runs out (that last
   round is then judged with the error of the looks it cut off). A verdict keeps its error
   rate whichever look it stops at: it rests neither on one lucky round nor on one lucky
   look;
4. answers *holds* only when the whole interval lies above ``1 + min_effect``, *does not
   hold* when it lies below, and *inconclusive* otherwise, with one line saying why.

:func:`compare_many` does the same for N variants against a named reference (loader sweeps,
ladder rungs): every round runs all variants in a rotating order.

``torch.utils.benchmark`` (:func:`d2lopt.timing.benchmark`) times one statement at a time,
so it cannot interleave two; its building blocks (a synchronized block of ``number`` calls,
medians) are reproduced here with the pairing added.

This module measures; the statistics are in :mod:`d2lopt.stats` and the result types
(:class:`Comparison`, :class:`Sweep`, :func:`summarize`) in :mod:`d2lopt.sweep`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .devices import as_device, synchronize
from .stats import look_confidence, min_rounds, planned_looks, ratio_interval, round_order
from .sweep import Comparison, Sweep, check_judging, is_number, summarize

# Comparison, Sweep, ratio_interval and summarize are imported here too: the notebooks
# reach them as ``d2lopt.compare.ratio_interval`` etc., the course's one timing namespace.
__all__ = [
    "Comparison",
    "Sweep",
    "compare",
    "compare_many",
    "min_rounds",
    "planned_looks",
    "ratio_interval",
    "summarize",
]

# A timed block lasts at least this long, so a microsecond-scale function is not measured
# at the resolution of the clock (torch.utils.benchmark's blocked_autorange does the same).
MIN_BLOCK_SECONDS = 0.01


def _check_args(min_effect, confidence, max_seconds, warmup, target_width, max_rounds) -> None:
    check_judging(min_effect, confidence)
    if not is_number(max_seconds) or max_seconds <= 0:
        raise ValueError(f"max_seconds: must be a time budget > 0 in seconds, got {max_seconds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: must be an int >= 0 (untimed calls first), got {warmup!r}")
    if not is_number(target_width) or target_width <= 0:
        raise ValueError(
            f"target_width: must be a fraction > 0 (0.10 = ±10 %), got {target_width!r}"
        )
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 2:
        raise ValueError(f"max_rounds: must be an int >= 2, got {max_rounds!r}")


def _check_fns(fns: Any, reference: Any, number: Any) -> None:
    if not isinstance(fns, Mapping) or len(fns) < 2:
        raise ValueError("fns: need a mapping of at least two named functions to compare")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(
                f"fns[{name!r}]: must be callable with no arguments, got {type(fn).__name__}; "
                "wrap the work in a lambda"
            )
    if reference not in fns:
        raise ValueError(f"reference: {reference!r} is not one of {sorted(fns)}")
    if number is not None and (
        isinstance(number, bool) or not isinstance(number, int) or number < 1
    ):
        raise ValueError(f"number: must be an int >= 1 or None (automatic), got {number!r}")


def _timed_block(
    fn: Callable[[], Any], number: int, dev: torch.device | None, timer: Callable[[], float]
) -> float:
    """Seconds per call of ``number`` calls of ``fn``, the device synchronized around them."""
    if dev is not None:
        synchronize(dev)  # queued work from before must not land in this block
    start = timer()
    for _ in range(number):
        fn()
    if dev is not None:
        synchronize(dev)  # the block's own queued work must
    return (timer() - start) / number


def _warm_up(fns, warmup: int, number: int | None, dev, timer) -> tuple[dict[str, float], int]:
    """Untimed calls of every variant; their last one predicts a call's cost.

    Returns seconds per call of each variant and ``number``: the calls per timed block
    (as given, or enough for the fastest variant to fill :data:`MIN_BLOCK_SECONDS`).
    """
    per_call = dict.fromkeys(fns, 0.0)
    for _ in range(max(warmup, 1 if number is None else 0)):  # untimed for the result
        for name in fns:  # the last warm-up call also calibrates ``number``
            per_call[name] = _timed_block(fns[name], 1, dev, timer)
    if number is None:
        fastest = min(per_call.values())
        number = max(1, min(10**6, math.ceil(MIN_BLOCK_SECONDS / max(fastest, 1e-9))))
    return per_call, number


def compare_many(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reference: str,
    device: torch.device | str | None = None,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    max_seconds: float = 10.0,
    warmup: int = 1,
    target_width: float = 0.10,
    max_rounds: int = 200,
    number: int | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> Sweep:
    """Time N variants in the same paired rounds and compare each with ``reference``.

    Args:
        fns: name -> function to time (called with no arguments).
        reference: the name in ``fns`` every other variant is compared with.
        device: synchronized around every timed block (None: host work only; a CPU
            device needs no synchronization).
        min_effect: the smallest speedup worth claiming (0.05: faster by at least 5 %).
        confidence: of the intervals, whichever planned look the measurement stops at (each
            look's interval is computed at ``look_confidence(confidence, len(looks))``).
        max_seconds: time budget for the whole measurement, warm-up included. A round
            predicted to end past it is not started; the warm-up and the first round
            always run, so a variant slower than the budget still gets one round (and an
            *inconclusive* verdict that says so). Where the budget ends it, the last round
            measured is judged once more, with the error of the planned looks it cut off.
        warmup: untimed calls of every variant first (allocators, caches, lazy init); with
            ``warmup=0`` and ``number=None`` one call each still runs to calibrate.
        target_width: stop at a planned look only when every interval is also within
            about ± this, so the estimate is precise as well as on one side of the line.
        max_rounds: stop after this many rounds in any case: the last planned look
            (the looks are :func:`d2lopt.stats.planned_looks` ``(max_rounds, confidence)``).
        number: calls per timed block; None picks enough for a block of at least 10 ms.
        timer: the clock (as ``torch.utils.benchmark.Timer``'s ``timer``); the tests of
            the stopping rule pass a simulated one.

    Example:
        >>> s = compare_many({"a": lambda: sum(range(2000)), "b": lambda: sum(range(1000))},
        ...                  reference="a", max_seconds=1.0)
        >>> sorted(s.comparisons), s.rounds >= 1
        (['b'], True)
    """
    _check_fns(fns, reference, number)
    _check_args(min_effect, confidence, max_seconds, warmup, target_width, max_rounds)
    dev = as_device(device) if device is not None else None
    if dev is not None and dev.type == "cpu":
        dev = None
    names = list(fns)
    start = timer()
    per_call, number = _warm_up(fns, warmup, number, dev, timer)

    seconds: dict[str, list[float]] = {name: [] for name in names}
    limit = math.log1p(target_width)
    looks = planned_looks(max_rounds, confidence)  # fixed before the first round
    each = look_confidence(confidence, len(looks))
    r, looked, share = 0, 0, 1
    while r < max_rounds:
        predicted = number * sum(per_call.values())
        if r > 0 and timer() - start + predicted > max_seconds:
            # the budget, not the ratios, ends it: this round is judged once more, with
            # the error of the planned looks it cuts off
            share = len(looks) - looked
            break
        for name in round_order(names, r):
            per_call[name] = _timed_block(fns[name], number, dev, timer)
            seconds[name].append(per_call[name])
        r += 1
        if r in looks:
            looked += 1
            if _settled(seconds, reference, each, min_effect, limit):
                break  # only at a planned look: never because an interval just crossed the line
    elapsed = timer() - start
    return summarize(
        seconds, reference=reference, min_effect=min_effect, confidence=confidence,
        elapsed=elapsed, looks=len(looks), share=share,
    )  # fmt: skip


def _settled(seconds, reference, confidence, min_effect, limit) -> bool:
    """Every comparison is decided at ``confidence`` and its interval within ±target_width."""
    ref = np.asarray(seconds[reference])
    for name, times in seconds.items():
        if name == reference:
            continue
        est, lo, hi = ratio_interval(ref / np.asarray(times), confidence)
        if math.isnan(lo) or lo <= 1 + min_effect <= hi:
            return False
        if max(math.log(hi / est), math.log(est / lo)) > limit:
            return False
    return True


def compare(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    *,
    device: torch.device | str | None = None,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    max_seconds: float = 10.0,
    warmup: int = 1,
    target_width: float = 0.10,
    max_rounds: int = 200,
    number: int | None = None,
    label: str = "",
    timer: Callable[[], float] = time.perf_counter,
) -> Comparison:
    """Is ``candidate`` faster than ``baseline`` by at least ``min_effect``? Measure it.

    Paired rounds in alternating order, a Hodges-Lehmann estimate with its signed-rank
    interval, stopping only at planned looks (see the module docstring).

    Args:
        baseline, candidate: functions to time, called with no arguments (wrap the work
            in a lambda).
        device: synchronized around every timed block (None or a CPU device: host work).
        min_effect: the smallest speedup worth claiming (0.05: faster by at least 5 %);
            the verdict is about the line ``1 + min_effect``.
        confidence: of the interval, whichever planned look the measurement stops at.
        max_seconds: time budget, warm-up included; the round that would end past it is
            not started.
        warmup: untimed calls of each function first.
        target_width: stop at a planned look only once the interval is also within about
            ± this (0.10 = ±10 %).
        max_rounds: the last planned look (:func:`d2lopt.stats.planned_looks`).
        number: calls per timed block; None picks enough for a block of at least 10 ms.
        label: names the comparison in its row (``Comparison.label``).
        timer: the clock; tests pass a simulated one.

    Returns:
        A :class:`Comparison`: ``speedup`` (baseline time / candidate time), ``ci``,
        ``rounds``, ``verdict`` (*holds*, *does not hold*, *inconclusive*) and ``reason``.

    Example:
        >>> r = compare(lambda: sum(range(4000)), lambda: sum(range(1000)), max_seconds=2)
        >>> r.verdict in ("holds", "inconclusive"), r.ci[0] <= r.speedup <= r.ci[1]
        (True, True)
    """
    for arg, fn in (("baseline", baseline), ("candidate", candidate)):
        if not callable(fn):
            raise TypeError(
                f"{arg}: must be callable with no arguments, got {type(fn).__name__}; "
                f"wrap the work in a lambda: compare(lambda: f(x), lambda: g(x))"
            )
    sweep = compare_many(
        {"baseline": baseline, "candidate": candidate},
        reference="baseline",
        device=device,
        min_effect=min_effect,
        confidence=confidence,
        max_seconds=max_seconds,
        warmup=warmup,
        target_width=target_width,
        max_rounds=max_rounds,
        number=number,
        timer=timer,
    )
    result = sweep.comparisons["candidate"]
    return replace(result, label=label) if label else result
