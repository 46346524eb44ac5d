"""Verdicts computed from measurements, never typed by hand (every optimization notebook).

The course restates each of the articles' claims (C1-C14 in the course brief) and judges it
on the learner's hardware: *holds*, *does not hold*, *inconclusive* (noise could decide it)
or *depends on X*. A verdict is a function of numbers measured in the same notebook, so
re-running the notebook on other hardware can change it, and that is the point. Timing
rows come from :meth:`d2lopt.compare.Comparison.to_verdict` (interval and rounds always
shown); exact facts (counts, bytes, errors) from :func:`fact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Verdict",
    "HOLDS",
    "DOES_NOT_HOLD",
    "DEPENDS",
    "INCONCLUSIVE",
    "SKIPPED",
    "fact",
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


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A Markdown table of verdicts (render with ``IPython.display.Markdown``)."""
    rows = ["| claim | statement | measured here | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        verdict = f"**{v.verdict}**" + (f" ({v.condition})" if v.condition else "")
        evidence = f"exact: {v.evidence}" if v.deterministic else v.evidence
        rows.append(f"| {v.claim} | {v.statement} | {evidence} | {verdict} |")
    return "\n".join(rows)
