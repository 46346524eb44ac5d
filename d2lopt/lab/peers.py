"""How people run the two peers of the ladder: d2l's ``train_ch6`` and Lightning's ``Trainer``.

Taught in ``12_putting_it_together``. The ladder compares its best rung with the training
loops learners already use. These are those loops, kept apart from the ladder's own code
(:mod:`d2lopt.lab.ladder` times them like any rung).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig

__all__ = ["d2l_train_ch6", "lightning_module", "quiet_lightning"]


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
def lightning_module() -> type:
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
