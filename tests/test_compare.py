"""d2lopt.measure.compare: known-truth pairs under bursty background load the test starts itself.

No wall-clock thresholds: the assertions are about verdicts and ratios, which the paired,
interleaved rounds must get right however loaded the machine is.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from d2lopt.measure import Comparison, compare, compare_many
from d2lopt.stats import min_rounds, ratio_interval
from d2lopt.verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, fact, verdict_table

# Each process alternates busy and idle with its own period, so the load on the 2 cores
# comes and goes in bursts that no round can predict.
_BURSTY = """
import sys, time
busy, idle = float(sys.argv[1]), float(sys.argv[2])
end = time.monotonic() + 120  # stops by itself even if the test dies
while time.monotonic() < end:
    t = time.monotonic() + busy
    while time.monotonic() < t:
        pass
    time.sleep(idle)
"""


@pytest.fixture(scope="module")
def bursty_load():
    procs = [
        subprocess.Popen([sys.executable, "-c", _BURSTY, busy, idle])
        for busy, idle in (("0.05", "0.07"), ("0.13", "0.11"), ("0.3", "0.4"))
    ]
    time.sleep(0.2)
    yield [p.pid for p in procs]
    for p in procs:  # stopped by PID, and reaped
        p.kill()
        p.wait(timeout=10)


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


N = 20_000  # a few milliseconds of pure-Python work


def test_identical_functions_never_hold(bursty_load):
    for _ in range(3):  # a shorter budget only widens the interval: it cannot make this hold
        r = compare(lambda: _work(N), lambda: _work(N), max_seconds=1.5)
        assert r.verdict != HOLDS, str(r)


def test_half_the_work_holds_with_a_speedup_near_two(bursty_load):
    r = compare(lambda: _work(N), lambda: _work(N // 2), max_seconds=6)
    assert r.verdict == HOLDS, f"{r}: {r.reason}"
    assert abs(r.speedup - 2.0) <= 0.3 * 2.0, str(r)
    assert r.ci[0] <= r.speedup <= r.ci[1]


def test_twice_the_work_does_not_hold(bursty_load):
    r = compare(lambda: _work(N), lambda: _work(2 * N), max_seconds=6)
    assert r.verdict == DOES_NOT_HOLD, f"{r}: {r.reason}"
    assert r.speedup < 1 and r.ci[1] < 1.05


def test_max_seconds_is_respected(bursty_load):
    budget = 1.5
    start = time.perf_counter()
    r = compare(lambda: time.sleep(0.02), lambda: time.sleep(0.021), max_seconds=budget,
                target_width=1e-6)  # fmt: skip  # never "narrow enough": only the budget stops it
    elapsed = time.perf_counter() - start
    assert elapsed <= budget + 0.2, elapsed  # at most the tail of one block past the budget
    assert r.rounds >= min_rounds(0.95)


def test_a_function_slower_than_the_budget_is_inconclusive_and_says_why():
    r = compare(lambda: time.sleep(0.05), lambda: time.sleep(0.05), max_seconds=0.2)
    assert r.verdict == INCONCLUSIVE and math.isnan(r.ci[0])
    assert "raise max_seconds" in r.reason and "[no interval]" in str(r)


def test_str_and_verdict_rows_always_show_interval_and_rounds():
    r = compare(lambda: _work(2_000), lambda: _work(1_000), max_seconds=2)
    text = str(r)
    assert text.startswith(f"{r.speedup:.2f}x [") and text.endswith(f"], {r.rounds} rounds")
    row = r.to_verdict("C0", "halving the work is faster")
    assert row.verdict == r.verdict and str(r) in row.evidence
    table = verdict_table([row, fact("C1", "one sync per call", "1 vs 24", True)])
    assert "| C0 | halving the work is faster |" in table
    assert "exact: 1 vs 24" in table and "**holds**" in table


def test_inconclusive_rows_carry_their_reason():
    c = Comparison("x", 1.02, (0.93, 1.21), 12, INCONCLUSIVE, "interval 0.93-1.21 straddles 1.05",
                   0.05, 0.95, (1.0,), (1.0,))  # fmt: skip
    assert c.to_verdict("C", "s").evidence == "1.02x [0.93, 1.21], 12 rounds; " + c.reason


def test_sweep_compares_every_variant_with_the_reference_in_the_same_rounds():
    s = compare_many(
        {"full": lambda: _work(N), "half": lambda: _work(N // 2), "same": lambda: _work(N)},
        reference="full",
        max_seconds=4,
    )
    assert set(s.comparisons) == {"half", "same"}
    assert all(len(t) == s.rounds for t in s.seconds.values())
    assert s.comparisons["half"].verdict == HOLDS and s.best() == "half"
    assert s.comparisons["same"].verdict != HOLDS
    assert "| full |" in s.table() and "reference" in s.table()


def test_best_keeps_the_reference_when_no_variant_holds():
    s = compare_many({"a": lambda: _work(N), "b": lambda: _work(2 * N)}, reference="a",
                     max_seconds=2)  # fmt: skip
    assert s.best() == "a"


# ----------------------------------------------------------------------------- the interval
def test_interval_with_six_rounds_spans_the_extremes():
    ratios = [1.1, 1.3, 0.9, 1.2, 1.0, 1.4]
    est, lo, hi = ratio_interval(ratios)
    assert lo == pytest.approx(min(ratios)) and hi == pytest.approx(max(ratios))
    assert lo <= est <= hi
    assert min_rounds(0.95) == 6
    assert math.isnan(ratio_interval(ratios[:5])[1])


def test_interval_covers_the_true_ratio_about_as_often_as_promised():
    rng = np.random.default_rng(0)
    true = 1.5
    hits = 0
    trials = 400
    for _ in range(trials):
        ratios = true * np.exp(rng.normal(0, 0.1, 12) + rng.laplace(0, 0.05, 12))
        _, lo, hi = ratio_interval(ratios, 0.95)
        hits += lo <= true <= hi
    assert 0.92 <= hits / trials <= 0.99  # exact, conservative: the signed-rank interval


def test_one_wild_round_does_not_move_the_estimate():
    calm = [2.0, 2.02, 1.98, 2.01, 1.99, 2.0, 2.03, 1.97]
    est, _, _ = ratio_interval(calm + [40.0])
    assert est == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_effect": -0.1}, "min_effect"),
        ({"confidence": 1.0}, "confidence"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"warmup": -1}, "warmup"),
        ({"target_width": 0}, "target_width"),
        ({"max_rounds": 1}, "max_rounds"),
        ({"number": 0}, "number"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare(lambda: None, lambda: None, **kwargs)


def test_non_callables_and_bad_references_are_refused():
    with pytest.raises(TypeError, match="candidate: must be callable"):
        compare(lambda: None, 3)
    with pytest.raises(ValueError, match="reference: 'c' is not one of"):
        compare_many({"a": lambda: None, "b": lambda: None}, reference="c")
    with pytest.raises(ValueError, match="fns: need a mapping of at least two"):
        compare_many({"a": lambda: None}, reference="a")
    with pytest.raises(ValueError, match="ratios: every ratio must be a positive"):
        ratio_interval([1.0, 0.0])
