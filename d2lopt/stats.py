"""The statistics of paired rounds: the order of a round, an interval, and a verdict.

Taught in ``01_environment`` (:func:`ratio_interval` on repeated timings) and behind every
timing verdict of the course (:mod:`d2lopt.compare` measures, this module judges). Kept
apart from the measuring loop so that programs that take their own rounds (every rank in
lockstep: ``d2lopt.dist.parallelism``, ``d2lopt.dist.sharding``) use the same statistics.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from .verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

__all__ = ["judge", "min_rounds", "ratio_interval", "round_order"]


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
) -> tuple[str, str]:
    """The verdict on "faster by at least ``min_effect``" and one line saying why.

    *holds* only when the whole interval ``[lo, hi]`` lies above ``1 + min_effect``, *does
    not hold* when it lies below, *inconclusive* otherwise (with the noise of the rounds,
    or the rounds still missing for an interval). ``elapsed`` is NaN for rounds measured
    elsewhere (:func:`d2lopt.compare.summarize`): the advice then names rounds, not time.
    """
    rounds = len(ratios)
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
