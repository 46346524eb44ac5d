"""The optimization ladder: every lesson of the course, measured in one run (``d2lopt ladder``).

Taught in ``12_putting_it_together``. One workload (encoded images on disk, decoded and
augmented per sample; the course CNN) climbs rungs that each add one optimization to the
rung below: from the article's literal loop to the course's :func:`d2lopt.fit`. The same run
measures the *compute ceiling* (same model and batch size, batches already on the device)
and two peers: d2l's ``train_ch6`` loop and Lightning's ``Trainer``.

Nothing is assumed and nothing is invented. ``pin_memory``/``non_blocking`` need CUDA and are
*skipped* elsewhere; AMP, ``channels_last`` and ``torch.compile`` are kept only where a probe
shows they speed up the training step on this hardware (*rejected* otherwise, with the
probe's numbers). Rungs, ceiling and peers are timed in interleaved rounds after a warm-up
round, so drift hits all alike; each reports its median.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import json
import logging
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .article import article_evaluate_loss, article_fit
from .config import TrainConfig
from .devices import resolve_device, synchronize
from .models import cnn, init_weights
from .precision import autocast_ctx, grad_scaler
from .timing import benchmark
from .train import fit, make_loader, notice_once
from .tuning import (
    DEFAULT,
    best_of,
    default_workers,
    standard_dataset,
    sweep_grid,
    sweep_loader,
)
from .verdict import HOLDS, judge_speedup

__all__ = [
    "LadderSettings",
    "Rung",
    "run_ladder",
    "d2l_train_ch6",
    "check_targets",
    "describe_target",
    "format_table",
    "ladder_markdown",
    "plot_ladder",
    "save_outputs",
    "add_command",
]

MEASURED, SKIPPED, REJECTED = "measured", "skipped", "rejected"
PEERS = {"d2l": "peer: d2l train_ch6 loop", "lightning": "peer: Lightning Trainer"}
_PEER_INSTALL = {"d2l": "pip install --no-deps d2l==1.0.3", "lightning": "pip install lightning"}


@dataclass(frozen=True)
class LadderSettings:
    """Sizes and repeats of one ladder run; :meth:`preset` scales them to the hardware."""

    n_train: int = 1024
    n_test: int = 256
    image_size: int = 64
    batch_size: int = 64
    epochs: int = 3
    rounds: int = 3
    warmup: int = 1
    sweep_batches: int = 4  # batches per pass in the loader sweep (rung 2)
    sweep_rounds: int = 2
    probe_time: float = 0.3  # seconds per timed block in the AMP/channels_last/compile probes
    lr: float = 0.05
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    data_dir: str | None = None
    quick: bool = False  # informational: which preset the sizes came from

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}: must be an int, got {value!r}")
        for name in (
            "n_train",
            "n_test",
            "batch_size",
            "epochs",
            "rounds",
            "sweep_batches",
            "sweep_rounds",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"image_size: must be >= 8 (the CNN pools 3x), got {self.image_size}")
        if self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size: {self.batch_size} exceeds n_train={self.n_train}; use a smaller "
                "batch or more training images"
            )
        if self.n_test > 10_000:
            raise ValueError(f"n_test: the test split has 10000 images, got {self.n_test}")
        for name in ("lr", "probe_time"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, quick: bool = False, device: str = "auto", **overrides: Any) -> LadderSettings:
        """CI-sized (``quick``), CPU-sized or GPU-sized settings; ``None`` overrides ignored."""
        dev = resolve_device(device)
        if quick:  # small for CI: the whole run stays under two minutes on 2 CPU cores
            base = dict(
                n_train=128,
                n_test=64,
                image_size=32,
                batch_size=32,
                epochs=2,
                rounds=3,
                sweep_batches=2,
                sweep_rounds=2,
                probe_time=0.1,
            )
        elif dev.type == "cpu":
            base = dict(n_train=1024, n_test=256, image_size=64, batch_size=64, epochs=3)
        else:
            base = dict(
                n_train=8192, n_test=2048, image_size=64, batch_size=256, epochs=3, sweep_batches=8
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(device=device, quick=quick, **(base | given))


@dataclass
class Rung:
    """One step of the ladder: what it adds, and whether it was measured here."""

    name: str
    adds: str
    config: TrainConfig | None
    loop: str = "article"  # "article": the article's loop (+ switches); "fit": d2lopt.fit
    status: str = MEASURED
    reason: str = ""
    probe: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ workload
class _Workload:
    """The standard workload: JPEG folders on disk (decode + augment per sample), the CNN."""

    def __init__(self, s: LadderSettings) -> None:
        self.s = s
        self.device = resolve_device(s.device)
        root, size = s.data_dir, s.image_size
        self.train_set = standard_dataset(s.n_train, size, train=True, root=root)
        self.test_set = standard_dataset(s.n_test, size, train=False, root=root)
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def base_config(self) -> TrainConfig:
        s = self.s  # the article's settings: num_workers=0, blocking copies, fp32, eval each epoch
        return TrainConfig(
            num_epochs=s.epochs,
            batch_size=s.batch_size,
            device=str(self.device),
            lr=s.lr,
            seed=s.seed,
        )

    def net(self) -> nn.Module:
        torch.manual_seed(self.s.seed)  # every rung and peer starts from the same weights
        net = cnn(in_channels=3)
        net.apply(init_weights)
        return net

    def loaders(self, config: TrainConfig) -> tuple[DataLoader, DataLoader]:
        return (
            make_loader(self.train_set, config, train=True),
            make_loader(self.test_set, config, train=False),
        )

    def device_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One augmented epoch, decoded once and kept on the device: the ceiling's input."""
        if self._batches is None:
            loader = DataLoader(self.train_set, batch_size=self.s.batch_size)
            self._batches = [(X.to(self.device), y.to(self.device)) for X, y in loader]
        return self._batches


Step = Callable[[torch.Tensor, torch.Tensor], None]


def _train_step(net: nn.Module, config: TrainConfig) -> Step:
    """The step of :func:`d2lopt.fit` without the loader: the compute all rungs share."""
    device = config.torch_device
    net.to(device).train()
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if config.compile else net
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    autocast, scaler = autocast_ctx(device, config.amp), grad_scaler(device, config.amp)

    def step(X: torch.Tensor, y: torch.Tensor) -> None:
        if config.channels_last:
            X = X.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = criterion(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.mean()).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


# ------------------------------------------------------------------------------ the loops
def _article_loop(
    net: nn.Module, train_loader: DataLoader, test_loader: DataLoader, config: TrainConfig
) -> None:
    """The article's loop with the switches of rungs 3-4; with both off it *is* article_fit."""
    device = config.torch_device
    net.to(device)
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    if not config.non_blocking and config.amp == "off":
        article_fit(net, train_loader, test_loader, criterion, optimizer, config.num_epochs, device)
        return
    nb = config.non_blocking  # rung 3: async copies, effective from pinned batches only
    autocast, scaler = autocast_ctx(device, config.amp), grad_scaler(device, config.amp)  # rung 4
    for _ in range(config.num_epochs):
        for X, y in train_loader:
            X, y = X.to(device, non_blocking=nb), y.to(device, non_blocking=nb)
            with autocast:
                loss = criterion(net(X), y)
            optimizer.zero_grad()
            scaler.scale(loss.mean()).backward()
            scaler.step(optimizer)
            scaler.update()
        with autocast:  # the article's evaluation, unchanged: train and test, a sync per batch
            article_evaluate_loss(net, train_loader, criterion, device)
            article_evaluate_loss(net, test_loader, criterion, device)


def d2l_train_ch6(
    net: nn.Module,
    train_iter: DataLoader,
    test_iter: DataLoader,
    num_epochs: int,
    lr: float,
    device: torch.device,
    momentum: float = 0.0,
) -> dict[str, float]:
    """d2l's ``train_ch6`` (d2l 1.0.3) with its own ``Accumulator``, ``Timer`` and helpers.

    Left out: its ``Animator`` plot, its prints and its re-initialization (the net comes
    initialized like every rung's). ``momentum`` lets the ladder match its optimizer, so the
    comparison is loop against loop.
    """
    from d2l import torch as d2l

    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    loss = nn.CrossEntropyLoss()
    timer = d2l.Timer()
    train_l = train_acc = test_acc = math.nan
    metric = d2l.Accumulator(3)
    for _ in range(num_epochs):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = d2l.Accumulator(3)
        net.train()
        for X, y in train_iter:
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            ls = loss(y_hat, y)
            ls.backward()
            optimizer.step()
            with torch.no_grad():  # float() of the loss and accuracy: host syncs every batch
                metric.add(ls * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l, train_acc = metric[0] / metric[2], metric[1] / metric[2]
        test_acc = d2l.evaluate_accuracy_gpu(net, test_iter)
    return {
        "train_loss": train_l,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "examples_per_s": metric[2] * num_epochs / timer.sum(),
    }


@functools.cache
def _lightning_module() -> type:
    import lightning as L

    class LadderModule(L.LightningModule):
        """The course CNN in Lightning: same loss, optimizer and memory format as the rungs."""

        def __init__(self, net: nn.Module, config: TrainConfig) -> None:
            super().__init__()
            self.net, self.config = net, config
            self.criterion = nn.CrossEntropyLoss(reduction="none")

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            X, y = batch
            if self.config.channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            return self.criterion(self.net(X), y).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            X, y = batch
            self.log("test_loss", self.criterion(self.net(X), y).mean(), batch_size=len(y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            c = self.config
            return torch.optim.SGD(self.net.parameters(), lr=c.lr, momentum=c.momentum)

    return LadderModule


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning announces devices and tips on every Trainer: the ladder compares loops."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            # torch 2.10+ deprecates LeafSpec, which Lightning 2.6 still builds on every step
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ------------------------------------------------------------------------------ entries
def _run_rung(wl: _Workload, rung: Rung, epochs: int) -> int:
    assert rung.config is not None
    # fit() evaluates once, after the last epoch; the article's loop evaluates every epoch
    config = replace(rung.config, num_epochs=epochs, eval_every=epochs)
    net = wl.net()
    train_loader, test_loader = wl.loaders(config)
    if rung.loop == "fit":
        fit(net, train_loader, test_loader, config, progress=False)
    else:
        _article_loop(net, train_loader, test_loader, config)
    return epochs * len(wl.train_set)


def _run_ceiling(wl: _Workload, config: TrainConfig, epochs: int) -> int:
    step = _train_step(wl.net(), config)
    batches = wl.device_batches()  # no loading at all: the speed limit of the pipeline
    for _ in range(epochs):
        for X, y in batches:
            step(X, y)
    return epochs * sum(len(y) for _, y in batches)


def _peer_net(wl: _Workload, config: TrainConfig) -> nn.Module:
    net = wl.net()
    if config.channels_last:  # a model-level setting: the peer's own loop is untouched
        net.to(memory_format=torch.channels_last)
    return net


def _run_d2l(wl: _Workload, config: TrainConfig, epochs: int) -> int:
    config = replace(config, num_epochs=epochs)
    train_iter, test_iter = wl.loaders(config)
    # bf16 autocast needs no loop change (no GradScaler): d2l gets it; fp16 it cannot
    amp = autocast_ctx(wl.device, config.amp) if config.amp == "bf16" else contextlib.nullcontext()
    with amp:
        d2l_train_ch6(
            _peer_net(wl, config),
            train_iter,
            test_iter,
            epochs,
            config.lr,
            wl.device,
            config.momentum,
        )
    return epochs * len(wl.train_set)


def _run_lightning(wl: _Workload, config: TrainConfig, epochs: int) -> int:
    import lightning as L

    config = replace(config, num_epochs=epochs)
    train_loader, test_loader = wl.loaders(config)
    dev = wl.device
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator={"cuda": "gpu", "mps": "mps"}.get(dev.type, "cpu"),
            devices=[dev.index or 0] if dev.type == "cuda" else 1,
            precision={"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[config.amp],
            max_epochs=epochs,
            check_val_every_n_epoch=epochs,  # evaluate once, at the end, like the fit rungs
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(_lightning_module()(_peer_net(wl, config), config), train_loader, test_loader)
    return epochs * len(wl.train_set)


# ------------------------------------------------------------------------------ the plan
def _probe(wl: _Workload, before: TrainConfig, after: TrainConfig) -> dict[str, Any]:
    """Training-step speed of ``after`` vs ``before`` on device-resident batches, alternated."""
    X, y = wl.device_batches()[0]
    steps = {"before": _train_step(wl.net(), before), "after": _train_step(wl.net(), after)}
    speeds: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(3):
        for key, step in steps.items():
            r = benchmark(
                lambda step=step: step(X, y), device=wl.device, min_run_time=wl.s.probe_time
            )
            speeds[key].append(len(X) / r.median)
    b, a = statistics.median(speeds["before"]), statistics.median(speeds["after"])
    return {
        "before_samples_per_s": b,
        "after_samples_per_s": a,
        "speedup": a / b,
        "verdict": judge_speedup(a / b),
    }


def _amp_candidate(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp16" if device.type == "mps" else "bf16"


def _plan(wl: _Workload, log: Callable[[str], None]) -> tuple[list[Rung], list[dict]]:
    """Decide every rung's config from quick measurements, before the timed rounds."""
    s, dev = wl.s, wl.device
    cur = wl.base_config()
    rungs = [
        Rung(
            "baseline",
            "the article's loop: num_workers=0, blocking copies, fp32, "
            "evaluate_loss on train and test every epoch",
            cur,
        )
    ]

    # 2. loader workers: a sweep that trains on each batch, so contention with compute counts
    step = _train_step(wl.net(), cur)
    grid = sweep_grid(default_workers(), prefetch=(2, 4), persistent=(False, True))
    log(f"rung 2: sweeping {len(grid)} loader settings (training on each batch)")
    results = sweep_loader(
        wl.train_set,
        grid,
        batch_size=s.batch_size,
        epochs=2,
        max_batches=s.sweep_batches,
        rounds=s.sweep_rounds,
        device=dev,
        consume=lambda X, y: step(X, y.to(dev)),
        seed=s.seed,
    )
    winner = best_of(results)
    default = next(r for r in results if r.setting == DEFAULT)
    gain = winner.samples_per_s / default.samples_per_s
    probe = {
        "before_samples_per_s": default.samples_per_s,
        "after_samples_per_s": winner.samples_per_s,
        "speedup": gain,
        "verdict": judge_speedup(gain),
        "setting": winner.setting.label(),
    }
    best = winner.setting
    adds = (
        f"num_workers={best.num_workers}, prefetch_factor={best.prefetch_factor}, "
        f"persistent_workers={best.persistent_workers} (best of {len(grid)} in a quick sweep)"
    )
    if best.num_workers and probe["verdict"] == HOLDS:  # workers must clearly beat none
        cur = replace(
            cur,
            num_workers=best.num_workers,
            prefetch_factor=best.prefetch_factor,
            persistent_workers=best.persistent_workers,
        )
        rungs.append(Rung("+ loader workers", adds, cur, probe=probe))
    else:
        rungs.append(
            Rung(
                "+ loader workers",
                "worker processes",
                None,
                status=REJECTED,
                probe=probe,
                reason=f"no setting beat num_workers=0 by 10% in the sweep (best: "
                f"{best.label()}, {gain:.2f}x)",
            )
        )

    # 3. pinned memory + non_blocking copies: only a CUDA host->device copy can use them
    if dev.type == "cuda":
        cur = replace(cur, pin_memory=True, non_blocking=True)
        rungs.append(Rung("+ pin_memory/non_blocking", "page-locked batches, async copies", cur))
    else:
        rungs.append(
            Rung(
                "+ pin_memory/non_blocking",
                "page-locked batches, async copies",
                None,
                status=SKIPPED,
                reason=f"needs a CUDA GPU; on {dev.type} no batch crosses a host-to-device link",
            )
        )

    # 4-6 (+7): kept only where the training step gets faster here
    amp = _amp_candidate(dev)
    optional = [
        ("+ AMP", f"autocast to {amp}", {"amp": amp}),
        (
            "+ loop hygiene",
            "d2lopt.fit: evaluate once at the end, not train+test every epoch; "
            "loss summed on the device (no per-batch syncs)",
            None,
        ),
        ("+ channels_last", "NHWC memory format for the convolutions", {"channels_last": True}),
        ("+ torch.compile", "compiled model (inductor)", {"compile": True}),
    ]
    for name, adds, change in optional:
        if change is None:  # loop hygiene: a different loop, measured in the rounds
            cur = replace(cur, eval_every=s.epochs)
            rungs.append(Rung(name, adds, cur, loop="fit"))
            continue
        if "compile" in change and not s.compile:
            rungs.append(
                Rung(
                    name,
                    adds,
                    None,
                    status=SKIPPED,
                    reason="optional: add --compile (compiling takes minutes on CPU)",
                )
            )
            continue
        candidate = replace(cur, **change)
        log(f"{name}: probing the training step")
        try:
            probe = _probe(wl, cur, candidate)
        except Exception as exc:  # e.g. torch.compile without a C++ compiler: say why, go on
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            rungs.append(
                Rung(
                    name,
                    adds,
                    None,
                    status=SKIPPED,
                    reason=f"failed here: {type(exc).__name__}: {first}",
                )
            )
            continue
        loop = _last_loop(rungs)  # the loop of the rung below
        if probe["verdict"] == HOLDS:
            cur = candidate
            rungs.append(Rung(name, adds, cur, loop=loop, probe=probe))
        else:
            rungs.append(
                Rung(
                    name,
                    adds,
                    candidate,
                    loop=loop,
                    status=REJECTED,
                    probe=probe,
                    reason=f"training step {probe['speedup']:.2f}x as fast (probe): not kept",
                )
            )
    return rungs, [r.to_dict() for r in results]


def _last_loop(rungs: list[Rung]) -> str:
    return next(r.loop for r in reversed(rungs) if r.status == MEASURED)


# ------------------------------------------------------------------------------ measuring
def _tree_memory() -> int | None:
    """Bytes held by this process and its children (loader workers), or None if unknown.

    Linux: proportional set size (PSS: a page shared by a forked worker and its parent
    counts half for each), read from ``/proc`` in well under a millisecond per process.
    Elsewhere: resident sizes through psutil, when installed.
    """
    if Path("/proc/self/smaps_rollup").exists():
        total, todo = 0, [str(os.getpid())]
        while todo:
            pid = todo.pop()
            with contextlib.suppress(OSError, ValueError):  # a worker that just exited
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += (task / "children").read_text().split()
        return total
    try:
        import psutil
    except ImportError:
        return None
    proc = psutil.Process()
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class _PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; elsewhere the memory of
    this process and its loader workers (:func:`_tree_memory`), sampled every 100 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._thread = device, 0, None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _tree_memory() or 0)
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _tree_memory() is None:
            notice_once("memory", "peak memory is not measured here: pip install psutil")
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak / 2**20 if self.peak else None


def _measure(
    entries: dict[str, Callable[[int], int]],
    s: LadderSettings,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Warm-up rounds (one epoch each, not recorded), then interleaved timed rounds."""
    for w in range(s.warmup):
        for run in entries.values():
            run(1)  # imports, page cache, allocator, worker start-up paths, compilation
            gc.collect()
        log(f"warm-up round {w + 1}/{s.warmup} done")
    stats: dict[str, dict[str, Any]] = {
        k: {"seconds": [], "peak_memory_mib": None} for k in entries
    }
    names = list(entries)
    for r in range(s.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            with _PeakMemory(device) as mem:
                synchronize(device)
                start = time.perf_counter()
                samples = entries[name](s.epochs)
                synchronize(device)  # queued GPU work belongs to this entry's time
                seconds = time.perf_counter() - start
            gc.collect()  # Lightning's reference cycles hold loaders (and workers) otherwise
            st = stats[name]
            st["seconds"].append(seconds)
            st["samples"] = samples
            if mem.mib is not None:
                st["peak_memory_mib"] = max(st["peak_memory_mib"] or 0.0, mem.mib)
        log(
            f"round {r + 1}/{s.rounds}: "
            + ", ".join(f"{n} {stats[n]['samples'] / stats[n]['seconds'][-1]:.0f}/s" for n in names)
        )
    for st in stats.values():
        st["samples_per_s"] = st["samples"] / statistics.median(st["seconds"])
    return stats


def _hardware(device: torch.device) -> dict[str, Any]:
    from .envinfo import environment_report

    rep = environment_report()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import platform

    cpu = cpu or platform.processor() or platform.machine()
    name = (
        cpu
        if device.type == "cpu"
        else (torch.cuda.get_device_name(device) if device.type == "cuda" else "Apple MPS")
    )
    keys = (
        "python",
        "platform",
        "torch",
        "torchvision",
        "cpu_cores",
        "torch_threads",
        "memory_gib",
        "cpu_bf16_units",
        "cuda_version",
        "gpus",
        "mps_available",
    )
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


def run_ladder(
    settings: LadderSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Plan the rungs, time rungs + ceiling + peers in interleaved rounds, return the report.

    Args:
        settings: sizes and repeats (default: ``LadderSettings.preset(quick=True)``).
        out_dir: if given, receives ``ladder.json``, ``ladder.md`` and ``ladder.png``.
        log: receives progress lines (default: stderr).

    Returns:
        The ``ladder.json`` content: ``device``, ``rungs`` (``name``, ``status``,
        ``samples_per_s``, ``speedup``, ...), ``ceiling_samples_per_s``, ``peers``, ``best``,
        ``targets``, ``hardware``, ``settings``.
    """
    s = settings or LadderSettings.preset(quick=True)
    started = time.perf_counter()
    sink = log or (lambda line: print(line, file=sys.stderr))

    def log(line: str) -> None:
        sink(f"[{time.perf_counter() - started:4.0f} s] {line}")

    wl = _Workload(s)
    hardware = _hardware(wl.device)
    log(
        f"ladder on {wl.device}: {s.n_train} train / {s.n_test} test JPEGs of {s.image_size}px,"
        f" batch {s.batch_size}, {s.epochs} epochs, {s.rounds} rounds"
    )
    rungs, sweep = _plan(wl, log)
    top = next(r.config for r in reversed(rungs) if r.status == MEASURED)
    entries: dict[str, Callable[[int], int]] = {
        f"rung:{r.name}": functools.partial(_run_rung, wl, r) for r in rungs if r.status == MEASURED
    }
    entries["ceiling"] = functools.partial(_run_ceiling, wl, top)
    peers = {"d2l": _run_d2l, "lightning": _run_lightning}
    for key, run in peers.items():
        if importlib.util.find_spec(key) is not None:
            entries[f"peer:{key}"] = functools.partial(run, wl, top)
        else:  # a peer is a comparison, not a requirement: say so and go on without it
            notice_once(
                f"peer-{key}",
                f"{key} is not installed, so its peer is skipped: {_PEER_INSTALL[key]}",
            )
    stats = _measure(entries, s, wl.device, log)

    base = stats["rung:baseline"]["samples_per_s"]
    ceiling = stats["ceiling"]["samples_per_s"]

    def row(st: dict[str, Any]) -> dict[str, Any]:
        sps = st["samples_per_s"]
        return {
            "samples_per_s": sps,
            "speedup": sps / base,
            "fraction_of_ceiling": sps / ceiling,
            "peak_memory_mib": st["peak_memory_mib"],
            "seconds": st["seconds"],
        }

    rung_rows = []
    for r in rungs:
        measured = stats.get(f"rung:{r.name}")
        rung_rows.append(
            {
                "name": r.name,
                "adds": r.adds,
                "status": r.status,
                "reason": r.reason,
                "loop": r.loop if r.config is not None else None,
                "config": r.config.to_dict() if r.config is not None else None,
                "probe": r.probe,
            }
            | (row(measured) if measured else {"samples_per_s": None, "speedup": None})
        )
    best = max((r for r in rung_rows if r["status"] == MEASURED), key=lambda r: r["samples_per_s"])
    result: dict[str, Any] = {
        "device": f"{wl.device}: {hardware['name']}"
        + (f", {hardware['cpu_cores']} cores" if wl.device.type == "cpu" else ""),
        "device_type": wl.device.type,
        "hardware": hardware,
        "versions": _versions(),
        "workload": f"{s.n_train} JPEGs of {s.image_size}px on disk, decoded and augmented per "
        f"sample (RandomResizedCrop + flip), {s.n_test} test images; "
        "d2lopt.models.cnn(in_channels=3)",
        "settings": asdict(s),
        "memory_kind": "CUDA allocator peak"
        if wl.device.type == "cuda"
        else "peak PSS of the process and its loader workers (host memory)",
        "rungs": rung_rows,
        "ceiling_samples_per_s": ceiling,
        "ceiling": row(stats["ceiling"]) | {"config": top.to_dict()},
        "peers": {
            k: stats[f"peer:{k}"]["samples_per_s"] if f"peer:{k}" in stats else None for k in PEERS
        },
        "peer_details": {
            k: row(stats[f"peer:{k}"])
            if f"peer:{k}" in stats
            else {"status": SKIPPED, "reason": f"not installed: {_PEER_INSTALL[k]}"}
            for k in PEERS
        },
        "best": {
            "name": best["name"],
            "samples_per_s": best["samples_per_s"],
            "speedup": best["speedup"],
            "fraction_of_ceiling": best["fraction_of_ceiling"],
        },
        "loader_sweep": sweep,
    }
    result["targets"] = check_targets(result)
    result["elapsed_s"] = time.perf_counter() - started
    if out_dir is not None:
        save_outputs(result, out_dir)
    return result


# ------------------------------------------------------------------------------ reporting
def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on this run's numbers (GPU: 3x, CPU: 1.5x baseline)."""
    best = result["best"]
    goal = 3.0 if result["device_type"] == "cuda" else 1.5
    rows = [
        (f"best rung >= {goal:g}x baseline", best["speedup"], goal, False),
        ("best rung >= 0.9 of the compute ceiling", best["fraction_of_ceiling"], 0.9, False),
    ]
    for key, label in PEERS.items():
        if result["peers"][key] is not None:  # a peer that did not run is not judged
            ratio = best["samples_per_s"] / result["peers"][key]
            rows.append((f"best rung ahead of the {label[6:]}", ratio, 1.0, True))
    return [
        {
            "target": t,
            "measured": m,
            "goal": g,
            "met": m > g if strict else m >= g,
            "short_by": max(0.0, g - m),
        }
        for t, m, g, strict in rows
    ]


def describe_target(target: dict[str, Any]) -> str:
    """``'met'``, ``'missed by 0.12'``, or ``'tie: not ahead'`` for a tie with a peer."""
    if target["met"]:
        return "met"
    return f"missed by {target['short_by']:.2f}" if target["short_by"] > 0 else "tie: not ahead"


def _table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    def fmt(r: dict[str, Any]) -> tuple[str, str, str, str]:
        mem = r.get("peak_memory_mib")
        mem_text = "-" if mem is None else f"{mem:.0f} MiB"
        return (
            f"{r['samples_per_s']:.1f}",
            f"{r['speedup']:.2f}x",
            f"{r['fraction_of_ceiling']:.2f}",
            mem_text,
        )

    rows = []
    for r in result["rungs"]:
        if r["status"] == MEASURED:
            rows.append((r["name"], *fmt(r)))
        else:
            rows.append((r["name"], f"{r['status']}: {r['reason']}", "", "", ""))
    rows.append(("ceiling (data on device)", *fmt(result["ceiling"])))
    for key, label in PEERS.items():
        d = result["peer_details"][key]
        if d.get("status") == SKIPPED:
            rows.append((label, f"skipped: {d['reason']}", "", "", ""))
        else:
            rows.append((label, *fmt(d)))
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: samples/s, speedup vs baseline, fraction of ceiling, peak memory."""
    head = ("", "samples/s", "speedup", "of ceiling", "peak memory")
    lines = [f"{head[0]:<28} {head[1]:>10} {head[2]:>8} {head[3]:>10} {head[4]:>12}"]
    for name, sps, sp, frac, mem in _table_rows(result):
        if not sp:
            lines.append(f"{name:<28} {sps}")
        else:
            lines.append(f"{name:<28} {sps:>10} {sp:>8} {frac:>10} {mem:>12}")
    return "\n".join(lines)


def ladder_markdown(result: dict[str, Any]) -> str:
    """``ladder.md``: hardware, the table, what each rung adds, the targets."""
    s = result["settings"]
    out = [
        f"# d2lopt ladder on {result['device']}",
        "",
        f"Hardware: {result['hardware']['cpu_model']}, {result['hardware']['cpu_cores']} "
        f"cores, {result['hardware']['memory_gib']} GiB; torch {result['versions']['torch']}.",
        f"Workload: {result['workload']}. Batch {s['batch_size']}, {s['epochs']} epochs per "
        f"run; {s['warmup']} warm-up + {s['rounds']} interleaved rounds, median shown.",
        "",
        "| rung | adds | samples/s | speedup | of ceiling | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    adds = {r["name"]: r["adds"] for r in result["rungs"]}
    adds["ceiling (data on device)"] = "same model and batch, batches already on the device"
    for name, sps, sp, frac, mem in _table_rows(result):
        out.append(f"| {name} | {adds.get(name, '')} | {sps} | {sp} | {frac} | {mem} |")
    out += [
        "",
        f"Peak memory: {result['memory_kind']}.",
        "",
        "## Targets",
        "",
        "| target | measured | goal | result |",
        "|---|---:|---:|---|",
    ]
    for t in result["targets"]:
        result_text = describe_target(t)
        out.append(f"| {t['target']} | {t['measured']:.2f} | {t['goal']:g} | {result_text} |")
    quick = " --quick" if s["quick"] else ""
    out += ["", f"Reproduce: `d2lopt ladder{quick} --out DIR` (took {result['elapsed_s']:.0f} s)."]
    return "\n".join(out) + "\n"


def plot_ladder(result: dict[str, Any], ax: Any = None) -> Any:
    """Horizontal bars: rungs climbing, peers in grey, the compute ceiling as a dashed line."""
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: works headless, in any backend

        ax = Figure(figsize=(8, 4.5), layout="constrained").subplots()
    labels, values, colors, notes = [], [], [], []
    for r in result["rungs"]:
        labels.append(r["name"])
        if r["status"] == MEASURED:
            values.append(r["samples_per_s"])
            colors.append("tab:blue")
            notes.append(f"{r['speedup']:.2f}x, {r['fraction_of_ceiling']:.2f} of ceiling")
        else:
            values.append(0.0)
            colors.append("tab:blue")
            why = r["reason"].split(";")[0].split(" (")[0]
            if r.get("probe"):
                what = "sweep" if "setting" in r["probe"] else "probe"
                why = f"{r['probe']['speedup']:.2f}x in the {what}"
            notes.append(f"{r['status']}: {why}")
    for key, label in PEERS.items():
        d = result["peer_details"][key]
        labels.append(label)
        colors.append("tab:gray")
        if d.get("status") == SKIPPED:
            values.append(0.0)
            notes.append("skipped: not installed")
        else:
            values.append(d["samples_per_s"])
            notes.append(f"{d['speedup']:.2f}x")
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ceiling = result["ceiling_samples_per_s"]
    ax.axvline(ceiling, color="tab:red", linestyle="--", label=f"compute ceiling {ceiling:.0f}/s")
    for yi, v, note in zip(y, values, notes, strict=True):
        ax.text(v + 0.01 * ceiling, yi, note, va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.35 * max([ceiling, *values]))
    ax.set_xlabel("training samples/s (whole run: loading, training, evaluation)")
    ax.set_title(f"optimization ladder on {result['device']}")
    ax.legend(loc="lower right")
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


# ------------------------------------------------------------------------------ CLI
_FLAGS = {
    "n_train": "--n-train",
    "n_test": "--n-test",
    "image_size": "--image-size",
    "batch_size": "--batch-size",
    "epochs": "--epochs",
    "rounds": "--rounds",
    "warmup": "--warmup",
}


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``d2lopt ladder``."""
    from .cli import non_negative_int, positive_int

    p = sub.add_parser(
        "ladder",
        help="measure every optimization on this machine, rung by rung, against peers",
        description="Train the standard workload (JPEGs on disk, decode + augmentation, the "
        "course CNN) through the optimization ladder; measure the compute ceiling and the "
        "d2l and Lightning loops alongside, in interleaved rounds.",
    )
    p.add_argument(
        "--quick", action="store_true", help="CI-sized run (under two minutes on 2 CPU cores)"
    )
    p.add_argument(
        "--out",
        default="runs/ladder",
        help="folder for ladder.json, ladder.md, ladder.png (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--compile", action="store_true", help="also try the torch.compile rung")
    g = p.add_argument_group("sizes (default: scaled to --quick and the device)")
    for flag in ("--n-train", "--n-test", "--image-size", "--batch-size", "--epochs", "--rounds"):
        g.add_argument(flag, type=positive_int, default=None)
    g.add_argument("--warmup", type=non_negative_int, default=None, help="warm-up rounds")
    g.add_argument("--seed", type=non_negative_int, default=0)
    g.add_argument(
        "--data-dir",
        default=None,
        help="where the JPEG folders are written (default: the d2lopt data cache)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .cli import UsageError, writable_dir

    try:
        settings = LadderSettings.preset(
            args.quick,
            args.device,
            compile=args.compile,
            seed=args.seed,
            data_dir=args.data_dir,
            **{k: getattr(args, k) for k in _FLAGS},
        )
    except ValueError as exc:
        field_name, _, problem = str(exc).partition(": ")
        flag = _FLAGS.get(field_name, "--" + field_name.replace("_", "-"))
        raise ValueError(f"{flag}: {problem}") from None
    try:
        out = writable_dir(args.out)
    except UsageError as exc:  # as ValueError main() catches it under `python -m d2lopt.cli` too
        raise ValueError(str(exc)) from None
    result = run_ladder(settings, out_dir=out)
    print(format_table(result))
    for t in result["targets"]:
        print(f"target: {t['target']}: {t['measured']:.2f} ({describe_target(t)})")
    print(f"saved {out / 'ladder.json'}, ladder.md, ladder.png ({result['elapsed_s']:.0f} s)")
    return 0
