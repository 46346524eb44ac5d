"""The optimization ladder: every lesson of the course, measured in one run (``d2lopt ladder``).

Taught in ``12_putting_it_together``. One workload (by default JPEG files on disk, decoded
and augmented per sample, and the course CNN; ``--dataset``/``--model`` swap in yours)
climbs rungs that each add **one** optimization to the best rung so far. A rung is *kept*
only when :func:`d2lopt.compare.compare` says it **holds** against that previous best;
otherwise it is *rejected*, with its interval. Each decision measures what the rung changes:

- loader rungs (worker processes, threads, pinned memory, GPU decode, decode once): passes of
  the training loader with the training step, through :func:`d2lopt.bench.measure_loaders`
  (the code ``d2lopt tune-loader`` measures with);
- compute rungs (AMP, ``channels_last``, ``torch.compile``): the same passes, one step each;
- loop hygiene: whole runs, since it changes the evaluation.

Then the kept rungs, the compute ceiling (the top rung's loop and evaluation on batches that
already sit on the device) and two peers (d2l's ``train_ch6``, Lightning's ``Trainer``) run
whole in the same paired rounds (:func:`d2lopt.compare.compare_many`): every figure gets an
interval against the baseline, and "ahead of a peer" means the interval of best/peer lies
above 1. Each run also reports its fixed costs (start-up to the first batch, the first
step's extra time: compilation) apart from its steady state, and its data stalls: the share
of the training loop spent waiting for the next batch.

Nothing is assumed: a rung the hardware cannot use is *skipped* with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bench import measure_loaders, run_pass, sweep_loaders
from .compare import Comparison, Sweep, compare, compare_many, ratio_interval
from .config import TrainConfig
from .data import notice_once
from .devices import resolve_device, synchronize
from .errors import ParamError
from .ladder_report import (
    PEERS,
    check_targets,
    describe_target,
    format_table,
    ladder_markdown,
    plot_ladder,
    save_outputs,
)
from .ladder_runs import (
    MEASURED,
    PEER_RUNS,
    REJECTED,
    SKIPPED,
    PeakMemory,
    Rung,
    RunStats,
    Step,
    Workload,
    d2l_train_ch6,
    load_user_data,
    load_user_model,
    loader_label,
    main_process_loading,
    run_ceiling,
    run_rung,
    train_step,
)
from .tuning import default_workers
from .verdict import HOLDS

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

KEPT = MEASURED  # a kept rung is measured in the final rounds
_PEER_INSTALL = {"d2l": "pip install --no-deps d2l==1.0.3", "lightning": "pip install lightning"}
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
        if dev.type == "cpu":
            base: dict[str, Any] = (
                dict(n_train=256, n_test=64, image_size=32, batch_size=32,
                     max_seconds=45.0, decide_seconds=10.0, decide_batches=4)
                if quick
                else dict(n_train=2048, n_test=512, image_size=64, batch_size=64,
                          max_seconds=120.0, decide_seconds=20.0, decide_batches=8)
            )  # fmt: skip
        else:  # a GPU step is fast: bigger batches, more of them, capped decision passes
            base = (
                dict(n_train=2048, n_test=512, image_size=64, batch_size=128,
                     max_seconds=30.0, decide_seconds=6.0, decide_batches=4)
                if quick
                else dict(n_train=16384, n_test=2048, image_size=64, batch_size=256,
                          max_seconds=120.0, decide_seconds=20.0, decide_batches=16)
            )  # fmt: skip
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(device=device, quick=quick, **(base | given))


def _amp_candidate(device: torch.device) -> str:
    from .devices import supports_bf16

    if device.type == "cuda":
        return "bf16" if supports_bf16(device) else "fp16"
    return "fp16" if device.type == "mps" else "bf16"


def _fmt_ci(est: float, lo: float, hi: float, rounds: int) -> str:
    interval = "[no interval]" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"
    return f"{est:.2f}x {interval}, {rounds} rounds"


def _pair(seconds: dict[str, list[float]], slow: str, fast: str, confidence: float) -> dict:
    """How many times faster ``fast`` ran than ``slow`` in the same paired rounds."""
    ratios = np.asarray(seconds[slow]) / np.asarray(seconds[fast])
    est, lo, hi = ratio_interval(ratios, confidence)
    return {
        "ratio": est,
        "ci": [lo, hi],
        "rounds": len(ratios),
        "text": _fmt_ci(est, lo, hi, len(ratios)),
    }


class _Climb:
    """Decide the rungs in order; each is kept only when compare says it holds."""

    def __init__(self, wl: Workload, log: Callable[[str], None]) -> None:
        self.wl, self.s, self.log = wl, wl.s, log
        self.best = Rung(
            "baseline",
            "the article's loop: num_workers=0, blocking copies, fp32, evaluate_loss on train "
            "and test every epoch",
            wl.base_config(),
        )
        self.rungs = [self.best]
        self.loader_sweep: list[dict[str, Any]] = []

    # -- bookkeeping
    def skip(self, name: str, adds: str, reason: str) -> None:
        self.rungs.append(Rung(name, adds, None, loader={}, status=SKIPPED, reason=reason))
        self.log(f"{name}: skipped ({reason})")

    def judge(self, cand: Rung, cmp: Comparison, measured: str, **extra: Any) -> None:
        decision = {
            "against": self.best.name,
            "measured": measured,
            "comparison": cmp.to_dict(),
            "summary": str(cmp),
            "verdict": cmp.verdict,
        } | extra
        cand.decision = decision
        if cmp.verdict == HOLDS:
            self.rungs.append(cand)
            self.best = cand
            self.log(f"{cand.name}: kept, {cmp} against {decision['against']}")
        else:
            cand.status = REJECTED
            cand.reason = f"{cmp} against {self.best.name}: {cmp.verdict}"
            if cmp.verdict != HOLDS and not cmp.decided:
                cand.reason += f" ({cmp.reason})"
            self.rungs.append(cand)
            self.log(f"{cand.name}: rejected, {cand.reason}")

    # -- measurements
    def _budget(self, entries: int = 2) -> dict[str, Any]:
        """``decide_seconds`` for a two-way comparison, half as much again per extra entry
        (every round runs every entry, and an interval needs 6 rounds)."""
        s = self.s
        return dict(
            device=self.wl.device,
            min_effect=s.min_effect,
            confidence=s.confidence,
            max_seconds=s.decide_seconds * (1 + 0.5 * (entries - 2)),
            warmup=s.warmup,
            max_rounds=s.max_rounds,
        )

    def loader_passes(self, loaders: dict[str, tuple[dict, TrainConfig]], **kw: Any):
        """Loader candidates vs the previous best's loader, each pass training every batch."""
        wl, s, prev = self.wl, self.s, self.best
        step = train_step(wl.net(), prev.config)
        makers = {
            label: functools.partial(wl.loader, spec, config, train=True)
            for label, (spec, config) in loaders.items()
        }
        return measure_loaders(
            makers,
            reference=loader_label(prev.loader, prev.config),
            epochs=s.epochs,
            max_batches=s.decide_batches,
            step=step,
            non_blocking=kw.get("non_blocking", prev.config.non_blocking),
            **self._budget(len(makers)),
        )

    def step_passes(self, candidate: TrainConfig) -> tuple[Comparison, dict[str, Any]]:
        """The previous best's loader feeding the previous vs the candidate training step."""
        wl, s, prev = self.wl, self.s, self.best
        make = functools.partial(wl.loader, prev.loader, prev.config, train=True)
        before, after = train_step(wl.net(), prev.config), train_step(wl.net(), candidate)
        extra: dict[str, Any] = {}
        if candidate.compile:  # first-call compilation: a fixed cost, timed apart
            X, y = wl.device_batches(train=True)[0]
            t0 = time.perf_counter()
            after(X, y)
            synchronize(wl.device)
            extra["compile_s"] = time.perf_counter() - t0

        def passes(step: Step) -> Callable[[], Any]:
            return functools.partial(
                run_pass, make, epochs=s.epochs, max_batches=s.decide_batches,
                device=wl.device, non_blocking=prev.config.non_blocking, step=step,
            )  # fmt: skip

        cmp = compare(passes(before), passes(after), number=1, **self._budget())
        return cmp, extra

    # -- the rungs
    def workers(self) -> None:
        name, wl, s, prev = "+ loader workers", self.wl, self.s, self.best
        counts = default_workers()[1:][-4:]  # the 4 largest counts: a sweep fits its budget
        grid = [{"num_workers": 0}] + [
            {"num_workers": w, "prefetch_factor": 2, "persistent_workers": True} for w in counts
        ]
        self.log(f"{name}: {len(grid)} loader settings, each pass training every batch")
        sweep = sweep_loaders(
            wl.train_set,
            grid,
            batch_size=s.batch_size,
            seed=s.seed,
            epochs=s.epochs,
            max_batches=s.decide_batches,
            step=train_step(wl.net(), prev.config),
            **self._budget(len(grid)),
        )
        self.loader_sweep = [run.to_dict() for run in sweep.runs.values()]
        others = [r for r in sweep.runs.values() if r.vs_reference is not None]
        pick = (
            sweep.best()
            if sweep.best().vs_reference is not None
            else max(others, key=lambda r: r.vs_reference.speedup)
        )
        w = pick.settings["num_workers"]
        cand = Rung(
            name,
            f"{w} worker process{'es' if w > 1 else ''} (prefetch_factor=2, persistent), "
            f"the best of {len(grid)} settings",
            replace(prev.config, num_workers=w, prefetch_factor=2, persistent_workers=True),
            loader={"kind": "dataloader"},
            loop=prev.loop,
        )
        measured = "loader passes, training every batch (the sweep of d2lopt tune-loader)"
        self.judge(cand, pick.vs_reference, measured, setting=pick.label)

    def threads(self) -> None:
        name, prev = "+ loader threads", self.best
        n = default_workers()[-1]
        spec, config = {"kind": "threads", "threads": n}, main_process_loading(prev.config)
        loaders = {loader_label(prev.loader, prev.config): (prev.loader, prev.config)}
        label = loader_label(spec, config)
        loaders[label] = (spec, config)
        processes = replace(prev.config, num_workers=n, prefetch_factor=2, persistent_workers=True)
        proc_label = loader_label({"kind": "dataloader"}, processes)
        if proc_label not in loaders:  # threads against as many worker processes, same rounds
            loaders[proc_label] = ({"kind": "dataloader"}, processes)
        self.log(f"{name}: {label} against {', '.join(k for k in loaders if k != label)}")
        sweep = self.loader_passes(loaders)
        vs_processes = _pair(sweep.sweep.seconds, proc_label, label, self.s.confidence)
        cand = Rung(
            name,
            f"{n} threads build the batches in the main process, instead of worker processes",
            config,
            loader=spec,
            loop=prev.loop,
        )
        self.judge(
            cand,
            sweep.runs[label].vs_reference,
            "loader passes, training every batch",
            loader_runs=[r.to_dict() for r in sweep.runs.values()],
            threads_vs_processes=vs_processes,
        )

    def pinned(self) -> None:
        name, adds = "+ pin_memory/non_blocking", "page-locked batches, asynchronous copies"
        wl, prev = self.wl, self.best
        if wl.device.type != "cuda":
            self.skip(
                name,
                adds,
                f"needs CUDA; on {wl.device.type} no batch crosses a host-to-device link",
            )
            return
        config = replace(prev.config, pin_memory=True, non_blocking=True)
        label = loader_label(prev.loader, config)
        sweep = self.loader_passes(
            {loader_label(prev.loader, prev.config): (prev.loader, prev.config),
             label: (prev.loader, config)},
            non_blocking=True,  # pageable memory copies synchronously all the same
        )  # fmt: skip
        cand = Rung(name, adds, config, loader=prev.loader, loop=prev.loop)
        self.judge(cand, sweep.runs[label].vs_reference, "loader passes, training every batch",
                   loader_runs=[r.to_dict() for r in sweep.runs.values()])  # fmt: skip

    def gpu_decode(self) -> None:
        name = "+ GPU decode"
        adds = "JPEG bytes read once; each batch decoded by one batched decode_jpeg on the GPU"
        wl = self.wl
        if not wl.images:
            self.skip(
                name, adds, "needs JPEG files d2lopt can read: --dataset gives decoded samples"
            )
            return
        if wl.device.type != "cuda":
            self.skip(name, adds, "needs CUDA (nvJPEG)")
            return
        self._loader_rung(name, adds, {"kind": "gpu_decode"})

    def decode_once(self) -> None:
        name, wl = "+ decode once", self.wl
        if not wl.images:
            self.skip(
                name,
                "uint8 cache + batched augmentation on the device",
                "needs image files whose decoding d2lopt can split from the augmentation; your "
                "--dataset's __getitem__ is opaque (its transform may be random), so caching "
                "its output would change what the model sees",
            )
            return
        need = wl.decoded_mib()
        if wl.device.type == "cuda":
            free = torch.cuda.mem_get_info(wl.device)[0] / 2**20
        else:
            import psutil

            free = psutil.virtual_memory().available / 2**20
        adds = (
            f"every image decoded once into a {need:.1f} MiB uint8 cache on the {wl.device.type}, "
            "then random crop + flip as one batched kernel per batch"
        )
        if need > 0.5 * free:
            self.skip(
                name, adds, f"the cache needs {need:.0f} MiB, over half the {free:.0f} MiB free"
            )
            return
        self._loader_rung(name, adds, {"kind": "decode_once", "cache_mib": need})

    def _loader_rung(self, name: str, adds: str, spec: dict[str, Any]) -> None:
        prev = self.best
        config = main_process_loading(prev.config)
        label = loader_label(spec, config)
        self.log(f"{name}: {label} against {loader_label(prev.loader, prev.config)}")
        sweep = self.loader_passes(
            {loader_label(prev.loader, prev.config): (prev.loader, prev.config),
             label: (spec, config)}
        )  # fmt: skip
        cand = Rung(name, adds, config, loader=spec, loop=prev.loop)
        self.judge(cand, sweep.runs[label].vs_reference, "loader passes, training every batch",
                   loader_runs=[r.to_dict() for r in sweep.runs.values()])  # fmt: skip

    def step_rung(self, name: str, adds: str, change: dict[str, Any]) -> None:
        prev = self.best
        candidate = replace(prev.config, **change)
        self.log(f"{name}: training passes with and without it")
        try:
            cmp, extra = self.step_passes(candidate)
        except Exception as exc:  # e.g. torch.compile without a C++ compiler: say why, go on
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            self.skip(name, adds, f"failed here: {type(exc).__name__}: {first}")
            return
        cand = Rung(name, adds, candidate, loader=prev.loader, loop=prev.loop)
        self.judge(cand, cmp, "training passes (the loader feeding the step)", **extra)

    def hygiene(self) -> None:
        prev, s = self.best, self.s
        cand = Rung(
            "+ loop hygiene",
            "d2lopt.fit: evaluate the test set once at the end, not train+test every epoch; "
            "loss summed on the device (no per-batch syncs)",
            replace(prev.config, eval_every=s.epochs),
            loader=prev.loader,
            loop="fit",
        )
        self.log(f"{cand.name}: whole runs with the article's loop and with d2lopt.fit")
        cmp = compare(
            functools.partial(run_rung, self.wl, prev),
            functools.partial(run_rung, self.wl, cand),
            number=1,
            **self._budget(),
        )
        self.judge(cand, cmp, "whole runs (training and evaluation)")

    def run(self) -> list[Rung]:
        wl, s = self.wl, self.s
        self.workers()
        self.threads()
        self.pinned()
        self.gpu_decode()
        self.decode_once()
        amp = _amp_candidate(wl.device)
        self.step_rung("+ AMP", f"autocast to {amp}", {"amp": amp})
        self.hygiene()
        if len(wl.batch_shape) == 3:
            self.step_rung(
                "+ channels_last",
                "NHWC memory format for the convolutions",
                {"channels_last": True},
            )
        else:
            self.skip(
                "+ channels_last",
                "NHWC memory format for the convolutions",
                f"needs 4-D image batches; --dataset gives samples of shape {wl.batch_shape}",
            )
        if s.compile:
            self.step_rung("+ torch.compile", "compiled model (inductor)", {"compile": True})
        else:
            self.skip(
                "+ torch.compile",
                "compiled model (inductor)",
                "optional: add --compile (its first-call compilation is timed apart)",
            )
        return self.rungs


# ------------------------------------------------------------------------------ final rounds
def _final_rounds(
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


def _row(name: str, sweep: Sweep, recs: list[RunStats], confidence: float) -> dict[str, Any]:
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
        f = _pair(sweep.seconds, name, "ceiling", confidence)  # entry time / ceiling time
        row |= {
            "fraction_of_ceiling": 1 / f["ratio"],
            "fraction_ci": [1 / f["ci"][1], 1 / f["ci"][0]],
        }
    return row


def _hardware(device: torch.device) -> dict[str, Any]:
    from .devices import accelerator_name
    from .envinfo import environment_report

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


def _json_safe(obj: Any) -> Any:
    """NaN (an interval that needs more rounds) as null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


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
    load_before = _load_average()
    sink = log or (lambda line: print(line, file=sys.stderr))

    def log(line: str) -> None:
        sink(f"[{time.perf_counter() - started:4.0f} s] {line}")

    wl = Workload(s)
    hardware = _hardware(wl.device)
    log(f"ladder on {wl.device}: {wl.description}; batch {s.batch_size}, {s.epochs} epochs a run")
    climb = _Climb(wl, log)
    rungs = climb.run()  # decided; now measured whole, side by side
    sweep, records, missing = _final_rounds(wl, rungs, log)
    conf = s.confidence
    rows = {name: _row(name, sweep, recs, conf) for name, recs in records.items()}

    rung_rows = []
    for r in rungs:
        rung_rows.append(
            {
                "name": r.name,
                "adds": r.adds,
                "status": r.status,
                "reason": r.reason,
                "loop": r.loop if r.config is not None else None,
                "loader": r.loader or None,
                "config": r.config.to_dict() if r.config is not None else None,
                "decision": r.decision,
            }
            | rows.get(r.name, {"samples_per_s": None, "speedup": None})
        )
    top = [r for r in rungs if r.status == KEPT][-1]
    peers: dict[str, Any] = {}
    for key, label in PEERS.items():
        if label in rows:
            vs = _pair(sweep.seconds, label, top.name, conf)  # peer time / best time
            peers[key] = {"name": label, "status": MEASURED, "vs_best": vs} | rows[label]
        else:
            peers[key] = {"name": label, "status": SKIPPED, "reason": missing[key]}
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
        "loader_sweep": climb.loader_sweep,  # LoaderRun.to_dict() rows, as tune-loader's
        "final_rounds": sweep.rounds,
    }
    result["targets"] = check_targets(result)
    result["load_average"] = {"before": load_before, "after": _load_average()}
    result["elapsed_s"] = time.perf_counter() - started
    result = _json_safe(result)
    if out_dir is not None:
        save_outputs(result, out_dir)
    return result
