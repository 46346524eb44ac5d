"""The stopping rule of d2lopt.compare_many: its error rate holds at whichever look it stops.

Simulated clock, seeded (d2lopt.lab.stopping): no wall time, so the rates are the same on
every machine and every run. Each rate comes from compare_many itself on 1,000 comparisons
whose true speedup is known; the bounds are the issue's: on the line (a true 1.05, where
either decisive verdict is wrong) at most 6 % decisive, at a true 1.5x at least 99 % holds,
at a true 1.0 at most 2.5 % holds.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest

from d2lopt.lab.stopping import error_table, peeking, simulate
from d2lopt.measure import compare, summarize
from d2lopt.stats import format_interval, look_confidence, min_rounds, planned_looks
from d2lopt.verdict import INCONCLUSIVE

N = 1000
SCRIPT = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "benchmarks" / "stopping_rule.py")
)


@pytest.mark.parametrize("noise", [0.03, 0.10, 0.20])
def test_on_the_line_at_most_six_percent_are_decisive(noise):
    rates = simulate(1.05, noise, N, seed=11)
    assert rates.n == N
    assert rates.decisive <= 0.06, rates


def test_on_the_line_with_four_variants_at_most_six_percent_are_decisive():
    rates = simulate(1.05, 0.10, N // 4, seed=12, variants=4)
    assert rates.n == N  # 250 sweeps of 4 candidates: 1,000 comparisons
    assert rates.decisive <= 0.06, rates


def test_a_true_one_and_a_half_holds_at_least_99_percent():
    assert simulate(1.5, 0.10, N, seed=13).holds >= 0.99


def test_no_change_holds_at_most_two_and_a_half_percent():
    assert simulate(1.0, 0.10, N, seed=14).holds <= 0.025


def test_the_former_peeking_rule_is_measurably_worse():
    # the mechanism the planned looks remove: same noise, a look after every round
    assert peeking(1.05, 0.10, 300, seed=15).decisive > 0.15


def test_looks_are_planned_before_the_first_round_and_end_at_max_rounds():
    looks = planned_looks(200, 0.95)
    assert looks == (9, 14, 21, 32, 48, 72, 108, 200)
    each = look_confidence(0.95, len(looks))
    assert looks[0] == min_rounds(each)  # the first look is the first with an interval
    assert all(b / a <= 1.5 + 1 / a for a, b in zip(looks, looks[1:-1], strict=False))
    for max_rounds in range(2, 120):
        looks = planned_looks(max_rounds, 0.95)
        assert looks[-1] == max_rounds and list(looks) == sorted(set(looks))
        if max_rounds >= min_rounds(0.95):
            assert looks[0] >= min_rounds(look_confidence(0.95, len(looks)))


class SimulatedClock:
    """A clock that moves only when a simulated function "runs": ``work(s)`` takes ``s``."""

    def __init__(self, jitter: bool = False) -> None:
        self.now, self.calls, self.jitter = 0.0, 0, jitter

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def call() -> None:
            self.calls += 1
            # with jitter, never exactly equal rounds (a zero-width interval is always narrow)
            self.now += seconds * (1 + 0.01 * (self.calls % 3) * self.jitter)

        return call


def test_a_budget_stop_between_looks_spends_the_error_of_the_looks_it_cut_off():
    clock = SimulatedClock(jitter=True)
    # about 1.5 s per round: the budget ends the sweep after 11 rounds, between looks 9 and 14
    r = compare(clock.work(1.0), clock.work(0.5), max_seconds=17.0, warmup=0, number=1,
                target_width=1e-9, timer=clock)  # fmt: skip
    looks = planned_looks(200, 0.95)
    assert r.rounds == 11 and r.looks == len(looks) == 8
    assert r.share == 7  # the look at 9 was taken; the 7 after it were cut off
    assert r.verdict == "holds" and "raise max_seconds" not in r.reason


def test_a_small_budget_gets_a_whole_95_percent_interval():
    clock = SimulatedClock()
    # 1.5 s a round: the budget ends the sweep after 6 rounds, before the first planned look
    # (9): no look was taken, so this one spends the whole 5 %
    r = compare(clock.work(1.0), clock.work(0.5), max_seconds=11.0, warmup=1, number=1, timer=clock)
    assert (r.rounds, r.share, r.looks) == (6, 8, 8) and r.verdict == "holds", r.reason


def test_too_few_rounds_names_the_rounds_needed():
    clock = SimulatedClock()
    r = compare(clock.work(1.0), clock.work(1.0), max_seconds=4.5, warmup=0, number=1,
                timer=clock)  # fmt: skip
    assert r.verdict == INCONCLUSIVE and math.isnan(r.ci[0]) and r.rounds == 2
    assert "and a 95% interval needs 6: raise max_seconds" in r.reason, r.reason


def test_a_settled_look_keeps_its_own_share():
    clock = SimulatedClock()
    r = compare(clock.work(1.0), clock.work(0.5), max_seconds=1e9, warmup=0, number=1, timer=clock)
    assert (r.rounds, r.share) == (9, 1)  # stopped at the first planned look, settled
    with pytest.raises(ValueError, match="share"):
        summarize({"a": [1.0] * 6, "b": [1.0] * 6}, reference="a", looks=2, share=3)


def test_an_end_near_the_line_gets_a_third_decimal():
    assert format_interval(1.0492, 1.0901, 1.05) == "[1.049, 1.09]"
    assert format_interval(1.0512, 1.2, 1.05) == "[1.051, 1.20]"
    assert format_interval(0.93, 1.21, 1.05) == "[0.93, 1.21]"
    assert format_interval(math.nan, math.nan, 1.05) == "[no interval]"


def test_the_readme_quotes_the_measured_table():
    blocks = SCRIPT["readme_blocks"]
    text = blocks.README.read_text(encoding="utf-8")
    assert SCRIPT["START"] in text and SCRIPT["END"] in text
    assert blocks.replaced(text, SCRIPT["START"], SCRIPT["END"], error_table()) == text, (
        "README.md's stopping-rule table is stale: python benchmarks/stopping_rule.py --write"
    )
