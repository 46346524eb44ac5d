"""Rules that turn several comparisons into one verdict, and intervals clipped to the possible.

Seconds are made up (seeded noise around fixed ratios): no wall clock is read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from d2lopt.measure import Comparison, summarize
from d2lopt.verdict import (
    DEPENDS,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    SKIPPED,
    Judgement,
    Verdict,
    all_hold,
    at_each,
    claim,
    clip_interval,
    every_part_holds,
    exactly,
    holds_at_each,
    measured,
    no_other_beats,
    plateau,
    sampled,
    show_verdicts,
    skipped,
    some_beats_all,
    up_to_a_plateau,
    verdict_table,
    within_factor,
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


# ------------------------------------------------------------------ claims declared with rules
def made(label: str, speedup: float, lo: float, hi: float, rounds: int = 20) -> Comparison:
    """A comparison with a given interval, judged against 1.05 as compare() judges it."""
    verdict = HOLDS if lo > 1.05 else DOES_NOT_HOLD if hi < 1.05 else INCONCLUSIVE
    reason = "" if verdict != INCONCLUSIVE else f"interval [{lo}, {hi}] straddles 1.05"
    return Comparison(label, speedup, (lo, hi), rounds, verdict, reason, 0.05, 0.95, (), ())


UP, DOWN, UNSURE = (
    made("b vs a", 1.5, 1.4, 1.6),
    made("c vs b", 0.9, 0.8, 0.95),
    made("d vs c", 1.05, 0.95, 1.15),
)


def test_a_claim_row_carries_the_rule_s_verdict_evidence_and_where() -> None:
    row = claim("C3", "workers help", holds_at_each({"w=1": DOWN, "w=2": UP}), condition="2 cores")
    assert isinstance(row, Verdict) and row.verdict == DEPENDS and not row.deterministic
    assert row.condition == "holds at w=2; does not hold at w=1; 2 cores"
    assert row.evidence == "w=1: 0.90x [0.80, 0.95]; w=2: 1.50x [1.40, 1.60] (20 rounds)"
    with pytest.raises(TypeError, match="judgement"):
        claim("C1", "s", HOLDS)


def test_measured_is_one_comparison_and_says_why_when_undecided_or_skipped() -> None:
    assert measured(UP) == Judgement(HOLDS, "1.50x [1.40, 1.60], 20 rounds")
    assert measured(UNSURE).verdict == INCONCLUSIVE and "straddles" in measured(UNSURE).evidence
    off = measured(None, or_skip="TF32 needs an Ampere GPU")
    assert off == Judgement(SKIPPED, "not measured: TF32 needs an Ampere GPU")
    with pytest.raises(ValueError, match="or_skip"):
        measured(None)
    # the same row as Comparison.to_verdict gives
    assert claim("C5", "s", measured(UNSURE)) == UNSURE.to_verdict("C5", "s")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [([UP, UP], HOLDS), ([UP, DOWN], DOES_NOT_HOLD), ([UP, UNSURE], INCONCLUSIVE),
     ([UNSURE, DOWN], DOES_NOT_HOLD)],
)  # fmt: skip
def test_every_part_holds_needs_each_part(parts, expected) -> None:
    assert every_part_holds(parts).verdict == expected
    assert every_part_holds(parts).evidence.startswith(f"{parts[0].label}: {parts[0].speedup:.2f}x")


def test_evidence_names_rounds_once_if_shared_and_flags_missing_intervals() -> None:
    few = made("e vs a", 1.2, math.nan, math.nan, rounds=3)
    text = every_part_holds({"up": UP, "few": few}).evidence
    assert text.startswith("up: 1.50x [1.40, 1.60], 20 rounds; few: 1.20x")
    assert text.endswith("too few rounds for an interval: measure longer")
    assert every_part_holds([few]).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="comparisons"):
        every_part_holds([])


@pytest.mark.parametrize(
    ("steps", "expected"),
    [([UP, DOWN, DOWN], HOLDS), ([UP, UNSURE, DOWN], INCONCLUSIVE), ([DOWN, UP, UP], DOES_NOT_HOLD),
     ([UP, UP, UP], INCONCLUSIVE), ([UNSURE, DOWN, DOWN], INCONCLUSIVE)],
)  # fmt: skip
def test_up_to_a_plateau_follows_the_step_verdicts(steps, expected) -> None:
    judged = up_to_a_plateau([1, 2, 4, 8], steps)
    assert judged.verdict == expected
    assert judged.evidence.endswith(plateau([1, 2, 4, 8], [c.verdict for c in steps])[1])
    with pytest.raises(ValueError, match="verdicts"):
        up_to_a_plateau([1, 2], [UP, UP])


@pytest.mark.parametrize(
    ("others", "expected", "where"),
    [({"w=0": DOWN, "w=4": DOWN}, HOLDS, ""), ({"w=0": DOWN, "w=4": UP}, DOES_NOT_HOLD,
      "beaten by w=4"), ({"w=0": DOWN, "w=4": UNSURE}, INCONCLUSIVE, ""),
     ({"w=0": UNSURE, "w=4": UP}, DOES_NOT_HOLD, "beaten by w=4")],
)  # fmt: skip
def test_no_other_beats_is_refuted_by_one_faster_setting(others, expected, where) -> None:
    assert (no_other_beats(others).verdict, no_other_beats(others).where) == (expected, where)


def test_facts_readings_and_skips() -> None:
    assert exactly("8 vs 0 syncs", True) == Judgement(HOLDS, "8 vs 0 syncs", deterministic=True)
    assert sampled("USS +0.1 MiB", False) == Judgement(DOES_NOT_HOLD, "USS +0.1 MiB")
    with pytest.raises(TypeError, match="holds"):
        exactly("e", 1)
    assert within_factor(7.9, 8.0, evidence="7.9 vs 8", otherwise="moved").verdict == HOLDS
    far = within_factor(30.0, 8.0, evidence="30 vs 8", otherwise="other processes moved it")
    assert far == Judgement(INCONCLUSIVE, "30 vs 8; other processes moved it")
    assert within_factor(1.0, 0.0, evidence="e", otherwise="o").verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="factor"):
        within_factor(1.0, 1.0, evidence="e", otherwise="o", factor=1.0)
    assert skipped("no fork here", where="spawn only") == Judgement(
        SKIPPED, "not measured: no fork here", "spawn only"
    )
    with pytest.raises(ValueError, match="reason"):
        skipped("")


def test_show_verdicts_displays_the_markdown_table(monkeypatch) -> None:
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    rows = [claim("A1", "s", exactly("e", True)), claim("C1", "t", measured(UP))]
    show_verdicts(rows)
    assert [m.data for m in shown] == [verdict_table(rows)]
    assert "exact: e" in shown[0].data and "**holds**" in shown[0].data
