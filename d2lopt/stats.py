"""The statistics of paired rounds: the order of a round, an interval, and a verdict.

Taught in ``01_environment`` (:func:`ratio_interval` on repeated timings) and behind every
timing verdict of the course (:mod:`d2lopt.measure` measures, this module judges). Kept
apart from the measuring loop so that programs that take their own rounds (every rank in
lockstep: ``d2lopt.dist.parallelism``, ``d2lopt.sharding``) use the same statistics.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from .verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

__all__ = [
    "format_interval",
    "judge",
    "look_confidence",
    "min_rounds",
    "planned_looks",
    "ratio_interval",
    "round_order",
]

# Planned looks grow by this factor (9, 14, 21, 32, ... rounds): a look at every round would
# spend the error on looks that add almost no information, a factor of 2 would overshoot.
LOOK_GROWTH = 1.5


def round_order(names: list[str], r: int) -> list[str]:
    """Rotate the order every round and reverse it every other cycle: AB BA BA AB for two.

    Alternating the order is what makes a position effect (the second of two calls runs
    with warm caches, or after the first one's heat) symmetric, as :func:`ratio_interval`
    assumes.
    """
    k = len(names)
    order = names[r % k :] + names[: r % k]
    return order[::-1] if (r // k) % 2 else order


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


def look_confidence(confidence: float, looks: int, share: int = 1) -> float:
    """The confidence of one look's interval when ``looks`` looks split ``1 - confidence``.

    Bonferroni's split: each planned look may be wrong with probability
    ``(1 - confidence) / looks``, so the chance that *any* look is wrong, whichever one the
    measurement stops at, is at most ``1 - confidence`` (the union bound needs no model of
    how the looks correlate). A look that takes the place of ``share`` planned looks (the
    time budget ended the measurement before them) may spend their error too.
    """
    return 1 - (1 - confidence) * share / looks


def planned_looks(max_rounds: int, confidence: float) -> tuple[int, ...]:
    """The rounds after which :func:`d2lopt.measure.compare_many` may stop and judge.

    A group-sequential design (taught in ``05_disk_to_memory``; README "How we measure"):
    the looks are fixed before the first round, 1.5 times apart and ending at
    ``max_rounds``, and the error is split evenly over them (:func:`look_confidence`).
    Checking an ordinary 95 % interval after every round and stopping once it clears the
    line is wrong about a quarter of the time when the truth sits on the line, because each
    look is another chance for noise to push the interval over it; with planned looks and a
    split error the verdict keeps its error rate at whichever look it stops. When the time
    budget ends the measurement first, its last round is judged once more, in place of the
    planned looks it cuts off, with their error (``share`` in :func:`look_confidence`): the
    budget is spent by the rounds' total time, not by what their ratios say, so that look
    is not chosen by the data. The first planned look is the fewest rounds for which an
    interval at the split confidence exists.

    Example:
        >>> planned_looks(200, 0.95)
        (9, 14, 21, 32, 48, 72, 108, 200)
    """
    first = min_rounds(confidence)
    while True:
        looks = _geometric(first, max_rounds)
        need = min_rounds(look_confidence(confidence, len(looks)))
        if need <= first:  # fewer looks never need more rounds: this settles
            return looks
        first = need


def _geometric(first: int, last: int) -> tuple[int, ...]:
    looks = [first] if first < last else []
    while looks and looks[-1] * LOOK_GROWTH < last:
        looks.append(math.ceil(looks[-1] * LOOK_GROWTH))
    while looks and looks[-1] * 1.25 > last:  # a look just before the last adds little
        looks.pop()
    return (*looks, last)


def format_interval(lo: float, hi: float, bar: float) -> str:
    """``[1.31, 1.55]``, with a third decimal on an end within 1 % of ``bar`` (``[1.049, 1.09]``).

    Two decimals would print 1.049 as 1.05, and a reader could not tell on which side of
    the line ``bar = 1 + min_effect`` the interval ends.
    """
    if math.isnan(lo):
        return "[no interval]"

    def end(x: float) -> str:
        return f"{x:.3f}" if abs(x / bar - 1) < 0.01 else f"{x:.2f}"

    return f"[{end(lo)}, {end(hi)}]"


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


def judge(
    lo: float,
    hi: float,
    ratios: np.ndarray,
    *,
    min_effect: float,
    confidence: float,
    elapsed: float,
    looks: int = 1,
    share: int = 1,
) -> tuple[str, str]:
    """The verdict on "faster by at least ``min_effect``" and one line saying why.

    *holds* only when the whole interval ``[lo, hi]`` lies above ``1 + min_effect``, *does
    not hold* when it lies below, *inconclusive* otherwise (with the noise of the rounds,
    or the rounds still missing for an interval). ``[lo, hi]`` is the interval at
    ``look_confidence(confidence, looks, share)``: ``looks`` is the number of planned looks
    the error was split over (1 for rounds judged once), ``share`` how many of their shares
    this look spends. ``elapsed`` is NaN for rounds measured
    elsewhere (:func:`d2lopt.measure.summarize`): the advice then names rounds, not time.
    """
    rounds = len(ratios)
    bar = 1 + min_effect
    if math.isnan(lo):
        need = min_rounds(look_confidence(confidence, looks, share))
        split = f" ({share} of {looks} planned looks' share)" if share < looks else ""
        if math.isnan(elapsed):  # summarize(): rounds taken elsewhere
            return INCONCLUSIVE, (
                f"only {rounds} round(s), and a {confidence:.0%} interval{split} needs {need}: "
                "measure more rounds"
            )
        return INCONCLUSIVE, (
            f"only {rounds} round(s) in {elapsed:.1f} s, and a {confidence:.0%} interval{split} "
            f"needs {need}: raise max_seconds"
        )
    interval = format_interval(lo, hi, bar)
    if lo > bar:
        return HOLDS, f"interval {interval} lies above {bar:.2f}"
    if hi < bar:
        return DOES_NOT_HOLD, f"interval {interval} lies below {bar:.2f}"
    logs = np.log(ratios)
    noise = math.exp(1.4826 * float(np.median(np.abs(logs - np.median(logs))))) - 1
    return INCONCLUSIVE, f"interval {interval} straddles {bar:.2f}; noise ±{noise:.0%}"
