"""How people run the two peers of the ladder: d2l's ``train_ch6`` and Lightning's ``Trainer``.

Taught in ``12_putting_it_together``. The ladder compares its best rung with the training
loops learners already use, in two ways:

- *loop overhead*: each peer's loop on the best rung's loader, batch, precision and memory
  format (:func:`d2l_train_ch6` with the rung's momentum, :func:`lightning_fit` with
  ``defaults=False``): loop against loop;
- *as people run them*: each peer as its own book or docs set it up, with plain datasets,
  nets and devices (no d2lopt workload): :func:`d2l_book_loaders` + :func:`d2l_book_train`,
  and :func:`lightning_guide` + :func:`lightning_loaders` + :func:`lightning_fit` with
  ``defaults=True``.

Sources read (installed versions: d2l 1.0.3, lightning 2.6.6):

- ``d2l/torch.py``: ``get_dataloader_workers`` (l. 3004-3008, returns 4),
  ``load_data_fashion_mnist`` (l. 3010-3025, the two ``DataLoader`` calls at l. 3022-3025),
  ``evaluate_accuracy_gpu`` (l. 3027-3047), ``train_ch6`` (l. 3050-3090),
  ``Accumulator`` (l. 3172), ``accuracy`` (l. 3188).
- ``lightning/pytorch/trainer/connectors/data_connector.py``: ``_worker_check`` (l. 417-446);
  ``lightning/fabric/utilities/data.py``: ``suggested_max_num_workers`` (l. 439-451).
- Lightning docs, ``docs/source-pytorch/advanced/speed.rst`` ("Speed Up Model Training",
  https://lightning.ai/docs/pytorch/stable/advanced/speed.html): DataLoaders, Mixed
  Precision (16-bit) Training; ``common/precision_basic.rst`` and
  ``common/precision_intermediate.rst`` (BFloat16 Mixed Precision).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import TrainConfig

__all__ = [
    "LIGHTNING_PRECISION",
    "d2l_book_loaders",
    "d2l_book_train",
    "d2l_train_ch6",
    "lightning_fit",
    "lightning_guide",
    "lightning_loaders",
    "lightning_module",
    "quiet_lightning",
]

# TrainConfig.amp -> Trainer(precision=...): the loop-overhead comparison's precision
LIGHTNING_PRECISION = {"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


# ------------------------------------------------------------------------------------- d2l
def d2l_book_loaders(
    train_set: Dataset, test_set: Dataset, batch_size: int
) -> tuple[DataLoader, DataLoader]:
    """The loaders of d2l 1.0.3's ``load_data_fashion_mnist`` (``d2l/torch.py`` l. 3022-3025).

    ``shuffle=True`` for training, ``False`` for test, ``num_workers=get_dataloader_workers()``
    (4, whatever the machine: l. 3004-3008) and nothing else: no pinned memory, no persistent
    workers, default prefetch. The per-sample transforms are the datasets' own.
    """
    from d2l import torch as d2l

    workers = d2l.get_dataloader_workers()
    return (
        DataLoader(train_set, batch_size, shuffle=True, num_workers=workers),
        DataLoader(test_set, batch_size, shuffle=False, num_workers=workers),
    )


def d2l_book_train(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable,
    num_epochs: int,
    lr: float,
    device: torch.device,
) -> dict[str, float]:
    """d2l 1.0.3's ``train_ch6`` as published (``d2l/torch.py`` l. 3050-3090).

    Xavier-uniform re-initialization of every ``Linear``/``Conv2d``, plain SGD (no momentum),
    ``CrossEntropyLoss``, fp32, test accuracy every epoch. Only its ``Animator`` plot and its
    two prints are left out: they are output, not training.
    """
    return d2l_train_ch6(net, train_iter, test_iter, num_epochs, lr, device, init=True)


def _d2l_init_weights(m: nn.Module) -> None:
    # train_ch6's own init_weights (l. 3054-3056): exact types, as d2l compares them
    if type(m) in (nn.Linear, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight)


def d2l_train_ch6(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable,
    num_epochs: int,
    lr: float,
    device: torch.device,
    momentum: float = 0.0,
    *,
    init: bool = False,
) -> dict[str, float]:
    """The loop of d2l 1.0.3's ``train_ch6``, with its own ``Accumulator``, ``Timer`` and helpers.

    The one copy of the loop body, used two ways. The book's run (:func:`d2l_book_train`):
    ``init=True``, ``momentum=0``. The loop-overhead comparison (defaults): the net comes
    initialized like every rung's and ``momentum`` matches the ladder's optimizer, so only
    the loops differ. Left out either way: the ``Animator`` plot and the prints (output).
    """
    from d2l import torch as d2l

    if init:
        net.apply(_d2l_init_weights)
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


# ------------------------------------------------------------------------------- Lightning
def _start_method() -> str:
    return mp.get_start_method()  # what _worker_check reads when the loader sets no context


def lightning_guide(device: torch.device) -> dict[str, Any]:
    """The Trainer and DataLoader settings Lightning's docs and warnings give for ``device``.

    Returns ``precision``, ``num_workers``, ``pin_memory``, ``persistent_workers`` and
    ``why`` (one sentence per setting, naming its source): what a user who follows the
    speed guide and silences every warning by doing what it says would run.
    """
    from lightning.fabric.utilities.data import suggested_max_num_workers

    why: dict[str, str] = {}
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        precision = "bf16-mixed" if bf16 else "16-mixed"
        why["precision"] = (
            "speed guide, 'Mixed Precision (16-bit) Training': use it on a GPU that supports "
            "16-bit; precision_intermediate.rst: bf16-mixed's benefits need Ampere or newer "
            f"(torch.cuda.is_bf16_supported(including_emulation=False) is {bf16})"
        )
    else:
        precision = "32-true"
        why["precision"] = (
            "speed guide, 'Mixed Precision (16-bit) Training': 'Use when' names only GPUs; "
            "bf16-mixed runs on a CPU (precision_intermediate.rst) but 'may not provide "
            "significant speedups', so the Trainer's default 32-true stays"
        )
    # _worker_check suggests num_workers=suggested_max_num_workers(trainer.num_devices):
    # max(1, CPUs available // devices - 1), one device here; speed guide: num_workers>0
    num_workers = suggested_max_num_workers(1)
    why["num_workers"] = (
        "the 'does not have many workers' warning (data_connector._worker_check) suggests "
        f"suggested_max_num_workers(1) = {num_workers} (CPUs available - 1, at least 1)"
    )
    pin_memory = device.type == "cuda"
    why["pin_memory"] = "speed guide, DataLoaders: 'pin_memory=True (only for GPUs)'"
    method = _start_method()
    persistent_workers = num_workers > 0 and method == "spawn"
    why["persistent_workers"] = (
        "_worker_check warns 'Consider setting persistent_workers=True' only for workers "
        f"started by 'spawn'; the start method here is {method!r}"
    )
    return {
        "precision": precision,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers,
        "why": why,
    }


def lightning_loaders(
    train_set: Dataset, test_set: Dataset, batch_size: int, guide: dict[str, Any]
) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders with :func:`lightning_guide`'s settings.

    Training shuffles; validation does not (``data_connector.py`` l. 486 warns when a
    ``val_dataloader``'s sampler shuffles). Nothing else is set.
    """
    kw = {k: guide[k] for k in ("num_workers", "pin_memory", "persistent_workers")}
    return (
        DataLoader(train_set, batch_size, shuffle=True, **kw),
        DataLoader(test_set, batch_size, shuffle=False, **kw),
    )


def lightning_fit(
    net: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    *,
    max_epochs: int,
    lr: float,
    momentum: float,
    device: torch.device,
    precision: str,
    root_dir: str | os.PathLike,
    defaults: bool,
    channels_last: bool = False,
    check_val_every_n_epoch: int = 1,
) -> Any:
    """Train ``net`` with Lightning's ``Trainer`` (the ladder's one way to build one).

    ``defaults=True``: the Trainer's loop as a user gets it: sanity validation steps,
    validation every ``check_val_every_n_epoch`` epochs (Lightning's default: 1), its
    ``ModelCheckpoint`` and logger writing under ``root_dir``. ``defaults=False``: the
    loop-overhead comparison: no sanity steps, no checkpoint, no logger. Either way the
    progress bar, the model summary and Lightning's log lines and tips are off: terminal
    output, not training. ``channels_last`` converts each batch (set the net's memory
    format yourself). Returns the fitted ``Trainer``.
    """
    import lightning as L

    config = TrainConfig(
        num_epochs=max_epochs, lr=lr, momentum=momentum, channels_last=channels_last
    )
    quiet: dict[str, Any] = {}
    if not defaults:
        quiet = {"num_sanity_val_steps": 0, "logger": False, "enable_checkpointing": False}
    with quiet_lightning():
        trainer = L.Trainer(
            accelerator={"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu"),
            devices=[device.index or 0] if device.type == "cuda" else 1,
            precision=precision,
            max_epochs=max_epochs,
            check_val_every_n_epoch=check_val_every_n_epoch,
            default_root_dir=Path(root_dir),
            enable_progress_bar=False,
            enable_model_summary=False,
            **quiet,
        )
        trainer.fit(lightning_module()(net, config), train_loader, val_loader)
    return trainer


@functools.cache
def lightning_module() -> type:
    import lightning as L

    class LadderModule(L.LightningModule):
        """The ladder's model in Lightning: same loss, optimizer and memory format."""

        def __init__(self, net: nn.Module, config: TrainConfig) -> None:
            super().__init__()
            self.net, self.config = net, config
            self.criterion = nn.CrossEntropyLoss(reduction="none")
            self.step_seconds: list[float] = []  # host time of each training step (the ladder)
            self._step_started = 0.0

        def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
            self._step_started = time.perf_counter()

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            # Lightning asks its loader for the next batch *before* running a step (its
            # prefetching data fetcher), so a loader cannot see where a step ends: its hooks can
            self.step_seconds.append(time.perf_counter() - self._step_started)

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
def quiet_lightning():
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
