"""The ladder's report, computed from ``ladder.json`` alone: targets, tables, caveats, plot.

Taught in ``12_putting_it_together``. Everything here reads a finished report (the dict
:func:`d2lopt.lab.ladder.run_ladder` returns, or a ``ladder.json``), so the README's ladder
table and its caveats are generated from the committed measurement
(``python benchmarks/ladder_table.py``), never typed.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..stats import format_interval, look_confidence, ratio_interval
from ..verdict import clip_interval
from .recommend import summary_lines

__all__ = [
    "LOOPS",
    "PEERS",
    "breakdown_table",
    "check_targets",
    "describe_target",
    "format_table",
    "ladder_markdown",
    "readme_section",
    "decisions_table",
    "step_ups",
    "steps_not_separated",
    "where_the_time_goes",
    "plot_breakdown",
    "plot_ladder",
    "save_outputs",
]

# what a learner would run instead: each project's loop as its own book or docs run it
PEERS = {"d2l": "peer: d2l as its book runs it",
         "lightning": "peer: Lightning as its docs run it"}  # fmt: skip
# the same two loops fed exactly like the best rung: what the loop alone costs
LOOPS = {"d2l": "loop overhead: d2l train_ch6", "lightning": "loop overhead: Lightning Trainer"}
MET, MISSED, UNDECIDED = "met", "missed", "not established"


def _interval(ci: Any) -> tuple[float, float]:
    if not ci or ci[0] is None or ci[1] is None:
        return math.nan, math.nan
    return float(ci[0]), float(ci[1])


def _ci_text(value: float, ci: Any, unit: str = "x", bar: float | None = None) -> str:
    """``1.42x [1.31, 1.55]``; an end within 1 % of ``bar`` (the line it is judged
    against) gets a third decimal (:func:`d2lopt.stats.format_interval`)."""
    lo, hi = _interval(ci)
    if math.isnan(lo):
        return f"{value:.2f}{unit} no interval"
    interval = f"[{lo:.2f}, {hi:.2f}]" if bar is None else format_interval(lo, hi, bar)
    return f"{value:.2f}{unit} {interval}"


def _line(result: dict[str, Any]) -> float:
    """The line a speedup is judged against: ``1 + min_effect``."""
    return 1 + result["settings"]["min_effect"]


def _fraction(row: dict[str, Any]) -> tuple[float, list[float], bool]:
    """A rung's fraction of the ceiling and its interval, clipped to at most 1.

    No pipeline beats its ceiling (the same loop on batches already on the device), so an
    estimate or an interval end above 1 only says that the ceiling's own runs were slower in
    some rounds: noise. The report shows what is possible and says when it clipped.
    """
    lo, hi = _interval(row.get("fraction_ci"))
    est, lo, hi, clipped = clip_interval(row["fraction_of_ceiling"], lo, hi, lowest=0.0,
                                         highest=1.0)  # fmt: skip
    return est, [lo, hi], clipped


def _why_clipped(result: dict[str, Any]) -> str:
    """Why a fraction of the ceiling reached past 1, counted from the final rounds."""
    why = "clipped at 1: no pipeline beats its ceiling"
    rung = next((r for r in result["rungs"] if r["name"] == result["best"]["name"]), {})
    own, ceiling = rung.get("seconds"), result["ceiling"].get("seconds")
    if own and ceiling:
        slower = sum(c > b for b, c in zip(own, ceiling, strict=False))
        why += (f"; the ceiling's own run was the slower one in {slower} of {len(own)} rounds, "
                "which is noise in those rounds, not a result")  # fmt: skip
    return why


def _target(
    name: str, value: float, ci: Any, goal: float, *, strict: bool, unit: str = "x"
) -> dict[str, Any]:
    """Met when the whole interval clears the goal, missed when it lies below."""
    lo, hi = _interval(ci)
    if math.isnan(lo):
        status = UNDECIDED
    elif lo > goal or (lo >= goal and not strict):
        status = MET
    elif hi < goal or (hi <= goal and strict):
        status = MISSED
    else:
        status = UNDECIDED
    return {
        "target": name,
        "measured": value,
        "ci": [lo, hi],
        "goal": goal,
        "status": status,
        "met": status == MET,
        "short_by": max(0.0, goal - value),
        "text": _ci_text(value, ci, unit, bar=goal),
    }


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on this run's intervals (GPU: 3x, CPU: 1.5x baseline).

    A target is *met* when its whole interval clears the goal, *missed* when the whole
    interval falls short, and *not established* when the interval straddles the goal or
    too few rounds gave none. The ceiling's target asks for an estimate of at least 0.9 with
    the interval's lower end at least 0.85. "Ahead of a peer" means best/peer lies above 1,
    against each peer as people run it; the loop-overhead comparisons are reported, not
    targets.
    """
    best = result["best"]
    goal = 3.0 if result["device_type"] == "cuda" else 1.5
    frac, frac_ci, _ = _fraction(best)
    ceiling = _target("best rung >= 0.9 of the compute ceiling (interval from 0.85)", frac,
                      frac_ci, 0.9, strict=False, unit="")  # fmt: skip
    lo, hi = _interval(frac_ci)
    if not math.isnan(lo):  # met: estimate >= 0.9 and low end >= 0.85; missed: all below 0.9
        ceiling["status"] = MET if frac >= 0.9 and lo >= 0.85 else MISSED if hi < 0.9 else UNDECIDED
        ceiling["met"] = ceiling["status"] == MET
        ceiling["low_goal"] = 0.85
    rows = [
        _target(f"best rung >= {goal:g}x baseline", best["speedup"], best.get("speedup_ci"),
                goal, strict=False),
        ceiling,
    ]  # fmt: skip
    for key, label in PEERS.items():
        peer = result["peers"].get(key, {})
        if peer.get("status") == "measured":  # a peer that did not run is not judged
            vs = peer["vs_best"]
            rows.append(
                _target(f"best rung ahead of {label[6:]}", vs["ratio"], vs["ci"], 1.0,
                        strict=True)
            )  # fmt: skip
    return rows


def describe_target(target: dict[str, Any]) -> str:
    """``'met'``, ``'missed by 0.12'``, or ``'not established: ...'``."""
    if target["status"] == MET:
        return "met"
    if target["status"] == MISSED:
        return f"missed by {target['short_by']:.2f}"
    lo, hi = _interval(target["ci"])
    if math.isnan(lo):
        return "not established: too few paired rounds for an interval"
    if "low_goal" in target:
        return (
            f"not established: {target['measured']:.2f} with the interval {lo:.2f}-{hi:.2f}; "
            f"met needs >= {target['goal']:g} with the low end >= {target['low_goal']:g}"
        )
    return f"not established: the interval {lo:.2f}-{hi:.2f} straddles {target['goal']:g}"


# ------------------------------------------------------------------------------ tables
def _entries(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(name, adds, measured row or None, note) for rungs, ceiling and peers, in order."""
    out = []
    for r in result["rungs"]:
        if r["status"] == "measured":
            out.append((r["name"], r["adds"], r, ""))
        else:
            out.append((r["name"], r["adds"], None, f"{r['status']}: {_in_flags(r['reason'])}"))
    ceiling = result["ceiling"]
    out.append(("ceiling (data on device)", "the best rung's loop and evaluation, batches "
                "already on the device", ceiling, ""))  # fmt: skip
    for group in ("peers", "loop_overhead"):
        for peer in result.get(group, {}).values():
            if peer["status"] == "measured":
                out.append((peer["name"], peer.get("how", ""), peer, ""))
            else:
                out.append((peer["name"], peer.get("how", ""), None, f"skipped: {peer['reason']}"))
    return out


def _share(x: float) -> str:
    """A share to two significant digits: ``34%``, ``2.1%``, ``0.0031%`` (a tiny model's MFU)."""
    return f"{x:.2g}" if x == 0 else f"{100 * x:.2g}%" if x < 0.1 else f"{x:.0%}"


def _flops(x: float) -> str:
    """``60.2 MFLOP``, ``2.9 kFLOP``."""
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} FLOP"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.1%}"


def _cells(row: dict[str, Any], bar: float) -> list[str]:
    mem = row.get("peak_memory_mib")
    stall = row.get("stall_fraction")
    vs = row.get("vs_baseline", True) is None  # the baseline itself
    mfu = row.get("mfu")
    return [
        f"{row['samples_per_s']:.0f}",
        "1.00x (reference)" if vs else _ci_text(row["speedup"], row.get("speedup_ci"), bar=bar),
        f"{_fraction(row)[0]:.2f}",
        "-" if mfu is None else _share(mfu),
        f"{row['fixed_s']:.2f} s",
        "-" if stall is None else f"{stall:.0%}",
        "-" if mem is None else f"{mem:.0f} MiB",
    ]


HEADER = ["samples/s", "vs baseline", "of ceiling", "MFU", "fixed costs", "data stalls",
          "peak memory"]  # fmt: skip
WIDTHS = [9, 22, 10, 6, 11, 11, 11]


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: one line per rung, ceiling and peer."""
    head = " ".join(f"{h:>{w}}" for h, w in zip(HEADER, WIDTHS, strict=True))
    lines = [f"{'':<34} {head}"]
    for name, _, row, note in _entries(result):
        if row is None:
            lines.append(f"{name:<34} {note}")
        else:
            c = _cells(row, _line(result))
            cells = " ".join(f"{v:>{w}}" for v, w in zip(c, WIDTHS, strict=True))
            lines.append(f"{name:<34} {cells}")
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    """The Markdown ladder table (README and ``ladder.md``)."""
    out = [
        "| rung | adds | " + " | ".join(HEADER) + " |",
        "|---|---|" + "---:|" * len(HEADER),
    ]
    for name, adds, row, note in _entries(result):
        cells = _cells(row, _line(result)) if row is not None else [note] + [""] * (len(HEADER) - 1)
        out.append(f"| {name} | {adds} | " + " | ".join(cells) + " |")
    return "\n".join(out)


BREAKDOWN = {"compute": "compute", "data_wait": "data wait", "host_syncs": "host syncs",
             "evaluation": "evaluation", "fixed": "fixed costs", "other": "other"}  # fmt: skip


def breakdown_table(result: dict[str, Any]) -> str:
    """Markdown: where each measured entry's run went, as shares of its median run.

    From the runs' own clocks (:meth:`d2lopt.lab.ladder.RunStats.breakdown`): loop bodies,
    waits inside ``next()``, reads of tensors into Python, the time between epochs, start-up
    and the first step's extra. It says why the best rung stops where it does.
    """
    out = ["| entry | run | " + " | ".join(BREAKDOWN.values()) + " | syncs per run |",
           "|---|---:|" + "---:|" * (len(BREAKDOWN) + 1)]  # fmt: skip
    for name, _, row, _ in _entries(result):
        if row is None or "breakdown" not in row:
            continue
        share = row["breakdown"]
        run_s = statistics.median(row["seconds"])
        syncs = row.get("host_syncs_per_run")
        out.append(f"| {name} | {run_s:.2f} s | "
                   + " | ".join(_percent(share.get(k)) for k in BREAKDOWN)
                   + f" | {'-' if syncs is None else f'{syncs:.0f}'} |")  # fmt: skip
    return "\n".join(out)


def machine_line(result: dict[str, Any]) -> str:
    """The model's FLOPs and the matmul peaks measured in this run, for reading the MFU."""
    m = result.get("machine")
    if not m:
        return ""
    peaks = ", ".join(f"{p['dtype']} {p['flops_per_s'] / 1e9:.0f} GFLOP/s (n={p['size']})"
                      for p in m["peaks"].values())  # fmt: skip
    f = m["flops_per_sample"]
    return (f"MFU is the model's training FLOPs ({_flops(f['train'])} a sample, counted "
            "by FlopCounterMode: matmuls and convolutions) times training samples/s, over the "
            f"matmul peak measured in this run at the entry's precision: {peaks}.")  # fmt: skip


def _why_not_ceiling(result: dict[str, Any]) -> str:
    best, ceiling = result["best"], result["ceiling"]
    return (
        f"the best rung ({best['name']}) waits for its next batch in {best['stall_fraction']:.0%}"
        f" of its training loop and pays {best['fixed_s']:.2f} s of fixed costs (start-up, first "
        f"step) per run, against {ceiling['stall_fraction']:.0%} and {ceiling['fixed_s']:.2f} s "
        f"for the ceiling; its steady state reaches {best['steady_samples_per_s']:.0f} samples/s "
        f"against the ceiling's {ceiling['steady_samples_per_s']:.0f}"
    )


def caveats(result: dict[str, Any]) -> list[str]:
    """What a reader must know to read the table, every number from ``result``."""
    s = result["settings"]
    hw = result["hardware"]
    out = []
    load = result.get("load_average") or {}
    before, after = load.get("before"), load.get("after")
    if before and after:
        cores = hw["cpu_cores"]
        # judged on the load before the run: the 1-minute average after it includes the
        # run's own work, which alone pushes it towards the number of cores it used
        busy = before[0] > 0.5 * cores
        out.append(
            f"Load average (1 min) {before[0]:.2f} before and {after[0]:.2f} after the run, on "
            f"{cores} cores" + (": the machine was busy, so the intervals are wide and the "
                                "medians low; re-record on a quiet machine." if busy else
                                ": quiet before the run (the figure after it includes the "
                                "run's own work).")
        )  # fmt: skip
    data = result.get("data", {}).get("final_rounds")
    out.append(
        f"Each figure is the median of {result['final_rounds']} paired round(s) (whole runs of "
        f"{s['epochs']} epochs" + (f" over {data}" if data else "") + ", every entry once per "
        "round in rotating order, after the untimed runs that sized them); intervals are "
        f"{s['confidence']:.0%} intervals of the ratio to the baseline. Fixed costs (start-up "
        "to the first batch, the first step's extra time) are part of each run and shown "
        "apart; data stalls are the share of the training loop spent waiting for the next "
        "batch."
    )
    sizing = result.get("final_sizing")
    if sizing and not sizing["fits"]:
        out.append(f"The final rounds did not fit their share of the budget: {sizing['note']}; "
                   "raise --budget.")  # fmt: skip
    undecided = [r["name"] for r in result["rungs"] if r["status"] == "undecided"]
    if undecided:
        out.append(f"Undecided (kept apart, neither kept nor rejected; the climb went on from "
                   f"the best kept rung): {', '.join(undecided)}; their reasons are in "
                   "`ladder.md`.")  # fmt: skip
    if result.get("machine"):
        out.append(machine_line(result))
        over = [name for name, _, row, _ in _entries(result)
                if row is not None and (row.get("mfu") or 0) > 1]  # fmt: skip
        if over:
            out.append(f"MFU above 100% ({', '.join(over)}) cannot be: the matmul peak measured "
                       "in this run fell short of what the model's kernels reached (a busy "
                       "machine while it was measured); re-run on a quiet machine.")  # fmt: skip
    shares = {
        name: row["fixed_s"] / statistics.median(row["seconds"])
        for name, _, row, _ in _entries(result)
        if row is not None and not name.startswith("peer")
    }
    if shares:
        heavy = max(shares, key=shares.get)
        out.append(
            f"Fixed costs take {min(shares.values()):.1%} to {max(shares.values()):.1%} of a run "
            f"(most: {heavy}), so the steady state "
            + ("dominates every rung's time." if max(shares.values()) < 0.5 else
               "does not dominate every run: lengthen the runs (--n-train, --epochs).")
        )  # fmt: skip
    for t in check_targets(result):  # judged again: the rule of this code, on the stored numbers
        line = f"Target *{t['target']}*: {t['text']}: **{describe_target(t)}**"
        if t["status"] != MET and "ceiling" in t["target"]:
            line += f"; {_why_not_ceiling(result)}"
        if t["status"] != MET and "peer" not in t["target"] and "baseline" in t["target"]:
            kept = [r["name"] for r in result["rungs"] if r["status"] == "measured"][1:]
            line += f"; kept rungs: {', '.join(kept) or 'none'}"
        out.append(line + ".")
    for loop in result.get("loop_overhead", {}).values():  # reported, not a target
        if loop["status"] == "measured":
            vs = loop["vs_best"]
            out.append(f"Loop overhead: the best rung against the {loop['name'][15:]} loop fed "
                       f"exactly like it: {_ci_text(vs['ratio'], vs['ci'], bar=1.0)} (the "
                       "loops alone; above 1: the best rung's loop is faster).")  # fmt: skip
    if result["device_type"] != "cuda":
        out.append(
            "The GPU targets (at least 3x the baseline, pinned copies at 80% of the link, bf16 "
            "at least 2x fp32, data stalls under 5%) need a CUDA GPU: not measured here."
        )
    out.append(
        f"The whole run took {result['elapsed_s']:.0f} s"
        + (f" of its {s['budget_seconds']:.0f} s budget" if "budget_seconds" in s else "")
        + (
            " (`--quick`: the goal is under two minutes on 2 cores)."
            if s["quick"]
            else " (the goal is under ten minutes on 2 cores)."
            if s["device"] == "cpu"
            else "."
        )
    )
    return out


def runs_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per recorded ladder (folder -> report): how long it took against
    its budget, how its rungs were decided and with how few rounds, and the targets."""
    out = [
        "| run | machine | took | rungs: kept / rejected / undecided / skipped | fewest "
        "rounds a decision | best rung | targets met |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for folder, r in results.items():
        s = r["settings"]
        count = {k: sum(x["status"] == k for x in r["rungs"][1:])
                 for k in ("measured", "rejected", "undecided", "skipped")}  # fmt: skip
        rounds = [x["decision"]["comparison"]["rounds"] for x in r["rungs"] if x.get("decision")]
        met = sum(t["status"] == MET for t in r["targets"])
        command = "d2lopt ladder" + (" --quick" if s["quick"] else "")
        out.append(
            f"| `{command}` ([{folder}]({folder}/ladder.md)) | {r['device']} | "
            f"{r['elapsed_s']:.0f} s of {s['budget_seconds']:.0f} s | "
            + " / ".join(str(v) for v in count.values())
            + f" | {min(rounds) if rounds else '-'} | {r['best']['name']} "
            f"({_ci_text(r['best']['speedup'], r['best']['speedup_ci'], bar=_line(r))}) | "
            f"{met} of {len(r['targets'])} |"
        )
    return "\n".join(out)


def readme_section(
    result: dict[str, Any], folder: str, others: dict[str, dict[str, Any]] | None = None
) -> str:
    """The README's ladder block: command, table and caveats, all from ``result``; with
    ``others`` (folder -> report), a table of every recorded run first."""
    quick = " --quick" if result["settings"]["quick"] else ""
    lines: list[str] = []
    if others:
        lines += ["Every recorded ladder (each folder has `ladder.json`, `ladder.md`, `ladder.png` "
                  "and `recommended.py`):", "", runs_table(others), ""]  # fmt: skip
    lines += [
        f"**The optimization ladder** (`d2lopt ladder{quick} --out {folder}` on "
        f"{result['device']}; JSON, Markdown and plot in that folder, with each rung's decision "
        "in `ladder.md`; this table and its notes are generated by "
        "`python benchmarks/ladder_table.py`):",
        "",
        markdown_table(result),
        "",
    ]
    lines += [f"- {c}" for c in caveats(result)]
    return "\n".join(lines) + "\n"


def decisions_table(result: dict[str, Any]) -> str:
    """Markdown: what each rung was compared with, how, and the interval that decided it."""
    out = ["| rung | measured | on | against | result |", "|---|---|---|---|---|"]
    for r in result["rungs"][1:]:
        d = r.get("decision")
        if d is None:
            out.append(f"| {r['name']} | - | - | - | {r['status']}: {_in_flags(r['reason'])} |")
        else:
            kept = "kept" if r["status"] == "measured" else r["status"]
            why = f" ({_in_flags(d['why'])})" if d.get("why") else ""
            result_cell = f"{d['summary']}: **{d['verdict']}**, {kept}{why}"
            out.append(f"| {r['name']} | {d['measured']} | {d.get('samples', '-')} | "
                       f"{d['against']} | {result_cell} |")  # fmt: skip
    return "\n".join(out)


def _final_confidence(result: dict[str, Any]) -> float:
    """The confidence of one interval on the final rounds, which stopped at a planned look.

    Those rounds' intervals are split over ``final_looks`` (:func:`d2lopt.stats.planned_looks`),
    of which the last judgement spent ``final_share``: a fresh 95 % interval on them would
    peek. Reports written before looks were planned count as one look.
    """
    looks = result.get("final_looks", 1)
    return look_confidence(result["settings"]["confidence"], looks, result.get("final_share", 1))


def step_ups(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each kept rung against the kept rung below it, from the final rounds' paired times."""
    kept = [r for r in result["rungs"] if r["status"] == "measured"]
    confidence = _final_confidence(result)
    out = []
    for below, above in zip(kept, kept[1:], strict=False):
        ratios = np.asarray(below["seconds"]) / np.asarray(above["seconds"])
        est, lo, hi = ratio_interval(ratios, confidence)
        ci = [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi]
        text = f"{_ci_text(est, ci, bar=_line(result))}, {len(ratios)} rounds"
        out.append({"name": above["name"], "below": below["name"], "ratio": est, "ci": ci,
                    "text": text})  # fmt: skip
    return out


def _step_ratios(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-round ratio of each kept rung's step: time of the rung below / its own time."""
    kept = [r for r in result["rungs"] if r["status"] == "measured"]
    return {above["name"]: np.asarray(below["seconds"]) / np.asarray(above["seconds"])
            for below, above in zip(kept, kept[1:], strict=False)}  # fmt: skip


def steps_not_separated(result: dict[str, Any], name: str) -> list[str]:
    """The other steps the paired rounds cannot rank against step ``name``.

    Two steps come from the same final rounds, so their per-round ratio (step A / step B)
    has its own interval: A is the larger step only when that whole interval lies above 1.
    Two intervals that overlap cannot rank two steps ("+ AMP 1.52x [1.35, 1.66]" against
    "+ decode once 1.43x [1.33, 1.76]"); a ranking by medians alone would. Taught in
    ``12_putting_it_together`` (its exercise grades with it).
    """
    ratios = _step_ratios(result)
    if name not in ratios:
        raise ValueError(f"name: {name!r} is not a kept rung above the baseline: {list(ratios)}")
    confidence = _final_confidence(result)
    tied = []
    for other, r in ratios.items():
        if other == name:
            continue
        _, lo, hi = ratio_interval(ratios[name] / r, confidence)
        if not (lo > 1 or hi < 1):  # NaN (too few rounds) ranks nothing either
            tied.append(other)
    return tied


def where_the_time_goes(result: dict[str, Any]) -> str:
    """Markdown prose about this run, every claim computed from ``result``.

    The largest step is named only when the paired rounds separate it from every other
    step (:func:`steps_not_separated`); otherwise the prose says which steps it cannot rank.
    """
    best = result["best"]
    steps = step_ups(result)
    if not steps:
        text = (
            "No rung beat the baseline with an interval above "
            f"{1 + result['settings']['min_effect']:.2f} in this run, so the article's loop is "
            "the best rung here."
        )
    else:
        biggest = max(steps, key=lambda s: s["ratio"])
        tied = steps_not_separated(result, biggest["name"])
        overall = _ci_text(best["speedup"], best["speedup_ci"], bar=_line(result))
        text = f"The kept rungs take the run to {overall} the baseline's speed. "
        if len(steps) == 1:
            text += f"The one step was **{biggest['name']}**: {biggest['text']}"
        elif not tied:
            text += (f"The largest single step in the final rounds was **{biggest['name']}**: "
                     f"{biggest['text']} over {biggest['below']}, separated from every other "
                     "step by the paired rounds")  # fmt: skip
        else:
            text += (f"The paired rounds do not rank the largest steps: {biggest['name']} "
                     f"({biggest['text']}) is not separated from {', '.join(tied)}, so this run "
                     "cannot say which bought more")  # fmt: skip
        others = [s for s in steps if s is not biggest]
        if others:
            text += "; the steps: " + "; ".join(f"{s['name']} {s['text']}" for s in others)
        text += "."
    frac, ci, clipped = _fraction(best)
    text += f" The best rung reaches {_ci_text(frac, ci, '')} of the ceiling"
    if clipped:
        text += f" ({_why_clipped(result)})"
    text += f": {_why_not_ceiling(result)}."
    return text


def ladder_markdown(result: dict[str, Any]) -> str:
    """``ladder.md``: hardware, the table, each rung's decision, the targets, the caveats."""
    s, hw = result["settings"], result["hardware"]
    out = [
        f"# d2lopt ladder on {result['device']}",
        "",
        f"Hardware: {hw['cpu_model']}, {hw['cpu_cores']} cores, {hw['memory_gib']} GiB"
        + (f"; CPU kernels {hw['cpu_capability']}" if hw.get("cpu_capability") else "")
        + f", bf16 units: {'yes' if hw.get('cpu_bf16_units') else 'no'}; "
        f"torch {result['versions']['torch']}.",
        f"Workload: {result['workload']}. Batch {s['batch_size']}, {s['epochs']} epochs per run.",
    ]
    if result.get("data"):
        out.append(f"Data: the final rounds used {result['data']['final_rounds']}; each "
                   "decision's share is in its row below.")  # fmt: skip
    out += [
        "",
        markdown_table(result),
        "",
        "## How each rung was decided",
        "",
        decisions_table(result),
    ]
    if any("breakdown" in row for _, _, row, _ in _entries(result) if row is not None):
        out += ["", "## Where a run's time goes", "", breakdown_table(result)]
    out += ["", "## What to change in your code", ""]
    out += [f"- {line}" for line in summary_lines(result, "recommended.py")]
    out += ["", "## Targets and caveats", ""] + [f"- {c}" for c in caveats(result)]
    if "reproduce" in result:  # written by run_ladder (d2lopt.lab.ladder.reproduce_command)
        out += ["", f"Reproduce: `{result['reproduce']}`."]
    return "\n".join(out) + "\n"


def _in_flags(reason: str) -> str:
    """A rung's reason in the command's terms: its comparison's budget is --budget's share.

    The comparison's own advice names its Python argument (``raise max_seconds``); each
    rung's comparison gets a share of the ladder's budget, which the learner sets with
    ``--budget``.
    """
    return reason.replace("raise max_seconds", "raise --budget")


# ------------------------------------------------------------------------------ plot
def plot_ladder(result: dict[str, Any], ax: Any = None) -> Any:
    """Horizontal bars with intervals: rungs climbing, peers in grey, the ceiling dashed."""
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: works headless, in any backend

        ax = Figure(figsize=(9, 5), layout="constrained").subplots()
    base = result["rungs"][0]["samples_per_s"]
    labels, values, errors, colors, notes = [], [], [], [], []
    for name, _, row, note in _entries(result):
        if name.startswith("ceiling"):
            continue
        labels.append(name)
        colors.append("tab:gray" if name.startswith("peer") else "tab:blue")
        if row is None:
            values.append(0.0)
            errors.append((0.0, 0.0))
            notes.append(note.split(" (")[0][:60])
            continue
        values.append(row["samples_per_s"])
        lo, hi = _interval(row.get("speedup_ci"))
        if math.isnan(lo):
            errors.append((0.0, 0.0))
        else:  # the interval of the speedup, drawn on the samples/s axis
            errors.append(
                (
                    max(0.0, row["samples_per_s"] - lo * base),
                    max(0.0, hi * base - row["samples_per_s"]),
                )
            )
        notes.append(f"{_ci_text(row['speedup'], row.get('speedup_ci'), bar=_line(result))}, "
                     f"stalls {row['stall_fraction']:.0%}")  # fmt: skip
    y = list(range(len(labels)))[::-1]
    xerr = [[e[0] for e in errors], [e[1] for e in errors]]
    ax.barh(y, values, color=colors, xerr=xerr, capsize=3)
    ceiling = result["ceiling"]["samples_per_s"]
    ax.axvline(ceiling, color="tab:red", linestyle="--", label=f"compute ceiling {ceiling:.0f}/s")
    for yi, v, note in zip(y, values, notes, strict=True):
        ax.text(v + 0.01 * ceiling, yi, note, va="center", fontsize=7)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.6 * max([ceiling, *values]))
    ax.set_xlabel("training samples/s (whole run: loading, training, evaluation)")
    ax.set_title(f"optimization ladder on {result['device']}")
    ax.legend(loc="lower right")
    return ax


def plot_breakdown(result: dict[str, Any], ax: Any = None) -> Any:
    """Stacked bars: where each measured entry's run went (:func:`breakdown_table`'s shares)."""
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(9, 4.5), layout="constrained").subplots()
    rows = [(name, row) for name, _, row, _ in _entries(result)
            if row is not None and "breakdown" in row]  # fmt: skip
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:green", "tab:gray", "lightgray"]
    for (key, label), color in zip(BREAKDOWN.items(), colors, strict=True):
        widths = [row["breakdown"].get(key) or 0.0 for _, row in rows]
        ax.barh(y, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(y, [name for name, _ in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of a whole run (median of the final rounds)")
    ax.set_title("where a run's time goes")
    ax.legend(loc="lower right", fontsize=7)
    return ax


def save_outputs(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``ladder.json``, ``ladder.md`` and ``ladder.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ladder.md").write_text(ladder_markdown(result))
    ax = plot_ladder(result)
    ax.figure.savefig(out / "ladder.png", dpi=120)
    return out
