"""Verdicts computed from measurements, never typed by hand (every optimization notebook).

The course restates each of the articles' claims (C1-C14 in the course brief) and judges it
on the learner's hardware: *holds*, *does not hold*, *inconclusive* (noise could decide it)
or *depends on X*. A verdict is a function of numbers measured in the same notebook, so
re-running the notebook on other hardware can change it, and that is the point. Timing
rows come from :meth:`d2lopt.compare.Comparison.to_verdict` (interval and rounds always
shown); exact facts (counts, bytes, errors) from :func:`fact`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Verdict",
    "HOLDS",
    "DOES_NOT_HOLD",
    "DEPENDS",
    "INCONCLUSIVE",
    "SKIPPED",
    "all_hold",
    "at_each",
    "clip_interval",
    "fact",
    "some_beats_all",
    "verdict_table",
]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
DEPENDS = "depends"
INCONCLUSIVE = "inconclusive"  # the interval straddles the bar: noise could decide it
SKIPPED = "skipped"


@dataclass(frozen=True)
class Verdict:
    """One claim, what was measured, and the verdict that follows from it."""

    claim: str
    statement: str
    evidence: str
    verdict: str
    condition: str = ""
    deterministic: bool = False  # an exact count/byte size/raised error: no interval applies

    def __str__(self) -> str:
        tail = f" ({self.condition})" if self.condition else ""
        return f"{self.claim}: {self.verdict}{tail} - {self.evidence}"


def fact(claim: str, statement: str, evidence: str, holds: bool, *, condition: str = "") -> Verdict:
    """A verdict on a deterministic fact (sync counts, bytes, one run's peak memory, errors).

    Such evidence is exact, so it carries no interval and no noise band, and the table marks
    it as *exact*; timing claims go through :func:`d2lopt.compare.compare` instead.
    """
    if not isinstance(holds, bool):
        raise TypeError(f"holds: must be True or False (computed from the evidence), got {holds!r}")
    return Verdict(
        claim, statement, evidence, HOLDS if holds else DOES_NOT_HOLD, condition, deterministic=True
    )


def observed(
    claim: str, statement: str, evidence: str, holds: bool, *, condition: str = ""
) -> Verdict:
    """A verdict on a quantity the OS samples (a worker's USS, shared memory: ``14_memory``).

    Such a reading varies a little from run to run, so it is not *exact* like :func:`fact`,
    and one reading has no interval: the rule that judges it must leave a margin wide
    enough for that variation (say, growth above four times the control's).
    """
    if not isinstance(holds, bool):
        raise TypeError(f"holds: must be True or False (computed from the evidence), got {holds!r}")
    return Verdict(claim, statement, evidence, HOLDS if holds else DOES_NOT_HOLD, condition)


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A Markdown table of verdicts (render with ``IPython.display.Markdown``)."""
    rows = ["| claim | statement | measured here | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        verdict = f"**{v.verdict}**" + (f" ({v.condition})" if v.condition else "")
        evidence = f"exact: {v.evidence}" if v.deterministic else v.evidence
        rows.append(f"| {v.claim} | {v.statement} | {evidence} | {verdict} |")
    return "\n".join(rows)


def all_hold(comparisons: Sequence[Any]) -> str:
    """Verdict on a claim made of several comparisons: each of them must hold.

    *holds* when every comparison holds, *does not hold* as soon as one does not, else
    *inconclusive*. Taught in ``05_disk_to_memory`` (C1, C2: "every step", "every setting").
    """
    found = {c.verdict for c in comparisons}
    if found == {HOLDS}:
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in found else INCONCLUSIVE


def at_each(comparisons: Mapping[str, Any]) -> tuple[str, str]:
    """Verdict on "it holds at every setting", and which settings it holds at.

    ``comparisons`` maps a setting's name to its comparison. One setting picked in advance
    can be the one where the claim cannot hold by design (05's C3 at ``num_workers=1``: one
    worker does the main process's job plus a copy), so a claim about "workers" is tested at
    every worker count: *holds* when it holds at each, *does not hold* when it holds at none
    and fails at one, *depends* when it holds at some and fails at others, else
    *inconclusive*. The second value names the settings of each outcome, e.g.
    ``"holds at w=2, w=4; does not hold at w=1"``. Taught in ``05_disk_to_memory``.
    """
    if not comparisons:
        raise ValueError("comparisons: need at least one setting")
    by: dict[str, list[str]] = {}
    for name, c in comparisons.items():
        by.setdefault(c.verdict, []).append(name)
    which = "; ".join(f"{v} at {', '.join(by[v])}" for v in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
                      if v in by)  # fmt: skip
    if set(by) == {HOLDS}:
        return HOLDS, which
    if HOLDS in by:
        return (DEPENDS if DOES_NOT_HOLD in by else INCONCLUSIVE), which
    return (DOES_NOT_HOLD if DOES_NOT_HOLD in by else INCONCLUSIVE), which


def some_beats_all(
    between: Callable[[str, str], Any], better: Sequence[str], worse: Sequence[str]
) -> tuple[str, list[Any]]:
    """Does some setting of ``better`` beat every setting of ``worse``? Judged on a whole grid.

    ``between(a, b)`` is the comparison of ``a`` against ``b`` from the same paired rounds
    (:meth:`d2lopt.compare.Sweep.between`). Judging one declared pair of a grid while another
    cell of the grid contradicts it is not a verdict on the claim, so every pair counts:

    * *holds* when one setting of ``better`` beats each setting of ``worse`` (each holds);
    * *does not hold* when every setting of ``better`` is proven not to beat at least one
      setting of ``worse`` (that comparison does not hold);
    * *inconclusive* otherwise.

    The second value is the evidence: for each setting of ``better``, its comparison against
    the setting of ``worse`` it fares worst against (the lowest interval). Taught in
    ``06_cpu_compute`` (threads + workers that fit the cores against oversubscribing them).
    """
    if not better or not worse:
        raise ValueError("better, worse: each needs at least one setting")
    worst = []
    for b in better:
        cs = [between(b, w) for w in worse]
        if all(c.verdict == HOLDS for c in cs):
            return HOLDS, [min(cs, key=_low_end)]
        worst.append(min(cs, key=_low_end))
    if all(any(between(b, w).verdict == DOES_NOT_HOLD for w in worse) for b in better):
        return DOES_NOT_HOLD, worst
    return INCONCLUSIVE, worst


def _low_end(c: Any) -> float:
    lo = c.ci[0]
    return c.speedup if lo != lo else lo  # NaN: too few rounds; fall back to the estimate


def clip_interval(
    estimate: float, low: float, high: float, *, lowest: float, highest: float
) -> tuple[float, float, float, bool]:
    """An estimate and its interval clipped to what the quantity can be, and whether it was.

    A share of time lies in [0, 1], a fraction of a ceiling is at most 1; an interval built
    from noisy ratios can still reach past such a bound (13's idle shares of "-8 %", 12's
    "1.03 of the ceiling"): the rounds where the bound was crossed are noise, not a result.
    Clipping shows what is possible; the returned flag lets the caller say it clipped, and
    why. NaN ends stay NaN. Taught in ``12_putting_it_together`` and
    ``13_beyond_data_parallelism``.
    """
    if lowest > highest:
        raise ValueError(f"lowest, highest: need lowest <= highest, got {lowest} > {highest}")

    def clip(x: float) -> float:
        return x if x != x else min(highest, max(lowest, x))

    out = (clip(estimate), clip(low), clip(high))
    moved = any(a != b for a, b in zip(out, (estimate, low, high), strict=True) if a == a)
    return (*out, moved)
