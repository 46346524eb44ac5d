"""Verdicts computed from measurements, never typed by hand (every optimization notebook).

The course restates each of the articles' claims (C1-C14 in the course brief) and judges it
on the learner's hardware: *holds*, *does not hold*, *inconclusive* (noise could decide it)
or *depends on X*. A verdict is a function of numbers measured in the same notebook, so
re-running the notebook on other hardware can change it, and that is the point. Timing
rows come from :func:`measured` (the row :meth:`d2lopt.measure.Comparison.to_verdict` gives:
interval and rounds always shown); exact facts (counts, bytes, errors) from :func:`exactly`
(:func:`fact` builds the same row in one call).

A notebook declares each claim in a few lines and draws the table with one call::

    show_verdicts([
        claim("C1", "in memory, num_workers=0 beats every setting with workers",
              every_part_holds(c1), condition="loader alone"),
        claim("C8", "no setting beats half the cores", no_other_beats(c8)),
        claim("TF32", "TF32 speeds up fp32 training", measured(tf32, or_skip="no GPU")),
    ])

A *rule* (:func:`measured`, :func:`every_part_holds`, :func:`holds_at_each`,
:func:`up_to_a_plateau`, :func:`no_other_beats`, :func:`exactly`, :func:`sampled`,
:func:`within_factor`, :func:`skipped`) turns what was measured into a :class:`Judgement`: the
verdict, the evidence that shows it, and where it holds. :func:`claim` adds the statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "Judgement",
    "Verdict",
    "HOLDS",
    "DOES_NOT_HOLD",
    "DEPENDS",
    "INCONCLUSIVE",
    "SKIPPED",
    "all_hold",
    "at_each",
    "claim",
    "clip_interval",
    "every_part_holds",
    "exactly",
    "fact",
    "holds_at_each",
    "knee",
    "measured",
    "no_other_beats",
    "observed",
    "plateau",
    "sampled",
    "show_verdicts",
    "skipped",
    "some_beats_all",
    "up_to_a_plateau",
    "verdict_table",
    "within_factor",
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
    it as *exact*; timing claims go through :func:`d2lopt.compare` instead.
    """
    return Verdict(claim, statement, evidence, _holds(holds), condition, deterministic=True)


def observed(
    claim: str, statement: str, evidence: str, holds: bool, *, condition: str = ""
) -> Verdict:
    """A verdict on a quantity the OS samples (a worker's USS, shared memory: ``14_memory``).

    Such a reading varies a little from run to run, so it is not *exact* like :func:`fact`,
    and one reading has no interval: the rule that judges it must leave a margin wide
    enough for that variation (say, growth above four times the control's).
    """
    return Verdict(claim, statement, evidence, _holds(holds), condition)


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A Markdown table of verdicts (render with ``IPython.display.Markdown``)."""
    rows = ["| claim | statement | measured here | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        verdict = f"**{v.verdict}**" + (f" ({v.condition})" if v.condition else "")
        evidence = f"exact: {v.evidence}" if v.deterministic else v.evidence
        rows.append(f"| {v.claim} | {v.statement} | {evidence} | {verdict} |")
    return "\n".join(rows)


def show_verdicts(verdicts: Sequence[Verdict]) -> None:
    """Draw the verdict table in the notebook: the one call a lesson's verdict cell ends with."""
    from IPython.display import Markdown, display

    display(Markdown(verdict_table(verdicts)))


# ---------------------------------------------------------------------------- claims and rules
@dataclass(frozen=True)
class Judgement:
    """What a rule concluded from what was measured, before the claim's statement is added.

    Attributes:
        verdict: ``holds``, ``does not hold``, ``depends``, ``inconclusive`` or ``skipped``.
        evidence: the measurements that decide it (intervals and rounds, counts, bytes).
        where: the settings it holds at, or what beat it; first in the row's condition.
        deterministic: exact evidence (a count, bytes): the table marks it *exact*.
    """

    verdict: str
    evidence: str
    where: str = ""
    deterministic: bool = False


def claim(name: str, statement: str, judgement: Judgement, *, condition: str = "") -> Verdict:
    """One row of a verdict table: a claim, its statement, and the rule's judgement of it.

    Args:
        name: the claim's id in the course brief (``"C2"``, ``"C2, C10"``, ``"A3"``).
        statement: the claim as the learner reads it.
        judgement: what a rule made of the measurements (:func:`measured`,
            :func:`every_part_holds`, :func:`up_to_a_plateau`, ...).
        condition: what the verdict is conditional on (hardware, sizes, settings).

    Example:
        >>> row = claim("A1", "Adam keeps two buffers per parameter", exactly("2 x 10 B", True))
        >>> str(row)
        'A1: holds - 2 x 10 B'
    """
    if not isinstance(judgement, Judgement):
        raise TypeError(
            f"judgement: need a rule's Judgement (measured(c), exactly(...), ...), got "
            f"{type(judgement).__name__}"
        )
    where = "; ".join(part for part in (judgement.where, condition) if part)
    return Verdict(
        name, statement, judgement.evidence, judgement.verdict, where, judgement.deterministic
    )


def _parts(comparisons: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(comparisons, Mapping):
        pairs = list(comparisons.items())
    else:
        pairs = [(c.label, c) for c in comparisons]
    if not pairs:
        raise ValueError("comparisons: need at least one comparison")
    return pairs


def _evidence(pairs: Sequence[tuple[str, Any]]) -> str:
    """``"b vs a: 1.42x [1.31, 1.55]; c vs a: 0.98x [0.91, 1.04] (24 rounds)"``."""
    rounds = {c.rounds for _, c in pairs}
    if len(rounds) == 1:  # one set of paired rounds: say how many once
        text = "; ".join(f"{name}: {str(c).rsplit(',', 1)[0]}" for name, c in pairs)
        text += f" ({rounds.pop()} rounds)"
    else:
        text = "; ".join(f"{name}: {c}" for name, c in pairs)
    if any(c.ci[0] != c.ci[0] for _, c in pairs):  # NaN: too few rounds for an interval
        text += "; too few rounds for an interval: measure longer"
    return text


def measured(comparison: Any, *, or_skip: str = "") -> Judgement:
    """One timing comparison judges the claim: its verdict, its interval and rounds as evidence.

    An *inconclusive* row also says why (the interval straddles the bar, or too few rounds).
    ``comparison`` may be ``None`` where the measurement could not run here; ``or_skip``
    then says why, and the row reads *skipped*.
    """
    if comparison is None:
        if not or_skip:
            raise ValueError("comparison: None (not measured here); pass or_skip='why not'")
        return skipped(or_skip)
    evidence = str(comparison)
    if comparison.verdict == INCONCLUSIVE:
        evidence += f"; {comparison.reason}"
    return Judgement(comparison.verdict, evidence)


def every_part_holds(comparisons: Mapping[str, Any] | Sequence[Any]) -> Judgement:
    """A claim made of several comparisons ("at every step", "against every setting").

    *holds* when each holds, *does not hold* as soon as one does not, else *inconclusive*
    (:func:`all_hold`). A mapping names each comparison in the evidence; a list uses their
    labels. Taught in ``05_disk_to_memory`` (C1, C2).
    """
    pairs = _parts(comparisons)
    return Judgement(all_hold([c for _, c in pairs]), _evidence(pairs))


def holds_at_each(comparisons: Mapping[str, Any]) -> Judgement:
    """A claim about every setting of a knob, judged at each: may *depend* on the setting.

    :func:`at_each` decides; ``where`` names the settings of each outcome (``"holds at w=2;
    does not hold at w=1"``). Taught in ``05_disk_to_memory`` (C3).
    """
    verdict, where = at_each(comparisons)
    return Judgement(verdict, _evidence(_parts(comparisons)), where)


def up_to_a_plateau(order: Sequence[Any], step_comparisons: Sequence[Any]) -> Judgement:
    """ "More helps, up to a plateau": a proven gain, then steps proven *not* to gain.

    ``step_comparisons[i]`` compares ``order[i + 1]`` with ``order[i]``
    (:func:`d2lopt.lab.loading.steps`); :func:`plateau` decides, and the evidence ends with
    its reason. Taught in ``05_disk_to_memory`` (``prefetch_factor``, C2 and C10).
    """
    verdict, reason = plateau(order, [c.verdict for c in step_comparisons])
    return Judgement(verdict, f"{_evidence(_parts(step_comparisons))}; {reason}")


def no_other_beats(others: Mapping[str, Any] | Sequence[Any]) -> Judgement:
    """ "No other setting beats this one": each comparison is *another setting vs this one*.

    *does not hold* as soon as one other setting is proven faster (its comparison holds);
    *holds* when every other setting is proven not to be faster; else *inconclusive*.
    ``where`` names the settings that beat it. Taught in ``05_disk_to_memory`` (C8).
    """
    pairs = _parts(others)
    beaten_by = [name for name, c in pairs if c.verdict == HOLDS]
    if beaten_by:
        verdict = DOES_NOT_HOLD
    elif all(c.verdict == DOES_NOT_HOLD for _, c in pairs):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    where = f"beaten by {', '.join(beaten_by)}" if beaten_by else ""
    return Judgement(verdict, _evidence(pairs), where)


def exactly(evidence: str, holds: bool) -> Judgement:
    """An exact fact decides the claim (a count, bytes, a raised error): see :func:`fact`."""
    return Judgement(_holds(holds), evidence, deterministic=True)


def sampled(evidence: str, holds: bool) -> Judgement:
    """A reading the OS samples decides it, with a margin wide enough: see :func:`observed`."""
    return Judgement(_holds(holds), evidence)


def within_factor(
    reading: float, predicted: float, *, evidence: str, factor: float = 2.0, otherwise: str
) -> Judgement:
    """A machine-wide reading agrees with a prediction: *holds* within ``factor`` of it.

    Outside it, other processes may have moved the reading (the machine's shared memory),
    so the row reads *inconclusive*, not *does not hold*, and says why (``otherwise``).
    Taught in ``14_memory`` (prefetched batches in shared memory, C10).
    """
    if not factor > 1:
        raise ValueError(f"factor: need a factor above 1, got {factor!r}")
    if predicted > 0 and 1 / factor <= reading / predicted <= factor:
        return Judgement(HOLDS, evidence)
    return Judgement(INCONCLUSIVE, f"{evidence}; {otherwise}")


def skipped(reason: str, *, where: str = "") -> Judgement:
    """Not measured on this machine, and why (a CUDA-only feature on a CPU, a missing counter)."""
    if not reason:
        raise ValueError("reason: say why the claim was not measured here")
    return Judgement(SKIPPED, f"not measured: {reason}", where)


def _holds(holds: bool) -> str:
    if not isinstance(holds, bool):
        raise TypeError(f"holds: must be True or False (computed from the evidence), got {holds!r}")
    return HOLDS if holds else DOES_NOT_HOLD


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
    (:meth:`d2lopt.measure.Sweep.between`). Judging one declared pair of a grid while another
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


def _check_step_verdicts(order: Sequence[Any], verdicts: Sequence[str]) -> None:
    if len(order) < 2 or len(verdicts) != len(order) - 1:
        raise ValueError(
            f"verdicts: need one verdict per step, len(order) - 1 = {len(order) - 1}, "
            f"got {len(verdicts)} (see steps())"
        )
    unknown = set(verdicts) - {HOLDS, DOES_NOT_HOLD, INCONCLUSIVE}
    if unknown:
        raise ValueError(
            f"verdicts: each must be {HOLDS!r}, {DOES_NOT_HOLD!r} or {INCONCLUSIVE!r}, "
            f"got {sorted(unknown)}"
        )


def knee(order: Sequence[T], verdicts: Sequence[str]) -> T:
    """The last setting reached by a chain of proven gains: where more stops *provably* helping.

    ``verdicts[i]`` is the verdict of ``order[i + 1]`` against ``order[i]`` (see
    :func:`steps`). Walk up from ``order[0]`` while each step *holds*; stop at the first step
    that does not (no gain of ``min_effect``, or one that noise could explain). Beyond the
    knee no step has been shown to pay. Taught in ``05_disk_to_memory``.

    Example:
        >>> knee([0, 1, 2, 4], ["holds", "inconclusive", "holds"])
        1
    """
    _check_step_verdicts(order, verdicts)
    return order[_knee_index(verdicts)]


def _knee_index(verdicts: Sequence[str]) -> int:
    i = 0
    while i < len(verdicts) and verdicts[i] == HOLDS:
        i += 1
    return i


def plateau(order: Sequence[Any], verdicts: Sequence[str]) -> tuple[str, str]:
    """Verdict on "more helps, up to a plateau", and why, from the step verdicts.

    * *holds*: the first step holds, and every step after the knee *does not hold* (its
      whole interval lies below ``1 + min_effect``): a gain, then demonstrably no more;
    * *does not hold*: the first step does not hold: more does not help at all;
    * *inconclusive*: otherwise: a step noise could decide, or no plateau within the range.

    Taught in ``05_disk_to_memory`` (``prefetch_factor``, C2 and C10).

    Example:
        >>> plateau([1, 2, 4, 8], ["holds", "does not hold", "does not hold"])
        ('holds', 'gains up to 2, none after it')
    """
    _check_step_verdicts(order, verdicts)
    if verdicts[0] == DOES_NOT_HOLD:
        return DOES_NOT_HOLD, f"{order[1]} is not faster than {order[0]}"
    if verdicts[0] == INCONCLUSIVE:
        return INCONCLUSIVE, f"{order[0]} -> {order[1]} is undecided"
    i = _knee_index(verdicts)
    top, after = order[i], verdicts[i:]
    if not after:
        return INCONCLUSIVE, f"still gaining at {top}: no plateau within the range"
    if all(v == DOES_NOT_HOLD for v in after):
        return HOLDS, f"gains up to {top}, none after it"
    return INCONCLUSIVE, f"gains up to {top}; a step after it is undecided"


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
