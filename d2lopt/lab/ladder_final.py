"""The ladder's final rounds and its report: kept rungs, ceiling and peers, run whole side by side.

Taught in ``12_putting_it_together``. After the climb (:mod:`d2lopt.lab.ladder_climb`) every kept
rung, the compute ceiling and the peers that are installed run whole in the same paired
rounds (:func:`d2lopt.measure.compare_many`), so every figure of ``ladder.json`` has an
interval against the baseline; :func:`report` assembles that content.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ..data import notice_once
from ..measure import Sweep, compare_many
from .ladder_climb import pair
from .ladder_measures import PeakMemory, RunStats
from .ladder_report import PEERS
from .ladder_runs import MEASURED, PEER_RUNS, SKIPPED, Rung, run_ceiling, run_rung
from .ladder_workload import Workload

__all__ = ["KEPT", "final_rounds", "describe_hardware", "json_safe", "load_average", "report"]

KEPT = MEASURED  # a kept rung is measured in the final rounds
_PEER_INSTALL = {"d2l": "pip install --no-deps d2l==1.0.3", "lightning": "pip install lightning"}


# ------------------------------------------------------------------------------ final rounds
def final_rounds(
    wl: Workload, rungs: list[Rung], log: Callable[[str], None]
) -> tuple[Sweep, dict[str, list[RunStats]], dict[str, str]]:
    """Kept rungs, ceiling and peers: whole runs in the same paired rounds."""
    s = wl.s
    kept = [r for r in rungs if r.status == KEPT]
    top = kept[-1]
    runs: dict[str, Callable[[], RunStats]] = {
        r.name: functools.partial(run_rung, wl, r) for r in kept
    }
    runs["ceiling"] = functools.partial(run_ceiling, wl, top)
    missing: dict[str, str] = {}
    for key, label in PEERS.items():
        if importlib.util.find_spec(key) is not None:
            runs[label] = functools.partial(PEER_RUNS[key], wl, top)
        else:  # a peer is a comparison, not a requirement: say so and go on without it
            missing[key] = f"not installed: {_PEER_INSTALL[key]}"
            notice_once(f"peer-{key}", f"{key} is not installed, so its peer is skipped: "
                        f"{_PEER_INSTALL[key]}")  # fmt: skip
    records: dict[str, list[RunStats]] = {name: [] for name in runs}

    def recorded(name: str, run: Callable[[], RunStats]) -> Callable[[], None]:
        def call() -> None:
            with PeakMemory(wl.device) as mem:
                stats = run()
            records[name].append(replace(stats, peak_memory_mib=mem.mib))
            gc.collect()  # Lightning's reference cycles hold loaders (and workers) otherwise
            counts = {len(v) for v in records.values()}
            if len(counts) == 1:  # every entry ran once more: a round is complete
                k = counts.pop() - s.warmup
                what = f"round {k}" if k > 0 else "warm-up"
                log(f"{what}: " + ", ".join(
                    f"{n} {v[-1].samples / v[-1].seconds:.0f}/s" for n, v in records.items()
                ))  # fmt: skip

        return call

    log(f"final rounds: {len(runs)} whole runs per round, up to {s.max_seconds:.0f} s")
    gc.collect()
    gc.freeze()  # older objects out of the collector's way: gc.collect() above stays cheap
    try:
        sweep = compare_many(
            {name: recorded(name, run) for name, run in runs.items()},
            reference="baseline",
            device=wl.device,
            min_effect=s.min_effect,
            confidence=s.confidence,
            max_seconds=s.max_seconds,
            warmup=s.warmup,
            max_rounds=s.max_rounds,
            number=1,  # one run per timed block: the records line up with the rounds
        )
    finally:
        gc.unfreeze()
    return sweep, {n: v[-sweep.rounds :] for n, v in records.items()}, missing


def _row(name: str, sweep: Sweep, recs: list[RunStats]) -> dict[str, Any]:
    med = statistics.median
    memory = [r.peak_memory_mib for r in recs if r.peak_memory_mib is not None]
    row: dict[str, Any] = {
        "samples_per_s": recs[-1].samples / sweep.median(name),
        "steady_samples_per_s": med(r.steady_samples_per_s for r in recs),
        "fixed_s": med(r.fixed for r in recs),
        "startup_s": med(r.startup for r in recs),
        "first_step_s": med(r.first_step for r in recs),
        "stall_fraction": med(r.stall_fraction for r in recs),
        "peak_memory_mib": max(memory) if memory else None,
        "seconds": list(sweep.seconds[name]),
    }
    if name == sweep.reference:
        row |= {"speedup": 1.0, "speedup_ci": [1.0, 1.0], "vs_baseline": None}
    else:
        c = sweep.comparisons[name]
        row |= {"speedup": c.speedup, "speedup_ci": list(c.ci), "vs_baseline": c.to_dict()}
    if name == "ceiling":
        row |= {"fraction_of_ceiling": 1.0, "fraction_ci": [1.0, 1.0]}
    else:
        f = pair(sweep, name, "ceiling")  # entry time / ceiling time
        row |= {
            "fraction_of_ceiling": 1 / f["ratio"],
            "fraction_ci": [1 / f["ci"][1], 1 / f["ci"][0]],
        }
    return row


def describe_hardware(device: torch.device) -> dict[str, Any]:
    from ..devices import accelerator_name
    from ..envinfo import environment_report

    rep = environment_report()
    cpu = accelerator_name("cpu")
    with contextlib.suppress(OSError):  # the CPU's marketing name, for the results' folder
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    name = cpu if device.type == "cpu" else accelerator_name(device)
    keys = ("python", "platform", "torch", "torchvision", "cpu_cores", "torch_threads",
            "memory_gib", "cpu_bf16_units", "cuda_version", "gpus", "mps_available")  # fmt: skip
    return {"name": name, "cpu_model": cpu} | {k: rep[k] for k in keys}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("d2lopt", "torch", "d2l", "lightning"):
        try:
            out[pkg] = torch.__version__ if pkg == "torch" else version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def json_safe(obj: Any) -> Any:
    """NaN (an interval that needs more rounds) as null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def _rung_row(r: Rung, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One rung of ``ladder.json``: how it was decided, and its final rounds when kept."""
    return {
        "name": r.name,
        "adds": r.adds,
        "status": r.status,
        "reason": r.reason,
        "loop": r.loop if r.config is not None else None,
        "loader": r.loader or None,
        "config": r.config.to_dict() if r.config is not None else None,
        "decision": r.decision,
    } | rows.get(r.name, {"samples_per_s": None, "speedup": None})


def _peers(
    rows: dict[str, dict[str, Any]], missing: dict[str, str], sweep: Sweep, top: Rung
) -> dict[str, Any]:
    """Each peer against the best rung (``vs_best``), or why it was skipped."""
    peers: dict[str, Any] = {}
    for key, label in PEERS.items():
        if label in rows:
            vs = pair(sweep, label, top.name)  # peer time / best time
            peers[key] = {"name": label, "status": MEASURED, "vs_best": vs} | rows[label]
        else:
            peers[key] = {"name": label, "status": SKIPPED, "reason": missing[key]}
    return peers


def report(
    wl: Workload,
    rungs: list[Rung],
    loader_sweep: list[dict[str, Any]],
    sweep: Sweep,
    records: dict[str, list[RunStats]],
    missing: dict[str, str],
    hardware: dict[str, Any],
) -> dict[str, Any]:
    """The ``ladder.json`` content, less its targets, load average and elapsed time."""
    s = wl.s
    rows = {name: _row(name, sweep, recs) for name, recs in records.items()}

    top = [r for r in rungs if r.status == KEPT][-1]
    rung_rows = [_rung_row(r, rows) for r in rungs]
    peers = _peers(rows, missing, sweep, top)
    best = rows[top.name]
    result: dict[str, Any] = {
        "schema": 2,
        "device": f"{wl.device}: {hardware['name']}"
        + (f", {hardware['cpu_cores']} cores" if wl.device.type == "cpu" else ""),
        "device_type": wl.device.type,
        "hardware": hardware,
        "versions": _versions(),
        "workload": f"{wl.description}; {wl.model_name}",
        "settings": asdict(s),
        "memory_kind": "CUDA allocator peak"
        if wl.device.type == "cuda"
        else "peak PSS of the process and its loader workers (host memory, psutil)",
        "rungs": rung_rows,
        "ceiling": rows["ceiling"]
        | {"config": top.config.to_dict(), "loop": top.loop, "loader": top.loader},
        "peers": peers,
        "best": {"name": top.name}
        | {
            k: best[k]
            for k in (
                "samples_per_s",
                "speedup",
                "speedup_ci",
                "fraction_of_ceiling",
                "fraction_ci",
                "stall_fraction",
                "fixed_s",
                "steady_samples_per_s",
            )
        },  # fmt: skip
        "loader_sweep": loader_sweep,  # LoaderRun.to_dict() rows, as tune-loader's
        "final_rounds": sweep.rounds,
        "final_looks": sweep.looks,  # the intervals of the final rounds are split over these
        "final_share": sweep.share,  # and spend this many looks' share of the error
    }
    return result
