"""One process or N ranks on the same global batch: which trains faster? (B1 in ``10_ddp``)

:func:`data_parallel_step` is the worker a :class:`~d2lopt.lab.ranks.RankPool` runs,
:func:`compare_scaling` times both ways in paired rounds, and :func:`scaling_verdict` turns
the result into a verdict row with its parallel efficiency. ``11_scheduling`` feeds the
measured speedup to its cluster simulation (:mod:`d2lopt.lab.cluster`).

B1 is one claim, so it is measured once: an interval covers the noise inside one run, not
another run minutes later under another load (the same comparison gave "0.29x [0.26, 0.32]"
in one notebook and "0.45x [0.41, 0.50]" in the next), so two notebooks that measured it
separately would state two answers. ``10_ddp`` records its measurement
(:func:`save_scaling`); ``11_scheduling`` reuses it when it matches the machine and the
settings (:func:`reuse_or_measure`), and measures, and says so, only when there is none.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from ..devices import synchronize
from ..distributed import rank_device
from ..envinfo import usable_cores
from ..measure import Comparison, compare
from ..models import cnn, init_weights, mlp
from ..verdict import INCONCLUSIVE, Verdict
from .ranks import RankPool

__all__ = [
    "B1_RECORD",
    "compare_scaling",
    "data_parallel_step",
    "load_scaling",
    "reuse_or_measure",
    "save_scaling",
    "scaling_verdict",
]

# relative to the notebooks' folder (their working directory), next to each notebook's runs/
B1_RECORD = Path("runs") / "b1_scaling.json"


_STATE: dict[tuple, dict[str, Any]] = {}  # per rank process: what the first call built


def data_parallel_step(
    rank: int, world: int, *, mode: str, steps: int, batch: int, device: str = "cpu",
    model: str = "mlp",
) -> None:  # fmt: skip
    """``steps`` optimizer steps of the course model on one global batch of ``world * batch``.

    ``mode="one"``: rank 0 alone trains on the whole global batch, with every core; the
    other ranks return at once and wait idle. ``mode="ddp"``: every rank trains on its
    ``batch`` under DDP, with ``cores // world`` threads each. Both do the same work with the
    same cores (or one GPU vs ``world`` GPUs), so comparing them changes exactly one thing:
    how many processes share it (B1 in ``10_ddp``). The batches are already on the device:
    this measures computation and gradient communication, not loading. The first call of a
    mode builds the model, optimizer and data; later calls reuse them.
    """
    if mode not in ("one", "ddp"):
        raise ValueError(f"mode: must be 'one' or 'ddp', got {mode!r}")
    if model not in ("mlp", "cnn"):
        raise ValueError(f"model: must be 'mlp' or 'cnn' (the course models), got {model!r}")
    if mode == "one" and rank != 0:
        return None  # back to the pipe: this rank takes no core while rank 0 trains
    dev = rank_device(rank, device)
    torch.set_num_threads(usable_cores() if mode == "one" else max(1, usable_cores() // world))
    key = ("data_parallel_step", mode, batch, model, str(dev))
    if key not in _STATE:
        torch.manual_seed(0)  # the same initial weights on every rank and in both modes
        net = (mlp() if model == "mlp" else cnn()).apply(init_weights).to(dev)
        ids = [dev.index] if dev.type == "cuda" else None
        wrapped = DDP(net, device_ids=ids) if mode == "ddp" else net
        n = batch * (world if mode == "one" else 1)  # samples per step on this rank
        g = torch.Generator().manual_seed(rank)  # FashionMNIST's shapes; values do not matter
        images, labels = torch.rand(4 * n, 1, 28, 28, generator=g), torch.arange(4 * n) % 10
        data = list(zip(images.to(dev).split(n), labels.to(dev).split(n), strict=True))
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        _STATE[key] = {"model": wrapped, "opt": opt, "batches": itertools.cycle(data)}
    state = _STATE[key]
    for _ in range(steps):
        X, y = next(state["batches"])
        state["opt"].zero_grad(set_to_none=True)
        F.cross_entropy(state["model"](X), y).backward()  # DDP: all-reduce inside
        state["opt"].step()
    synchronize(dev)  # the parent times until every rank answers: queued GPU work counts
    return None


def compare_scaling(
    pool: RankPool, *, batch: int, steps: int = 4, model: str = "mlp", **compare_kwargs: Any
) -> Comparison:
    """One process vs ``pool.world`` DDP ranks on the same global batch, in paired rounds.

    Returns the :class:`~d2lopt.measure.Comparison` of the claim "``pool.world`` processes
    train faster than one" (speedup = time of one process / time of the ranks). Taught in
    ``10_ddp`` (B1) and fed to the cluster simulation of ``11_scheduling``.
    """

    def run(mode: str) -> Callable[[], Any]:
        return lambda: pool.run(data_parallel_step, mode=mode, steps=steps, batch=batch,
                                device=pool.device, model=model)  # fmt: skip

    for mode in ("one", "ddp"):  # untimed: the first call of a mode builds model and data
        run(mode)()
    label = f"{pool.world} ranks vs 1 process"
    return compare(run("one"), run("ddp"), label=label, **compare_kwargs)


def scaling_verdict(
    result: Comparison, world: int, claim: str, statement: str, condition: str = ""
) -> Verdict:
    """The verdict row of a :func:`compare_scaling` result, with its parallel efficiency.

    Efficiency = speedup / ``world``. Above 100 % the ranks did more than ``world`` times the
    work of one process with the same cores, which means the baseline was handicapped (busy
    cores, an OpenMP pool waiting for a descheduled thread): such a row is an *invalid
    measurement*, reported as inconclusive, never as a result.
    """
    efficiency = result.speedup / world
    if efficiency > 1:
        return Verdict(claim, statement,
                       f"invalid measurement: {result} is a parallel efficiency of "
                       f"{efficiency:.0%}, above 100 %; the one-process baseline was slowed "
                       "by something else (busy cores?): re-run on an idle machine",
                       INCONCLUSIVE, "invalid measurement")  # fmt: skip
    row = result.to_verdict(claim, statement, condition=condition)
    return replace(row, evidence=f"{row.evidence}; efficiency {efficiency:.0%}")


def _setup(pool: RankPool, batch: int, steps: int, model: str) -> dict[str, Any]:
    """What a recorded measurement must match to stand for a new one: same machine, same work."""
    return {"world": pool.world, "device": str(pool.device), "cores": usable_cores(),
            "batch": batch, "steps": steps, "model": model, "torch": torch.__version__}  # fmt: skip


def save_scaling(
    result: Comparison, pool: RankPool, path: str | Path = B1_RECORD, *, batch: int,
    steps: int = 4, model: str = "mlp", by: str = "",
) -> Path:  # fmt: skip
    """Record a :func:`compare_scaling` result so that another notebook reuses it (JSON).

    Written atomically (a reader never sees half a file), with the set-up it was measured
    with, who measured it (``by``, e.g. ``"10_ddp"``) and when.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"setup": _setup(pool, batch, steps, model), "by": by,
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "result": result.to_dict()}  # fmt: skip
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_scaling(
    pool: RankPool, path: str | Path = B1_RECORD, *, batch: int, steps: int = 4,
    model: str = "mlp",
) -> tuple[Comparison, str] | None:  # fmt: skip
    """The recorded result and who measured it when, or ``None``: absent, unreadable, or
    measured with another set-up (machine cores, device, world, batch, torch version)."""
    try:
        record = json.loads(Path(path).read_text())
        if record["setup"] != _setup(pool, batch, steps, model):
            return None
        names = {f.name for f in fields(Comparison)}
        d = {k: v for k, v in record["result"].items() if k in names}
        d["ci"] = tuple(d["ci"])
        for k in ("baseline_seconds", "candidate_seconds"):
            d[k] = tuple(d[k])
        return Comparison(**d), f"measured by {record['by'] or '?'} at {record['measured_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reuse_or_measure(
    pool: RankPool, path: str | Path = B1_RECORD, *, batch: int, steps: int = 4,
    model: str = "mlp", by: str = "", **compare_kwargs: Any,
) -> tuple[Comparison, str]:  # fmt: skip
    """The recorded B1 measurement if one matches this set-up, else a new one (recorded).

    Returns the comparison and where it comes from: ``"measured by 10_ddp at ..."``, or
    ``"measured here: no matching record of 10_ddp's measurement"``. A notebook that needs
    B1's number (``11_scheduling``) then states the same answer as the notebook that judges
    it, and still runs on its own, in any order.
    """
    found = load_scaling(pool, path, batch=batch, steps=steps, model=model)
    if found is not None:
        return found
    result = compare_scaling(pool, batch=batch, steps=steps, model=model, **compare_kwargs)
    save_scaling(result, pool, path, batch=batch, steps=steps, model=model, by=by)
    return result, f"measured here ({by}): no matching record of 10_ddp's measurement"
