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
3. keeps measuring until the verdict is decided *and* the interval is narrow (about ±10 %),
   or until ``max_seconds`` runs out, so a verdict never rests on one lucky round;
4. answers *holds* only when the whole interval lies above ``1 + min_effect``, *does not
   hold* when it lies below, and *inconclusive* otherwise, with one line saying why.

:func:`compare_many` does the same for N variants against a named reference (loader sweeps,
ladder rungs): every round runs all variants in a rotating order.

``torch.utils.benchmark`` (:func:`d2lopt.timing.benchmark`) times one statement at a time,
so it cannot interleave two; its building blocks (a synchronized block of ``number`` calls,
medians) are reproduced here with the pairing added.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .devices import as_device, synchronize
from .verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Verdict

__all__ = ["Comparison", "Sweep", "compare", "compare_many", "ratio_interval", "summarize"]

# A timed block lasts at least this long, so a microsecond-scale function is not measured
# at the resolution of the clock (torch.utils.benchmark's blocked_autorange does the same).
MIN_BLOCK_SECONDS = 0.01


@dataclass(frozen=True)
class Comparison:
    """The result of one paired comparison; ``str(r)`` is ``1.42x [1.31, 1.55], 24 rounds``.

    Attributes:
        speedup: baseline time / candidate time, the Hodges-Lehmann estimate over rounds
            (> 1: the candidate is faster).
        ci: the confidence interval of ``speedup``; ``(nan, nan)`` with too few rounds.
        rounds: paired rounds measured.
        verdict: ``"holds"``, ``"does not hold"`` or ``"inconclusive"`` for the claim
            "the candidate is faster by at least ``min_effect``".
        reason: one line: why this verdict follows from the interval.
        baseline_seconds, candidate_seconds: seconds per call in each round.
    """

    label: str
    speedup: float
    ci: tuple[float, float]
    rounds: int
    verdict: str
    reason: str
    min_effect: float
    confidence: float
    baseline_seconds: tuple[float, ...] = field(repr=False)
    candidate_seconds: tuple[float, ...] = field(repr=False)

    @property
    def baseline_median(self) -> float:
        """Median seconds per call of the baseline."""
        return float(np.median(self.baseline_seconds))

    @property
    def candidate_median(self) -> float:
        """Median seconds per call of the candidate."""
        return float(np.median(self.candidate_seconds))

    @property
    def decided(self) -> bool:
        return self.verdict != INCONCLUSIVE

    def __str__(self) -> str:
        lo, hi = self.ci
        interval = "[no interval]" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"
        return f"{self.speedup:.2f}x {interval}, {self.rounds} rounds"

    def to_verdict(self, claim: str, statement: str, *, condition: str = "") -> Verdict:
        """A verdict-table row: the evidence always shows the interval and the rounds."""
        evidence = str(self)
        if self.verdict == INCONCLUSIVE:
            evidence += f"; {self.reason}"
        return Verdict(claim, statement, evidence, self.verdict, condition)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "speedup": self.speedup,
            "ci": list(self.ci),
            "rounds": self.rounds,
            "verdict": self.verdict,
            "reason": self.reason,
            "min_effect": self.min_effect,
            "confidence": self.confidence,
            "baseline_seconds": list(self.baseline_seconds),
            "candidate_seconds": list(self.candidate_seconds),
        }


@dataclass(frozen=True)
class Sweep:
    """N variants measured in the same rounds, each compared with ``reference``.

    ``seconds[name]`` holds seconds per call in each round; ``comparisons[name]`` the
    :class:`Comparison` of ``name`` against the reference (absent for the reference).
    """

    reference: str
    seconds: dict[str, list[float]]
    comparisons: dict[str, Comparison]
    elapsed: float

    @property
    def rounds(self) -> int:
        return len(self.seconds[self.reference])

    def median(self, name: str) -> float:
        """Median seconds per call of variant ``name``."""
        return float(np.median(self.seconds[name]))

    def best(self) -> str:
        """The variant that is faster than the reference with the highest interval floor.

        Only a variant whose verdict *holds* can beat the reference: a point estimate that
        noise could explain never displaces it.
        """
        winners = [n for n, c in self.comparisons.items() if c.verdict == HOLDS]
        if not winners:
            return self.reference
        return max(winners, key=lambda n: self.comparisons[n].ci[0])

    def between(self, candidate: str, baseline: str) -> Comparison:
        """``candidate`` against ``baseline``: any two variants, from the same paired rounds.

        Every round ran every variant, so two non-reference variants pair up just like a
        variant and the reference (05 compares each loader setting with the previous one).
        """
        for arg, name in (("candidate", candidate), ("baseline", baseline)):
            if name not in self.seconds:
                raise ValueError(f"{arg}: {name!r} is not one of {sorted(self.seconds)}")
        any_c = next(iter(self.comparisons.values()))  # all share min_effect and confidence
        return _comparison(
            candidate, baseline, self.seconds, any_c.min_effect, any_c.confidence, self.elapsed
        )

    def table(self) -> str:
        """A Markdown table: every variant, its median time and its interval vs the reference."""
        rows = [
            f"| variant | median time | vs {self.reference} | verdict |",
            "|---|---:|---|---|",
        ]
        for name in self.seconds:
            c = self.comparisons.get(name)
            vs = "reference" if c is None else str(c)
            verdict = "" if c is None else f"**{c.verdict}**"
            rows.append(f"| {name} | {_fmt_seconds(self.median(name))} | {vs} | {verdict} |")
        return "\n".join(rows)


def _fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(T+ <= t) for t = 0 .. n(n+1)/2, the exact null distribution of Wilcoxon's T+."""
    dist = np.zeros(n * (n + 1) // 2 + 1)
    dist[0] = 1.0
    for k in range(1, n + 1):  # rank k is in T+ or not, each with probability 1/2
        shifted = np.zeros_like(dist)
        shifted[k:] = dist[:-k]
        dist = (dist + shifted) / 2
    return tuple(np.cumsum(dist))


def min_rounds(confidence: float) -> int:
    """Fewest rounds for which a signed-rank interval at ``confidence`` exists (6 at 95 %)."""
    n = 1
    while 0.5**n > (1 - confidence) / 2:
        n += 1
    return n


def ratio_interval(ratios: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Estimate and confidence interval of a ratio from paired per-round ratios.

    Works on log ratios, where "twice as fast" and "half as fast" are symmetric. The
    estimate is the Hodges-Lehmann estimator (median of the Walsh averages
    ``(x_i + x_j) / 2, i <= j``); the interval is the distribution-free one that inverts
    Wilcoxon's signed-rank test (Hollander & Wolfe, *Nonparametric Statistical Methods*,
    sec. 3.3): order statistics ``C`` and ``M + 1 - C`` of the ``M`` Walsh averages, with
    ``C`` from the exact null distribution. Why this one: it needs no normality (timings
    are skewed by load bursts), a single wild round cannot move it (breakdown 29 %), it is
    exact for small samples where a bootstrap is not, and it is deterministic, so a
    verdict does not change between two renderings of the same measurements. It assumes
    independent rounds whose log ratios are symmetric around the true value: alternating
    the order within rounds is what makes a position effect symmetric.

    Returns ``(estimate, low, high)`` as ratios; low/high are NaN with too few rounds.

    Example:
        >>> est, lo, hi = ratio_interval([2.0, 2.1, 1.9, 2.05, 1.95, 2.0])
        >>> round(est, 2), lo <= est <= hi
        (2.0, True)
    """
    r = np.asarray(ratios, dtype=float)
    n = len(r)
    if n == 0:
        raise ValueError("ratios: need at least one ratio")
    if not np.all(np.isfinite(r) & (r > 0)):
        raise ValueError("ratios: every ratio must be a positive, finite number")
    x = np.log(r)
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2)
    estimate = float(np.exp(np.median(walsh)))
    cdf = _signed_rank_cdf(n)
    alpha = 1 - confidence
    # largest C with P(T+ <= C - 1) <= alpha / 2
    c = 0
    while c < len(cdf) and cdf[c] <= alpha / 2:
        c += 1
    if c == 0:
        return estimate, math.nan, math.nan
    return estimate, float(np.exp(walsh[c - 1])), float(np.exp(walsh[len(walsh) - c]))


def _judge(
    estimate: float,
    lo: float,
    hi: float,
    ratios: np.ndarray,
    rounds: int,
    *,
    min_effect: float,
    confidence: float,
    elapsed: float,
) -> tuple[str, str]:
    bar = 1 + min_effect
    if math.isnan(lo):
        need = min_rounds(confidence)
        if math.isnan(elapsed):  # summarize(): rounds taken elsewhere
            return INCONCLUSIVE, (
                f"only {rounds} round(s), and a {confidence:.0%} interval needs {need}: "
                "measure more rounds"
            )
        return INCONCLUSIVE, (
            f"only {rounds} round(s) in {elapsed:.1f} s, and a {confidence:.0%} interval needs "
            f"{need}: raise max_seconds"
        )
    if lo > bar:
        return HOLDS, f"interval {lo:.2f}-{hi:.2f} lies above {bar:.2f}"
    if hi < bar:
        return DOES_NOT_HOLD, f"interval {lo:.2f}-{hi:.2f} lies below {bar:.2f}"
    logs = np.log(ratios)
    noise = math.exp(1.4826 * float(np.median(np.abs(logs - np.median(logs))))) - 1
    return INCONCLUSIVE, f"interval {lo:.2f}-{hi:.2f} straddles {bar:.2f}; noise ±{noise:.0%}"


# ---------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------


def _check_args(min_effect, confidence, max_seconds, warmup, target_width, max_rounds) -> None:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not number(min_effect) or min_effect < 0:
        raise ValueError(f"min_effect: must be a fraction >= 0 (0.05 = 5 %), got {min_effect!r}")
    if not number(confidence) or not 0.5 <= confidence < 1:
        raise ValueError(f"confidence: must be in [0.5, 1), e.g. 0.95, got {confidence!r}")
    if not number(max_seconds) or max_seconds <= 0:
        raise ValueError(f"max_seconds: must be a time budget > 0 in seconds, got {max_seconds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: must be an int >= 0 (untimed calls first), got {warmup!r}")
    if not number(target_width) or target_width <= 0:
        raise ValueError(
            f"target_width: must be a fraction > 0 (0.10 = ±10 %), got {target_width!r}"
        )
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 2:
        raise ValueError(f"max_rounds: must be an int >= 2, got {max_rounds!r}")


def _timed_block(fn: Callable[[], Any], number: int, dev: torch.device | None) -> float:
    """Seconds per call of ``number`` calls of ``fn``, the device synchronized around them."""
    if dev is not None:
        synchronize(dev)  # queued work from before must not land in this block
    start = time.perf_counter()
    for _ in range(number):
        fn()
    if dev is not None:
        synchronize(dev)  # the block's own queued work must
    return (time.perf_counter() - start) / number


def _round_order(names: list[str], r: int) -> list[str]:
    """Rotate the order every round and reverse it every other cycle: AB BA BA AB for two."""
    k = len(names)
    order = names[r % k :] + names[: r % k]
    return order[::-1] if (r // k) % 2 else order


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
) -> Sweep:
    """Time N variants in the same paired rounds and compare each with ``reference``.

    Args:
        fns: name -> function to time (called with no arguments).
        reference: the name in ``fns`` every other variant is compared with.
        device: synchronized around every timed block (None: host work only; a CPU
            device needs no synchronization).
        min_effect: the smallest speedup worth claiming (0.05: faster by at least 5 %).
        confidence: of the intervals.
        max_seconds: time budget for the whole measurement, warm-up included. A round
            predicted to end past it is not started; the warm-up and the first round
            always run, so a variant slower than the budget still gets one round (and an
            *inconclusive* verdict that says so).
        warmup: untimed calls of every variant first (allocators, caches, lazy init); with
            ``warmup=0`` and ``number=None`` one call each still runs to calibrate.
        target_width: stop early only when every interval is within about ± this.
        max_rounds: stop after this many rounds in any case.
        number: calls per timed block; None picks enough for a block of at least 10 ms.

    Example:
        >>> s = compare_many({"a": lambda: sum(range(2000)), "b": lambda: sum(range(1000))},
        ...                  reference="a", max_seconds=1.0)
        >>> sorted(s.comparisons), s.rounds >= 1
        (['b'], True)
    """
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
    _check_args(min_effect, confidence, max_seconds, warmup, target_width, max_rounds)
    if number is not None and (
        isinstance(number, bool) or not isinstance(number, int) or number < 1
    ):
        raise ValueError(f"number: must be an int >= 1 or None (automatic), got {number!r}")
    dev = as_device(device) if device is not None else None
    if dev is not None and dev.type == "cpu":
        dev = None
    names = list(fns)
    start = time.perf_counter()

    per_call = dict.fromkeys(names, 0.0)
    for _ in range(max(warmup, 1 if number is None else 0)):  # untimed for the result
        for name in names:  # the last warm-up call also calibrates ``number``
            per_call[name] = _timed_block(fns[name], 1, dev)
    if number is None:
        fastest = min(per_call.values())
        number = max(1, min(10**6, math.ceil(MIN_BLOCK_SECONDS / max(fastest, 1e-9))))

    seconds: dict[str, list[float]] = {name: [] for name in names}
    limit = math.log1p(target_width)
    r = 0
    while r < max_rounds:
        predicted = number * sum(per_call.values())
        if r > 0 and time.perf_counter() - start + predicted > max_seconds:
            break  # the next round would end past the budget
        for name in _round_order(names, r):
            per_call[name] = _timed_block(fns[name], number, dev)
            seconds[name].append(per_call[name])
        r += 1
        if r >= min_rounds(confidence) and _settled(
            seconds, reference, confidence, min_effect, limit
        ):
            break
    elapsed = time.perf_counter() - start
    return summarize(
        seconds, reference=reference, min_effect=min_effect, confidence=confidence,
        elapsed=elapsed,
    )  # fmt: skip


def summarize(
    seconds: Mapping[str, list[float]],
    *,
    reference: str,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    elapsed: float = math.nan,
) -> Sweep:
    """Intervals and verdicts for timings already taken in paired rounds.

    For measurements :func:`compare_many` cannot run itself, e.g. inside a distributed
    program where every rank must execute the same rounds (``d2lopt.sharding``,
    ``d2lopt.pipeline``): ``seconds[name][i]`` must come from round ``i`` for every name,
    with the order alternated between rounds.
    """
    if reference not in seconds:
        raise ValueError(f"reference: {reference!r} is not one of {sorted(seconds)}")
    lengths = {len(v) for v in seconds.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError("seconds: every variant needs one time per round, and at least one round")
    _check_args(min_effect, confidence, 1.0, 0, 0.1, 2)
    seconds = {name: list(times) for name, times in seconds.items()}
    comparisons = {
        name: _comparison(name, reference, seconds, min_effect, confidence, elapsed)
        for name in seconds
        if name != reference
    }
    return Sweep(reference, seconds, comparisons, elapsed)


def _settled(seconds, reference, confidence, min_effect, limit) -> bool:
    """Every comparison is decided and its interval within about ±target_width."""
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


def _comparison(name, reference, seconds, min_effect, confidence, elapsed) -> Comparison:
    ratios = np.asarray(seconds[reference]) / np.asarray(seconds[name])
    est, lo, hi = ratio_interval(ratios, confidence)
    verdict, reason = _judge(
        est,
        lo,
        hi,
        ratios,
        len(ratios),
        min_effect=min_effect,
        confidence=confidence,
        elapsed=elapsed,
    )
    return Comparison(
        label=f"{name} vs {reference}",
        speedup=est,
        ci=(lo, hi),
        rounds=len(ratios),
        verdict=verdict,
        reason=reason,
        min_effect=min_effect,
        confidence=confidence,
        baseline_seconds=tuple(seconds[reference]),
        candidate_seconds=tuple(seconds[name]),
    )


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
) -> Comparison:
    """Is ``candidate`` faster than ``baseline`` by at least ``min_effect``? Measure it.

    Paired rounds in alternating order, a Hodges-Lehmann estimate with its signed-rank
    interval, adaptive stopping; see the module docstring and :func:`compare_many` for the
    arguments.

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
    )
    result = sweep.comparisons["candidate"]
    return replace(result, label=label) if label else result
