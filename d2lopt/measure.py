"""Is the candidate faster? Paired, interleaved rounds, an interval, and an honest verdict.

Taught in ``05_disk_to_memory`` and used by every timing verdict of the course, the ladder
and ``d2lopt tune-loader``: the course's one engine for timing blocks of code. A single
ratio of two timings is decided by noise as often as by the change being measured: a burst
of background load during one of the two runs is enough. :func:`compare` therefore

1. runs baseline and candidate **back to back in every round**, alternating their order
   (AB, BA, BA, AB, ...), with the device synchronized around each timed block, so a slow
   drift of the machine's load hits both alike and cancels in the per-round ratio;
2. summarizes the per-round ratios with the **Hodges-Lehmann estimate** and its
   **Wilcoxon signed-rank confidence interval** (on log ratios, see
   :func:`d2lopt.stats.ratio_interval`);
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
ladder rungs): every round runs all variants in a rotating order, and returns a
:class:`Sweep` of :class:`Comparison` results. :func:`summarize` builds the same results from
rounds a program timed itself (every rank in lockstep), so a verdict reads the same
whichever way its rounds were measured; :func:`time_repeats` times one function alone, for a
number to report rather than a comparison. The statistics are in :mod:`d2lopt.stats`.

``torch.utils.benchmark`` times one statement at a time, so it cannot interleave two; its
building blocks (a synchronized block of ``number`` calls, medians) are reproduced here with
the pairing added.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from . import verdict as verdict_rules
from .devices import as_device, synchronize
from .errors import check_int
from .stats import (
    format_interval,
    judge,
    look_confidence,
    planned_looks,
    ratio_interval,
    round_order,
)
from .verdict import HOLDS, INCONCLUSIVE, Verdict

__all__ = [
    "Comparison",
    "Sweep",
    "compare",
    "compare_many",
    "Sizing",
    "size_rounds",
    "setting_label",
    "summarize",
    "time_repeats",
]


@dataclass(frozen=True)
class Comparison:
    """The result of one paired comparison; ``str(r)`` is ``1.42x [1.31, 1.55], 24 rounds``.

    Attributes:
        speedup: baseline time / candidate time, the Hodges-Lehmann estimate over rounds
            (> 1: the candidate is faster).
        ci: the confidence interval of ``speedup``; ``(nan, nan)`` with too few rounds.
            It holds at ``confidence`` whichever of the ``looks`` the measurement stopped
            at: its interval is computed at ``look_confidence(confidence, looks, share)``.
        rounds: paired rounds measured.
        verdict: ``"holds"``, ``"does not hold"`` or ``"inconclusive"`` for the claim
            "the candidate is faster by at least ``min_effect``".
        reason: one line: why this verdict follows from the interval.
        baseline_seconds, candidate_seconds: seconds per call in each round.
        looks: the planned looks the error was split over (1: the rounds were judged once).
        share: how many planned looks' shares of the error this interval spends (1 at a
            planned look; more where the time budget ended the rounds before those looks).
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
    looks: int = 1
    share: int = 1

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
        interval = format_interval(*self.ci, 1 + self.min_effect)
        return f"{self.speedup:.2f}x {interval}, {self.rounds} rounds"

    def to_verdict(self, claim: str, statement: str, *, condition: str = "") -> Verdict:
        """A verdict-table row: the evidence always shows the interval and the rounds.

        The same row as ``verdict.claim(claim, statement, verdict.measured(self))``.
        """
        return verdict_rules.claim(
            claim, statement, verdict_rules.measured(self), condition=condition
        )

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
            "looks": self.looks,
            "share": self.share,
        }


@dataclass(frozen=True)
class Sweep:
    """N variants measured in the same rounds, each compared with ``reference``.

    ``seconds[name]`` holds seconds per call in each round; ``comparisons[name]`` the
    :class:`Comparison` of ``name`` against the reference (absent for the reference);
    ``looks`` and ``share`` as in :class:`Comparison`.
    """

    reference: str
    seconds: dict[str, list[float]]
    comparisons: dict[str, Comparison]
    elapsed: float
    looks: int = 1
    share: int = 1

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
        return comparison(
            candidate, baseline, self.seconds, any_c.min_effect, any_c.confidence, self.elapsed,
            self.looks, self.share,
        )  # fmt: skip

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


def comparison(
    name, reference, seconds, min_effect, confidence, elapsed, looks=1, share=1
) -> Comparison:
    """``name`` against ``reference`` from the per-round ``seconds`` of both."""
    ratios = np.asarray(seconds[reference]) / np.asarray(seconds[name])
    est, lo, hi = ratio_interval(ratios, look_confidence(confidence, looks, share))
    verdict, reason = judge(
        lo, hi, ratios, min_effect=min_effect, confidence=confidence, elapsed=elapsed,
        looks=looks, share=share,
    )  # fmt: skip
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
        looks=looks,
        share=share,
    )


def is_number(x: Any) -> bool:
    """A finite int or float, and not a bool (``True`` is an int to Python, not to a user)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_judging(min_effect: Any, confidence: Any) -> None:
    """The settings of a verdict, checked before any round is measured or judged."""
    if not is_number(min_effect) or min_effect < 0:
        raise ValueError(f"min_effect: must be a fraction >= 0 (0.05 = 5 %), got {min_effect!r}")
    if not is_number(confidence) or not 0.5 <= confidence < 1:
        raise ValueError(f"confidence: must be in [0.5, 1), e.g. 0.95, got {confidence!r}")


def summarize(
    seconds: Mapping[str, list[float]],
    *,
    reference: str,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    elapsed: float = math.nan,
    looks: int = 1,
    share: int = 1,
) -> Sweep:
    """Intervals and verdicts for timings already taken in paired rounds.

    For measurements :func:`compare_many` cannot run itself, e.g. inside a
    distributed program where every rank must execute the same rounds (``d2lopt.sharding``,
    ``d2lopt.dist.pipeline``): ``seconds[name][i]`` must come from round ``i`` for every name,
    with the order alternated between rounds. ``looks``: how many times the caller looked at
    the intervals to decide whether to stop (see :func:`d2lopt.stats.planned_looks`); a fixed
    number of rounds, judged once at the end, is one look. ``share``: how many of those
    looks' shares of the error this judgement spends (see :func:`d2lopt.stats.look_confidence`).
    """
    if reference not in seconds:
        raise ValueError(f"reference: {reference!r} is not one of {sorted(seconds)}")
    lengths = {len(v) for v in seconds.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError("seconds: every variant needs one time per round, and at least one round")
    check_judging(min_effect, confidence)
    check_int("looks", looks, 1)  # 1: judged once
    check_int("share", share, 1, looks)
    seconds = {name: list(times) for name, times in seconds.items()}
    comparisons = {
        name: comparison(name, reference, seconds, min_effect, confidence, elapsed, looks, share)
        for name in seconds
        if name != reference
    }
    return Sweep(reference, seconds, comparisons, elapsed, looks, share)


def setting_label(setting: Mapping[str, Any]) -> str:
    """``{"num_workers": 2, "prefetch_factor": 4}`` -> ``"num_workers=2, prefetch_factor=4"``."""
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"


# A timed block lasts at least this long, so a microsecond-scale function is not measured
# at the resolution of the clock (torch.utils.benchmark's blocked_autorange does the same).
MIN_BLOCK_SECONDS = 0.01


def _check_args(min_effect, confidence, max_seconds, warmup, target_width, max_rounds) -> None:
    check_judging(min_effect, confidence)
    if not is_number(max_seconds) or max_seconds <= 0:
        raise ValueError(f"max_seconds: must be a time budget > 0 in seconds, got {max_seconds!r}")
    check_int("warmup", warmup, 0)
    if not is_number(target_width) or target_width <= 0:
        raise ValueError(
            f"target_width: must be a fraction > 0 (0.10 = ±10 %), got {target_width!r}"
        )
    check_int("max_rounds", max_rounds, 2)


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
    if number is not None:  # None: automatic
        check_int("number", number, 1)


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


def time_repeats(
    fn: Callable[[], Any],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> list[float]:
    """Seconds of ``fn()`` for each of ``repeats`` calls after ``warmup`` untimed ones.

    The same synchronized block :func:`compare` times, one call at a time: ``device`` is
    synchronized before and after each call, so queued GPU work is counted. A number to
    report (``07_cpu_to_gpu``'s copy bandwidths); a comparison of two such numbers goes
    through :func:`compare`.
    """
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    dev = as_device(device) if device is not None else None
    for _ in range(warmup):
        fn()
    return [_timed_block(fn, 1, dev, time.perf_counter) for _ in range(repeats)]


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


@dataclass(frozen=True)
class Sizing:
    """How much work each call of a comparison does, chosen from measured rounds.

    Attributes:
        size: the work per call picked (batches an epoch, for the ladder).
        round_seconds: what one round (every variant once) costs at ``size``: measured,
            or scaled up in proportion from the largest measured size (an upper bound,
            since fixed costs do not grow with the size).
        rounds: the rounds that fit what is left of the budget at that cost.
        wanted: the rounds the comparison was sized for.
        probes: ``(size, seconds of a round)`` for every untimed round run to size it;
            they also warmed every variant up.
        spent: seconds the probes took, out of the budget.
        note: one line: what was sized, or why ``wanted`` rounds do not fit.
    """

    size: int
    round_seconds: float
    rounds: int
    wanted: int
    probes: tuple[tuple[int, float], ...]
    spent: float
    note: str

    @property
    def fits(self) -> bool:
        """The rounds wanted fit the budget; when not, even the smallest size costs too much.

        A size above the smallest was only chosen because its rounds were predicted to fit.
        """
        return self.rounds >= self.wanted or self.size > self.probes[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "round_seconds": self.round_seconds, "rounds": self.rounds,
                "wanted": self.wanted, "probes": [list(p) for p in self.probes],
                "spent": self.spent, "fits": self.fits, "note": self.note}  # fmt: skip


def size_rounds(
    run_round: Callable[[int], Any],
    *,
    budget: float,
    rounds: int,
    largest: int,
    smallest: int = 1,
    margin: float = 1.3,
    unit: str = "batches an epoch",
    timer: Callable[[], float] = time.perf_counter,
) -> Sizing:
    """Choose the work per call so that ``rounds`` paired rounds fit ``budget``, by measuring.

    A comparison's budget is seconds, but what a round costs depends on the machine: the
    ladder's presets sized for one machine gave a 2-core AVX2 laptop one round per decision
    (issue 21). So the cost is measured here, not assumed: ``run_round(size)`` runs every
    variant once at ``size`` (untimed: it doubles as their warm-up), starting at
    ``smallest`` and doubling while the predicted cost of twice the size still fits the share
    of one round; the size is then raised once more by prediction, never past twice the last
    measured size. A prediction is a straight line through the last two probes (a fixed
    part, worker start-up or a Trainer's set-up, and a part per unit of work), its slope
    never under a tenth of the last probe's cost per unit; so a round costs more than
    predicted only by noise, and the ``rounds`` wanted leave room for it (an interval needs
    6 of the 12 the ladder asks for). A round is planned ``margin`` times dearer than its
    prediction: a timed round cost up to a third more than its probe in the ladder's runs
    (the probes run first, in another order, without the measurement's own bookkeeping).

    When even ``smallest`` costs more than the budget allows for ``rounds`` rounds, it is
    measured once more (the first call of anything pays one-off costs: imports, a library's
    first set-up), and if it still does, the size stays ``smallest`` and ``note`` says how
    many rounds fit: the comparison then measures what it can and stays *inconclusive*
    where that is too few, never rejected for lack of rounds. Taught in
    ``12_putting_it_together``; tested on a simulated clock.

    Example:
        >>> clock = [0.0]
        >>> def one_round(size):  # a simulated machine: 0.5 s a round + 0.1 s a batch
        ...     clock[0] += 0.5 + 0.1 * size
        >>> s = size_rounds(one_round, budget=30, rounds=10, largest=100, timer=lambda: clock[0])
        >>> s.size, s.rounds, s.fits
        (15, 13, True)
    """
    check_int("rounds", rounds, 1)
    check_int("smallest", smallest, 1)
    check_int("largest", largest, smallest)
    if not is_number(margin) or margin < 1:
        raise ValueError(f"margin: must be a factor >= 1, got {margin!r}")
    if not is_number(budget) or budget <= 0:
        raise ValueError(f"budget: must be seconds > 0, got {budget!r}")
    start = timer()

    def measure(size: int) -> float:
        t0 = timer()
        run_round(size)
        return max(timer() - t0, 1e-9)

    def predict(size: int) -> float:
        """A round's cost at ``size`` from the last two probes: a fixed part and a part per
        unit, the latter at least a tenth of the last probe's cost per unit (noise must not
        make a bigger size look free)."""
        (k0, c0), (k1, c1) = probes[-2:] if len(probes) > 1 else ((0, 0.0), probes[-1])
        per_unit = max((c1 - c0) / (k1 - k0), 0.1 * c1 / k1)
        return max(c1 + per_unit * (size - k1), 1e-9)

    size = smallest
    probes = [(size, measure(size))]
    left = budget - (timer() - start)
    if probes[0][1] > left / (rounds * margin) and 3 * probes[0][1] < left:
        # too dear for a round, but the first call of anything pays one-off costs (imports,
        # lazy initialisation, a library's first set-up): measured once more, it decides
        probes = [(size, measure(size))]
    while size < largest:
        per_round = (budget - (timer() - start)) / (rounds * margin)
        bigger = min(largest, 2 * size)
        # one probe cannot tell a fixed part from work: a second is taken whenever the
        # first fits a round (it costs at most two rounds' share)
        if predict(bigger) > per_round and (len(probes) > 1 or probes[0][1] > per_round):
            break
        size = bigger
        probes.append((size, measure(size)))
    cost = probes[-1][1]
    spent = timer() - start
    per_round = (budget - spent) / (rounds * margin)
    if size < largest and cost < per_round:  # one predicted step, at most doubling
        scaled = size
        while scaled < min(largest, 2 * size) and predict(scaled + 1) <= per_round:
            scaled += 1
        if scaled > size:
            size, cost = scaled, predict(scaled)
    fit = max(0, int((budget - spent) // cost))
    if size == 1 and unit.startswith("batches"):
        unit = "batch" + unit[len("batches") :]
    if fit >= rounds or size > smallest:
        note = (f"{size} {unit}: a round costs about {cost:.2f} s, so {fit} rounds fit "
                f"{budget - spent:.0f} s")  # fmt: skip
    else:
        note = (f"a round costs {cost:.2f} s even at {size} {unit}: {rounds} rounds need "
                f"{rounds * cost:.0f} s, but {max(0.0, budget - spent):.0f} s are left, so "
                f"about {fit} fit")  # fmt: skip
    return Sizing(size, cost, fit, rounds, tuple(probes), spent, note)


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
