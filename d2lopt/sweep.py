"""The results of paired rounds: a :class:`Comparison` of two variants, a :class:`Sweep` of N.

Taught in ``05_disk_to_memory``; :func:`d2lopt.compare.compare` and
:func:`~d2lopt.compare.compare_many` return them, and :func:`summarize` builds them from
timings a program took itself (every rank in lockstep), so a verdict reads the same
whichever way its rounds were measured. The statistics live in :mod:`d2lopt.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .stats import format_interval, judge, look_confidence, ratio_interval
from .verdict import HOLDS, INCONCLUSIVE, Verdict

__all__ = ["Comparison", "Sweep", "check_judging", "setting_label", "summarize"]


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

    For measurements :func:`d2lopt.compare.compare_many` cannot run itself, e.g. inside a
    distributed program where every rank must execute the same rounds (``d2lopt.dist.sharding``,
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
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise ValueError(f"looks: must be an int >= 1 (1: judged once), got {looks!r}")
    if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= looks:
        raise ValueError(f"share: must be an int from 1 to looks ({looks}), got {share!r}")
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
