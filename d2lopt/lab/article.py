"""The article's code, kept literally, as the baseline every optimization is measured against.

``04_training_loop`` shows these side by side with :func:`d2lopt.fit` and
:func:`d2lopt.evaluate_loss`; ``d2lopt ladder`` uses them as its first rung. Do not "fix"
them: their per-batch host syncs and every-epoch evaluation are what the course measures.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..metrics import Accumulator

__all__ = ["article_evaluate_loss", "article_train_epoch", "article_fit"]


def article_evaluate_loss(
    net: nn.Module, dataloader: Iterable, criterion: nn.Module, device: torch.device | str
) -> float:
    """评估给定数据集上模型的损失 — the article's ``evaluate_loss``, verbatim in spirit.

    ``metric.add(loss.sum(), ...)`` converts a device tensor with ``float()``: one host sync
    per batch. It also leaves the net in whatever mode it was (no ``eval()``).
    """
    metric = Accumulator(2)  # 损失的总和, 样本数量
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            loss = criterion(net(X), y)
            metric.add(loss.sum(), loss.numel())
    return metric[0] / metric[1]


def article_train_epoch(
    net: nn.Module,
    dataloader_train: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
) -> None:
    """One epoch of the article's training loop (blocking copies, fp32, per-sample loss)."""
    for X, y in dataloader_train:
        X, y = X.to(device), y.to(device)
        loss = criterion(net(X), y)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()


def article_fit(
    net: nn.Module,
    dataloader_train: Iterable,
    dataloader_test: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    device: torch.device | str,
) -> list[dict[str, float]]:
    """The article's whole loop: train, then train loss and test loss every epoch."""
    history = []
    for epoch in range(num_epochs):
        article_train_epoch(net, dataloader_train, criterion, optimizer, device)
        history.append({
            "epoch": epoch + 1,
            "train_loss": article_evaluate_loss(net, dataloader_train, criterion, device),
            "test_loss": article_evaluate_loss(net, dataloader_test, criterion, device),
        })  # fmt: skip
    return history
