"""The error rate of a stopping rule, measured on a simulated clock (README "How we measure").

:func:`d2lopt.measure.compare_many` may stop only at looks planned before the first round,
with the error split over them (:func:`d2lopt.stats.planned_looks`). This module measures
what that buys, the way the README reports it: thousands of comparisons whose true speedup
is known, timed on a simulated clock (no wall time, seeded), judged by ``compare_many``
itself. :func:`peeking` replays the rule the course used before, an ordinary interval
checked after every round from the sixth on, on the same simulated rounds.

Noise model: each timed block takes ``t * exp(e)``, ``e`` normal with standard deviation
``noise / sqrt(2)``, so the log of a round's ratio has standard deviation ``noise`` ("10 %
noise per round"). ``benchmarks/stopping_rule.py`` writes the README's table from
:func:`error_table`; ``tests/test_stopping_rule.py`` checks the rates against their bounds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..measure import compare_many
from ..stats import look_confidence, min_rounds, planned_looks, ratio_interval
from ..verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

__all__ = ["Rates", "error_table", "peeking", "simulate"]


@dataclass(frozen=True)
class Rates:
    """How often each verdict came out of ``n`` comparisons, and the median rounds taken."""

    n: int
    holds: float
    does_not_hold: float
    median_rounds: float

    @property
    def decisive(self) -> float:
        """The share of comparisons that ended *holds* or *does not hold*."""
        return self.holds + self.does_not_hold


def _rates(outcomes: list[tuple[str, int]]) -> Rates:
    counts = Counter(v for v, _ in outcomes)
    n = len(outcomes)
    return Rates(
        n,
        counts[HOLDS] / n,
        counts[DOES_NOT_HOLD] / n,
        float(np.median([r for _, r in outcomes])),
    )


def simulate(
    speedup: float,
    noise: float,
    comparisons: int,
    *,
    seed: int = 0,
    variants: int = 1,
    max_rounds: int = 75,
    min_effect: float = 0.05,
) -> Rates:
    """``compare_many`` on ``comparisons`` simulated sweeps whose true speedup is known.

    Every sweep has a reference and ``variants`` candidates that are truly ``speedup``
    times faster; every candidate's verdict counts. The clock only moves when a simulated
    function "runs", so the budget never ends a sweep: the rule alone does.
    """
    rng = np.random.default_rng(seed)
    clock = [0.0]
    sd = noise / math.sqrt(2)

    def timed(seconds: float):
        def call() -> None:
            clock[0] += seconds * math.exp(rng.normal(0.0, sd))

        return call

    outcomes = []
    for _ in range(comparisons):
        fns = {"reference": timed(1.0)} | {f"v{i}": timed(1.0 / speedup) for i in range(variants)}
        sweep = compare_many(
            fns, reference="reference", min_effect=min_effect, max_seconds=1e12,
            warmup=0, number=1, max_rounds=max_rounds, timer=lambda: clock[0],
        )  # fmt: skip
        outcomes += [(c.verdict, c.rounds) for c in sweep.comparisons.values()]
    return _rates(outcomes)


def peeking(
    speedup: float,
    noise: float,
    comparisons: int,
    *,
    seed: int = 0,
    max_rounds: int = 75,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    target_width: float = 0.10,
) -> Rates:
    """The former rule on the same noise: a 95 % interval after every round from the 6th.

    It stopped as soon as the interval was narrow and no longer straddled the line, which
    gives noise a new chance to push it over the line at every round.
    """
    rng = np.random.default_rng(seed)
    bar, limit = 1 + min_effect, math.log1p(target_width)
    outcomes = []
    for _ in range(comparisons):
        logs = math.log(speedup) + rng.normal(0.0, noise, max_rounds)
        for n in range(min_rounds(confidence), max_rounds + 1):
            est, lo, hi = ratio_interval(np.exp(logs[:n]), confidence)
            decided = lo > bar or hi < bar
            if (decided and max(math.log(hi / est), math.log(est / lo)) <= limit) or (
                n == max_rounds
            ):
                break
        verdict = HOLDS if lo > bar else DOES_NOT_HOLD if hi < bar else INCONCLUSIVE
        outcomes.append((verdict, n))
    return _rates(outcomes)


# (true speedup, noise per round): on the line (either verdict is wrong), well above it,
# no change at all, and the 1.2x the README quotes for what the rule costs in rounds
SCENARIOS = [(1.05, 0.03), (1.05, 0.10), (1.05, 0.20), (1.5, 0.10), (1.0, 0.10), (1.2, 0.10)]


def error_table(comparisons: int = 1000, seed: int = 0) -> str:
    """The README's Markdown table: the former rule against planned looks, same scenarios."""
    looks = planned_looks(200, 0.95)
    each = look_confidence(0.95, len(looks))
    rows = [
        f"Planned looks for the default `max_rounds=200`: {', '.join(map(str, looks))} rounds "
        f"({len(looks)} looks, each a {each:.2%} interval).",
        "",
        "| true speedup | noise per round | verdicts | peeking every round (before) "
        "| planned looks (now) |",
        "|---|---|---|---|---|",
    ]
    for speedup, noise in SCENARIOS:
        before = peeking(speedup, noise, comparisons, seed=seed)
        now = simulate(speedup, noise, comparisons, seed=seed)
        if speedup == 1.05:
            what, b, a = "decisive (either is wrong)", before.decisive, now.decisive
        elif speedup > 1.05:
            what, b, a = "*holds*", before.holds, now.holds
        else:
            what, b, a = "*holds* (wrong)", before.holds, now.holds
        rows.append(
            f"| {speedup:.2f}x | {noise:.0%} | {what} | {b:.1%}, median "
            f"{before.median_rounds:.0f} rounds | {a:.1%}, median {now.median_rounds:.0f} rounds |"
        )
    many = simulate(1.05, 0.10, comparisons // 4, seed=seed, variants=4)
    rows.append(
        f"| 1.05x, 4 variants | 10% | decisive (either is wrong) | | {many.decisive:.1%}, "
        f"median {many.median_rounds:.0f} rounds |"
    )
    return "\n".join(rows)
