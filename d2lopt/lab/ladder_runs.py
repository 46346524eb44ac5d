"""What one ladder run is: its loop, and the entries the final rounds time.

Taught in ``12_putting_it_together`` (the apparatus of :mod:`d2lopt.lab.ladder`). A run builds
its loaders from the workload (:mod:`d2lopt.lab.ladder_workload`), trains ``epochs`` epochs
with the rung's loop (the article's, :func:`d2lopt.fit`, or a peer's) and evaluates; its
:class:`~d2lopt.lab.ladder_measures.RunStats` keep the fixed costs (start-up to the first batch,
the first step's extra time) apart from the steady state, and the data stalls (time inside
``next()``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..devices import synchronize
from ..loop import TrainStep, place
from ..precision import autocast_ctx, grad_scaler
from ..train import fit
from .article import article_evaluate_loss, article_train_epoch
from .ladder_measures import RunStats, Timed
from .ladder_workload import Workload

__all__ = [
    "Rung",
    "d2l_train_ch6",
    "loader_label",
    "run_rung",
    "run_ceiling",
    "PEER_RUNS",
    "train_step",
    "main_process_loading",
]

MEASURED, SKIPPED, REJECTED = "measured", "skipped", "rejected"


@dataclass
class Rung:
    """One step of the ladder: what it adds, how it was decided, and whether it was kept."""

    name: str
    adds: str
    config: TrainConfig | None
    loader: dict[str, Any] = field(default_factory=lambda: {"kind": "dataloader"})
    loop: str = "article"  # "article": the article's loop (+ switches); "fit": d2lopt.fit
    status: str = MEASURED
    reason: str = ""
    decision: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ the loops
Step = Callable[[torch.Tensor, torch.Tensor], None]


def train_step(net: nn.Module, config: TrainConfig) -> Step:
    """The step of :func:`d2lopt.fit` without the loader: what the decision passes run."""
    device = config.torch_device
    place(net, config, device).train()  # once, in the memory format the rung asks for
    model = torch.compile(net) if config.compile else net
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    return TrainStep(model, criterion, optimizer, config, device)  # fit's own step object


def _article_loop(
    net: nn.Module, train: Timed, test: Iterable, config: TrainConfig, evaluate_train: Iterable
) -> None:
    """The article's loop (``article_fit``'s pieces) plus the switches of the rungs below
    loop hygiene: async copies, AMP, channels_last; evaluation of train and test every epoch."""
    device = config.torch_device
    net.to(device)
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    plain = not config.non_blocking and config.amp == "off" and not config.channels_last
    autocast, scaler = autocast_ctx(device, config.amp), grad_scaler(device, config.amp)
    nb = config.non_blocking  # async copies: effective from pinned batches only
    for _ in range(config.num_epochs):
        if plain:  # the article's own epoch, verbatim
            article_train_epoch(net, train, criterion, optimizer, device)
        else:
            for X, y in train:
                X, y = X.to(device, non_blocking=nb), y.to(device, non_blocking=nb)
                if config.channels_last:
                    X = X.contiguous(memory_format=torch.channels_last)
                with autocast:
                    loss = criterion(net(X), y)
                optimizer.zero_grad()
                scaler.scale(loss.mean()).backward()
                scaler.step(optimizer)
                scaler.update()
        with autocast:  # the article's evaluation, unchanged: train and test, a sync per batch
            article_evaluate_loss(net, evaluate_train, criterion, device)
            article_evaluate_loss(net, test, criterion, device)


def d2l_train_ch6(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable,
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
        """The ladder's model in Lightning: same loss, optimizer and memory format."""

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


# ------------------------------------------------------------------------------ the entries
def _timed_run(body: Callable[[float], Timed], device: torch.device) -> RunStats:
    """Run ``body(start)`` (it builds its loaders and trains); its time is the whole run."""
    synchronize(device)
    start = time.perf_counter()
    timed = body(start)
    synchronize(device)  # queued GPU work belongs to this run
    return timed.stats(time.perf_counter() - start)


def run_rung(wl: Workload, rung: Rung) -> RunStats:
    assert rung.config is not None
    config = rung.config

    def body(start: float) -> Timed:
        train = wl.loader(rung.loader, config, train=True)
        test = wl.loader(rung.loader, config, train=False)
        timed = Timed(train, start, wl.device)
        if rung.loop == "fit":
            fit(wl.net(), timed, test, config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device)


def run_ceiling(wl: Workload, top: Rung) -> RunStats:
    """The top rung's loop and evaluation, on batches that already sit on the device."""
    assert top.config is not None
    train, test = wl.device_batches(train=True), wl.device_batches(train=False)

    def body(start: float) -> Timed:
        timed = Timed(train, start, wl.device)
        if top.loop == "fit":
            fit(wl.net(), timed, test, top.config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, top.config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device)


def _peer_net(wl: Workload, config: TrainConfig) -> nn.Module:
    net = wl.net()
    if config.channels_last:  # a model-level setting: the peer's own loop is untouched
        net.to(memory_format=torch.channels_last)
    return net


def _run_d2l(wl: Workload, top: Rung) -> RunStats:
    config = top.config
    assert config is not None
    # bf16 autocast needs no loop change (no GradScaler): d2l gets it; fp16 it cannot
    amp = autocast_ctx(wl.device, config.amp) if config.amp == "bf16" else contextlib.nullcontext()

    def body(start: float) -> Timed:
        train = Timed(wl.loader(top.loader, config, train=True), start, wl.device)
        test = wl.loader(top.loader, config, train=False)
        with amp:
            net = _peer_net(wl, config)
            d2l_train_ch6(
                net, train, test, config.num_epochs, config.lr, wl.device, config.momentum
            )
        return train

    return _timed_run(body, wl.device)


def _run_lightning(wl: Workload, top: Rung) -> RunStats:
    import lightning as L

    config, dev = top.config, wl.device
    assert config is not None

    def body(start: float) -> Timed:
        train = Timed(wl.loader(top.loader, config, train=True), start, wl.device)
        test = wl.loader(top.loader, config, train=False)
        with _quiet_lightning():
            trainer = L.Trainer(
                accelerator={"cuda": "gpu", "mps": "mps"}.get(dev.type, "cpu"),
                devices=[dev.index or 0] if dev.type == "cuda" else 1,
                precision={"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[config.amp],
                max_epochs=config.num_epochs,
                # evaluate like the top rung: every epoch (article loop) or once at the end
                check_val_every_n_epoch=config.eval_every if top.loop == "fit" else 1,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(_lightning_module()(_peer_net(wl, config), config), train, test)
        return train

    return _timed_run(body, wl.device)


PEER_RUNS = {"d2l": _run_d2l, "lightning": _run_lightning}


# ------------------------------------------------------------------------------ the climb
def loader_label(spec: dict[str, Any], config: TrainConfig) -> str:
    kind = spec["kind"]
    pin = ", pin_memory" if config.pin_memory else ""
    if kind == "dataloader":
        text = f"DataLoader, num_workers={config.num_workers}"
        if config.num_workers:
            text += f", prefetch_factor={config.prefetch_factor or 2}"
            text += ", persistent" if config.persistent_workers else ""
        return text + pin
    if kind == "threads":
        return f"{spec['threads']} loader threads{pin}"
    return {
        "decode_once": "decode once + batched augmentation",
        "gpu_decode": "batched GPU decode",
    }[kind]


def main_process_loading(config: TrainConfig) -> TrainConfig:
    """The loader knobs reset: the new loader makes its batches in the main process."""
    return replace(config, num_workers=0, prefetch_factor=None, persistent_workers=False)
