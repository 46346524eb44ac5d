"""The optimization ladder: every lesson of the course, measured in one run (``d2lopt ladder``).

Taught in ``12_putting_it_together``. One workload (by default JPEG files on disk, decoded
and augmented per sample, and the course CNN; ``--dataset``/``--model`` swap in yours)
climbs rungs that each add **one** optimization to the best rung so far. A rung is *kept*
only when :func:`d2lopt.measure.compare` says it **holds** against that previous best;
otherwise it is *rejected*, with its interval. Each decision measures what the rung changes:

- loader rungs (worker processes, threads, pinned memory, GPU decode, decode once): passes of
  the training loader with the training step, through :func:`d2lopt.lab.bench.measure_loaders`
  (the code ``d2lopt tune-loader`` measures with);
- compute rungs (AMP, ``channels_last``, ``torch.compile``): the same passes, one step each;
- loop hygiene: whole runs, since it changes the evaluation.

Then the kept rungs, the compute ceiling (the top rung's loop and evaluation on batches that
already sit on the device) and two peers (d2l's ``train_ch6``, Lightning's ``Trainer``) run
whole in the same paired rounds (:func:`d2lopt.measure.compare_many`): every figure gets an
interval against the baseline, and "ahead of a peer" means the interval of best/peer lies
above 1. Each run also reports its fixed costs (start-up to the first batch, the first
step's extra time: compilation) apart from its steady state, and its data stalls: the share
of the training loop spent waiting for the next batch.

Nothing is assumed: a rung the hardware cannot use is *skipped* with the reason.

This module holds the settings and :func:`run_ladder`; the climb is in
:mod:`d2lopt.lab.ladder_climb`, the final rounds and the report's content in
:mod:`d2lopt.lab.ladder_final`, one run in :mod:`d2lopt.lab.ladder_runs`, the tables and plot in
:mod:`d2lopt.lab.ladder_report`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..devices import resolve_device
from ..errors import ParamError
from .ladder_climb import _Climb
from .ladder_final import describe_hardware, final_rounds, json_safe, load_average, report
from .ladder_measures import RunStats
from .ladder_report import (
    check_targets,
    describe_target,
    format_table,
    ladder_markdown,
    plot_ladder,
    save_outputs,
)
from .ladder_runs import Rung, d2l_train_ch6
from .ladder_workload import Workload, load_user_data, load_user_model

__all__ = [
    "LadderSettings",
    "Rung",
    "RunStats",
    "run_ladder",
    "d2l_train_ch6",
    "check_targets",
    "describe_target",
    "format_table",
    "ladder_markdown",
    "plot_ladder",
    "save_outputs",
    "load_user_data",
    "load_user_model",
]

RUNG_NAMES = (
    "baseline",
    "+ loader workers",
    "+ loader threads",
    "+ pin_memory/non_blocking",
    "+ GPU decode",
    "+ decode once",
    "+ AMP",
    "+ loop hygiene",
    "+ channels_last",
    "+ torch.compile",
)


# LadderSettings.preset's sizes and budgets, per (device kind, quick): the reasons are in its
# docstring
_PRESET_FIELDS = ("n_train", "n_test", "image_size", "batch_size",
                  "max_seconds", "decide_seconds", "decide_batches")  # fmt: skip
_PRESETS: dict[tuple[str, bool], tuple[int | float, ...]] = {
    ("cpu", True): (256, 64, 32, 32, 45.0, 10.0, 4),
    ("cpu", False): (2048, 512, 64, 64, 120.0, 20.0, 8),
    ("gpu", True): (2048, 512, 64, 128, 30.0, 6.0, 4),
    ("gpu", False): (16384, 2048, 64, 256, 120.0, 20.0, 16),
}


@dataclass(frozen=True)
class LadderSettings:
    """Sizes and time budgets of one ladder run; :meth:`preset` scales them to the hardware.

    ``max_seconds`` bounds the final paired rounds (every kept rung, the ceiling, the
    peers); ``decide_seconds`` bounds each rung's decision against the previous best. A
    comparison stops earlier once its verdict is decided and its interval narrow.
    """

    n_train: int = 2048
    n_test: int = 512
    image_size: int = 64
    batch_size: int = 64
    epochs: int = 2
    warmup: int = 1
    max_seconds: float = 120.0
    decide_seconds: float = 20.0
    max_rounds: int = 200
    decide_batches: int | None = None  # batches per epoch in decision passes (None: all)
    min_effect: float = 0.05
    confidence: float = 0.95
    lr: float = 0.05
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    data_dir: str | None = None
    dataset: str | None = None  # MODULE:ATTR of the learner's data set (default: standard)
    model: str | None = None  # MODULE:ATTR of a zero-argument model factory
    quick: bool = False  # informational: which preset the sizes came from

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                f.type.startswith("int")
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                raise ParamError(f.name, f"must be an int, got {value!r}")
        for name in ("n_train", "n_test", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ParamError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.decide_batches is not None and self.decide_batches < 1:
            raise ParamError("decide_batches", f"must be >= 1 or None, got {self.decide_batches}")
        if self.max_rounds < 2:
            raise ParamError(
                "max_rounds", f"must be >= 2 (a ratio needs pairs), got {self.max_rounds}"
            )
        for name in ("warmup", "seed"):
            if getattr(self, name) < 0:
                raise ParamError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ParamError(
                "image_size", f"must be >= 8 (the CNN pools 3x), got {self.image_size}"
            )
        if self.dataset is None and self.batch_size > self.n_train:
            raise ParamError(
                "batch_size",
                f"{self.batch_size} exceeds n_train={self.n_train}; use a smaller "
                "batch or more training images",
            )
        if self.dataset is None and self.n_test > 10_000:
            raise ParamError("n_test", f"the test split has 10000 images, got {self.n_test}")
        for name in ("lr", "max_seconds", "decide_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ParamError(name, f"must be a number > 0, got {value!r}")
        if not 0 <= self.min_effect < 1:
            raise ParamError("min_effect", f"must be in [0, 1), got {self.min_effect!r}")
        if not 0.5 <= self.confidence < 1:
            raise ParamError("confidence", f"must be in [0.5, 1), got {self.confidence!r}")

    @classmethod
    def preset(cls, quick: bool = False, device: str = "auto", **overrides: Any) -> LadderSettings:
        """CI-sized (``quick``), CPU-sized or GPU-sized settings; ``None`` overrides ignored.

        ``quick`` on a CPU: 256 JPEGs of 32 px, batch 32, 2 epochs (16 steps a run: the
        steady state outweighs a run's fixed costs, and the final rounds of 8 whole runs fit
        their 6+ paired rounds in ``max_seconds``); decisions train 4 batches an epoch, so
        a loader comparison gets its 6+ rounds within its budget (``decide_seconds`` for two
        entries, 1.5x that for three). At most 15 + 15 + 4 x 10 s of decisions, 45 s of
        final rounds and a few seconds of set-up: under two minutes on 2 quiet cores, and
        less when comparisons decide early.
        """
        dev = resolve_device(device)
        kind = "cpu" if dev.type == "cpu" else "gpu"  # a GPU step is fast: bigger, more batches
        base = dict(zip(_PRESET_FIELDS, _PRESETS[kind, bool(quick)], strict=True))
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(device=device, quick=quick, **(base | given))


def run_ladder(
    settings: LadderSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Decide the rungs, run kept rungs + ceiling + peers in paired rounds, return the report.

    Args:
        settings: sizes and budgets (default: ``LadderSettings.preset(quick=True)``).
        out_dir: if given, receives ``ladder.json``, ``ladder.md`` and ``ladder.png``.
        log: receives progress lines (default: stderr).

    Returns:
        The ``ladder.json`` content: ``rungs`` (status, reason, the decision's interval;
        for kept rungs samples/s, speedup and its interval, fraction of the ceiling, fixed
        costs, data stalls, peak memory), ``ceiling``, ``peers`` (with ``vs_best``),
        ``best``, ``targets``, ``hardware``, ``settings``, ``load_average``.
    """
    s = settings or LadderSettings.preset(quick=True)
    started = time.perf_counter()
    load_before = load_average()
    sink = log or (lambda line: print(line, file=sys.stderr))

    def log(line: str) -> None:
        sink(f"[{time.perf_counter() - started:4.0f} s] {line}")

    wl = Workload(s)
    hardware = describe_hardware(wl.device)
    log(f"ladder on {wl.device}: {wl.description}; batch {s.batch_size}, {s.epochs} epochs a run")
    climb = _Climb(wl, log)
    rungs = climb.run()  # decided; now measured whole, side by side
    sweep, records, missing = final_rounds(wl, rungs, log)
    result = report(wl, rungs, climb.loader_sweep, sweep, records, missing, hardware)
    result["targets"] = check_targets(result)
    result["load_average"] = {"before": load_before, "after": load_average()}
    result["elapsed_s"] = time.perf_counter() - started
    result = json_safe(result)
    if out_dir is not None:
        save_outputs(result, out_dir)
    return result
