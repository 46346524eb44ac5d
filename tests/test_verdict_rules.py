"""Rules that turn several comparisons into one verdict, and intervals clipped to the possible.

Seconds are made up (seeded noise around fixed ratios): no wall clock is read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from d2lopt.measure import summarize
from d2lopt.verdict import (
    DEPENDS,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    all_hold,
    at_each,
    clip_interval,
    some_beats_all,
)


def rounds(times: dict[str, float], n: int = 30, noise: float = 0.01, seed: int = 0) -> dict:
    """Seconds per round around each variant's time, with a shared per-round load factor."""
    rng = np.random.default_rng(seed)
    load = 1 + 0.2 * rng.random(n)  # background load hits every variant of a round alike
    return {k: list(t * load * (1 + noise * rng.standard_normal(n))) for k, t in times.items()}


def test_all_hold_needs_every_part_and_fails_on_one() -> None:
    s = summarize(rounds({"a": 1.0, "b": 0.5, "c": 0.5, "d": 1.3}), reference="a")
    c = s.comparisons
    assert all_hold([c["b"], c["c"]]) == HOLDS
    assert all_hold([c["b"], c["d"]]) == DOES_NOT_HOLD


def test_at_each_says_where_a_claim_holds() -> None:
    # 05's C3: one worker is slower than none, two and four are faster
    s = summarize(rounds({"w=0": 1.0, "w=1": 1.2, "w=2": 0.7, "w=4": 0.75}), reference="w=0")
    verdict, which = at_each({k: s.comparisons[k] for k in ("w=1", "w=2", "w=4")})
    assert verdict == DEPENDS
    assert which == "holds at w=2, w=4; does not hold at w=1"
    assert at_each({k: s.comparisons[k] for k in ("w=2", "w=4")})[0] == HOLDS
    assert at_each({"w=1": s.comparisons["w=1"]}) == (DOES_NOT_HOLD, "does not hold at w=1")
    ratios = [0.9, 1.2] * 5  # straddles 1.05 whichever way the rounds fall
    noisy = summarize({"w=0": [1.0] * 10, "w=2": [1 / r for r in ratios]}, reference="w=0")
    assert at_each({"w=2": noisy.comparisons["w=2"]})[0] == INCONCLUSIVE
    with pytest.raises(ValueError, match="comparisons"):
        at_each({})


def test_a_grid_verdict_follows_the_whole_grid_not_one_declared_pair() -> None:
    # 06's threads grid as committed: the declared pair says "fits beats oversubscribed"
    # (1 thread + 1 worker against 2 threads + 1 worker), but the most oversubscribed cell
    # (2 threads + 2 workers) is the fastest of all
    times = {"t2w0": 100.0, "t1w0": 120.0, "t1w1": 81.4, "t2w1": 109.0, "t1w2": 85.0,
             "t2w2": 78.3}  # fmt: skip
    grid = summarize(rounds(times), reference="t2w0")
    fits, over = ["t1w0", "t1w1", "t2w0"], ["t2w1", "t1w2", "t2w2"]
    assert grid.between("t1w1", "t2w1").verdict == HOLDS  # the declared pair alone
    verdict, evidence = some_beats_all(grid.between, fits, over)
    assert verdict == DOES_NOT_HOLD
    assert len(evidence) == len(fits) and all(c.label.endswith("t2w2") for c in evidence)
    # the same rule says holds when one fitting cell beats every oversubscribed one
    times["t1w1"] = 60.0
    grid = summarize(rounds(times), reference="t2w0")
    verdict, evidence = some_beats_all(grid.between, fits, over)
    assert verdict == HOLDS and [c.label for c in evidence] == ["t1w1 vs t2w2"]
    with pytest.raises(ValueError, match="better, worse"):
        some_beats_all(grid.between, [], over)


def test_clip_interval_keeps_what_is_possible_and_says_so() -> None:
    # 13's idle share "10% [-8%, 26%]": a share of time cannot be negative
    assert clip_interval(0.10, -0.08, 0.26, lowest=0.0, highest=1.0) == (0.10, 0.0, 0.26, True)
    # 12's "0.86 [0.80, 1.03] of the ceiling": no pipeline beats its ceiling
    assert clip_interval(0.86, 0.80, 1.03, lowest=0.0, highest=1.0) == (0.86, 0.80, 1.0, True)
    assert clip_interval(0.5, 0.4, 0.6, lowest=0.0, highest=1.0) == (0.5, 0.4, 0.6, False)
    est, lo, hi, moved = clip_interval(0.5, math.nan, math.nan, lowest=0.0, highest=1.0)
    assert est == 0.5 and math.isnan(lo) and math.isnan(hi) and not moved
    with pytest.raises(ValueError, match="lowest, highest"):
        clip_interval(0.5, 0.4, 0.6, lowest=1.0, highest=0.0)


def test_an_observed_reading_is_judged_but_not_called_exact():
    from d2lopt.verdict import DOES_NOT_HOLD, HOLDS, observed, verdict_table

    grows = observed("A2", "a worker grows", "USS +33.9 MiB", True, condition="fork")
    flat = observed("A2", "a worker grows", "USS +0.1 MiB", False)
    assert (grows.verdict, flat.verdict) == (HOLDS, DOES_NOT_HOLD)
    assert not grows.deterministic and "exact" not in verdict_table([grows, flat])
    with pytest.raises(TypeError, match="holds"):
        observed("A2", "s", "e", 1)
