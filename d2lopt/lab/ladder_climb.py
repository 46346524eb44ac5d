"""The ladder's climb: each rung decided against the best rung so far (``12_putting_it_together``).

A rung adds one optimization to the previous best and is *kept* only when
:func:`d2lopt.measure.compare` says it **holds**, measuring what the rung changes: loader
passes (through :func:`d2lopt.lab.bench.measure_loaders`, as ``d2lopt tune-loader``), training
passes for a compute switch, whole runs for the loop's hygiene. A rung the hardware cannot
use is *skipped* with the reason. :func:`d2lopt.lab.ladder.run_ladder` then runs the kept ones
whole, in the final rounds (:mod:`d2lopt.lab.ladder_final`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from ..config import TrainConfig
from ..devices import synchronize
from ..measure import Comparison, Sweep, compare
from ..verdict import HOLDS
from .bench import measure_loaders, run_pass, sweep_loaders
from .ladder_runs import (
    REJECTED,
    SKIPPED,
    Rung,
    Step,
    loader_label,
    main_process_loading,
    run_rung,
    train_step,
)
from .ladder_workload import Workload
from .tuning import default_workers

__all__ = ["pair"]


def _amp_candidate(device: torch.device) -> str:
    from ..devices import supports_bf16

    if device.type == "cuda":
        return "bf16" if supports_bf16(device) else "fp16"
    return "fp16" if device.type == "mps" else "bf16"


def pair(sweep: Sweep, slow: str, fast: str) -> dict:
    """How many times faster ``fast`` ran than ``slow`` in the same paired rounds.

    Judged with the sweep's own planned looks (:meth:`d2lopt.measure.Sweep.between`): its
    rounds stopped at one of them, so a fresh 95 % interval on them would peek.
    """
    c = sweep.between(fast, slow)
    return {"ratio": c.speedup, "ci": list(c.ci), "rounds": c.rounds, "text": str(c)}


def _step_settings(config: TrainConfig) -> tuple:
    """What a training step (``TrainStep`` via ``train_step``) reads from its config."""
    return (config.non_blocking, config.amp, config.channels_last, config.compile,
            config.lr, config.momentum, config.device)  # fmt: skip


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

    def loader_passes(self, loaders: dict[str, tuple[dict, TrainConfig]]):
        """Loader candidates vs the previous best's loader, each pass training every batch.

        Each loader is measured the way its own config runs: its batches copied with its
        ``non_blocking`` and trained by a step built from its config (one step per distinct
        step setting). A step built from the previous config would copy a pinned rung's
        labels blocking (``TrainStep``: ``y.to(device, non_blocking=False)`` is
        ``cudaMemcpyAsync`` + ``cudaStreamSynchronize``, pytorch/pytorch
        ``aten/src/ATen/native/cuda/Copy.cu``), so the rung would be measured without the
        overlap it claims, and the kept config would not be the one measured.
        """
        wl, s, prev = self.wl, self.s, self.best
        steps: dict[tuple, Step] = {}
        by_label: dict[str, Step] = {}
        for label, (_, config) in loaders.items():
            key = _step_settings(config)
            if key not in steps:
                steps[key] = train_step(wl.net(), config)
            by_label[label] = steps[key]
        makers = {
            label: functools.partial(wl.loader, spec, config, train=True)
            for label, (spec, config) in loaders.items()
        }
        return measure_loaders(
            makers,
            reference=loader_label(prev.loader, prev.config),
            epochs=s.epochs,
            max_batches=s.decide_batches,
            step=by_label,
            non_blocking={label: config.non_blocking for label, (_, config) in loaders.items()},
            **self._budget(len(makers)),
        )

    def step_passes(self, candidate: TrainConfig) -> tuple[Comparison, dict[str, Any]]:
        """The previous best's loader feeding the previous vs the candidate training step."""
        wl, s, prev = self.wl, self.s, self.best
        make = functools.partial(wl.loader, prev.loader, prev.config, train=True)
        before, after = train_step(wl.net(), prev.config), train_step(wl.net(), candidate)
        extra: dict[str, Any] = {}
        if candidate.compile:  # first-call compilation: a fixed cost, timed apart
            X, y = wl.device_batches(train=True, limit=1)[0]
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
        vs_processes = pair(sweep.sweep, proc_label, label)
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
        sweep = self.loader_passes(  # each measured with its own copies and step
            {loader_label(prev.loader, prev.config): (prev.loader, prev.config),
             label: (prev.loader, config)},
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
