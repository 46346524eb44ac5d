"""Accumulators and evaluation (taught in ``04_training_loop``).

The article's ``evaluate_loss`` calls ``float()`` on a GPU tensor for every batch: each call
is a host<->device synchronization that stalls the CPU until the GPU queue drains. The
helpers here keep running sums *on the device* and read them back once.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .devices import as_device
from .errors import check_int

__all__ = ["Accumulator", "DeviceAccumulator", "evaluate", "evaluate_loss", "evaluate_accuracy"]


class Accumulator:
    """Sum ``n`` running quantities on the host; a drop-in for ``d2l.Accumulator``.

    Every :meth:`add` converts its arguments with ``float()``, which synchronizes when an
    argument is a GPU tensor. Use :class:`DeviceAccumulator` in hot loops.

    Example:
        >>> metric = Accumulator(2)
        >>> metric.add(3.0, 2)
        >>> metric[0] / metric[1]
        1.5
    """

    def __init__(self, n: int) -> None:
        check_int("n", n, 1)
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        if len(args) != len(self.data):
            raise ValueError(f"Accumulator.add: expected {len(self.data)} values, got {len(args)}")
        try:
            self.data = [a + float(b) for a, b in zip(self.data, args, strict=True)]
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a many-element tensor
            raise TypeError(
                "Accumulator.add: values must be numbers or one-element tensors, got "
                f"{', '.join(type(a).__name__ for a in args)}; pass e.g. loss.sum() rather than "
                "the per-sample losses"
            ) from None

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]

    def __len__(self) -> int:
        return len(self.data)


class DeviceAccumulator:
    """Sum ``n`` running quantities where they live: tensors on the device, numbers on host.

    :meth:`add` launches at most one tiny kernel per tensor argument and never waits for the
    device; :meth:`values` (or indexing) performs the single synchronization. Under a
    process group :meth:`reduced` sums every rank's sums with one ``all_reduce``, so rank 0
    reports the mean over *all* samples, not over its shard (``fit``'s losses, ``10_ddp``).

    Args:
        n: number of quantities.
        device: where tensor arguments are summed (float64 where supported, for accuracy).

    Example:
        >>> acc = DeviceAccumulator(2, "cpu")
        >>> acc.add(torch.tensor([1.0, 2.0]).sum(), 2)
        >>> acc.values()
        [3.0, 2.0]
    """

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        check_int("n", n, 1)
        self.device = as_device(device)
        # MPS has no float64; fp32 sums of per-batch sums are accurate enough there.
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._host = [0.0] * n
        self._dev = torch.zeros(n, dtype=self.dtype, device=self.device)

    def add(self, *args: torch.Tensor | float | int) -> None:
        if len(args) != len(self._host):
            raise ValueError(
                f"DeviceAccumulator.add: expected {len(self._host)} values, got {len(args)}"
            )
        for i, value in enumerate(args):
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise TypeError(
                        f"DeviceAccumulator.add: value {i} has shape {tuple(value.shape)}; pass "
                        "one-element tensors (e.g. loss.sum()) or numbers"
                    )
                # stays on the device: no host sync here
                self._dev[i] += value.detach().reshape(()).to(self.device, self.dtype)
            elif isinstance(value, numbers.Real):
                self._host[i] += float(value)
            else:
                raise TypeError(
                    f"DeviceAccumulator.add: value {i} must be a tensor or a number, "
                    f"got {type(value).__name__}"
                )

    def reset(self) -> None:
        self._host = [0.0] * len(self._host)
        self._dev.zero_()

    def values(self) -> list[float]:
        """Read every sum; the one host sync of this accumulator."""
        return [h + d for h, d in zip(self._host, self._dev.tolist(), strict=True)]

    def state(self) -> list[float]:
        """Plain floats, for checkpoints (same as :meth:`values`)."""
        return self.values()

    def load_state(self, values: list[float]) -> None:
        """Continue from :meth:`state`: the sums go back on the device, so later adds round
        exactly as in a run that was never interrupted (bit-identical resumed metrics)."""
        if len(values) != len(self._host):
            raise ValueError(
                f"DeviceAccumulator.load_state: expected {len(self._host)} values, "
                f"got {len(values)}"
            )
        self._host = [0.0] * len(self._host)
        self._dev = torch.tensor([float(v) for v in values], dtype=self.dtype, device=self.device)

    def reduced(self) -> list[float]:
        """The sums over every rank (a collective: every rank calls it), one host sync.

        In a world of one (no process group) it is :meth:`values`.
        """
        total = self._dev + torch.tensor(self._host, dtype=self.dtype, device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.tolist()

    def __getitem__(self, idx: int) -> float:
        return self.values()[idx]

    def __len__(self) -> int:
        return len(self._host)


def _model_device(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def _xy(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if (
        not isinstance(batch, (tuple, list))
        or len(batch) != 2
        or not all(isinstance(t, torch.Tensor) for t in batch)
    ):
        size = f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        kind = type(batch).__name__ + size
        raise TypeError(
            f"data_iter: each batch must be an (X, y) pair of tensors, got a {kind}; "
            "use a DataLoader over a data set that returns (input, label)"
        )
    return batch[0], batch[1]


def evaluate(
    net: nn.Module,
    data_iter: Iterable,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Mean per-sample loss and accuracy over ``data_iter`` with one host sync in total.

    The net goes to eval mode (dropout off, batch-norm running stats) and gets its previous
    mode back afterwards; no autograd graph is recorded (``inference_mode``).

    Args:
        net: the model; its parameters decide the device when ``device`` is ``None``.
        data_iter: yields ``(X, y)`` batches.
        criterion: a loss with ``reduction='none'`` (per-sample), ``'mean'`` or ``'sum'``;
            ``None`` skips the loss.
        device: where to run; defaults to the net's device.

    Returns:
        ``{"loss": ..., "accuracy": ..., "samples": ...}`` (``loss`` is ``nan`` when
        ``criterion`` is ``None``; ``accuracy`` is ``nan`` when outputs are not class scores).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net: expected an nn.Module, got {type(net).__name__}")
    if not isinstance(data_iter, Iterable):
        raise TypeError(
            f"data_iter: expected an iterable of (X, y) batches such as a DataLoader, "
            f"got {type(data_iter).__name__}"
        )
    if criterion is not None and not callable(criterion):
        raise TypeError(
            f"criterion: expected a loss such as nn.CrossEntropyLoss() or None, "
            f"got {type(criterion).__name__}"
        )
    device = _model_device(net) if device is None else as_device(device)
    reduction = getattr(criterion, "reduction", "mean")
    was_training = net.training
    net.eval()
    # loss sum, loss count, correct predictions, samples
    acc = DeviceAccumulator(4, device)
    classify = True
    try:
        with torch.inference_mode():
            for batch in data_iter:
                X, y = _xy(batch)
                # non_blocking only helps (and is only safe to rely on) for pinned batches
                X = X.to(device, non_blocking=X.is_pinned())
                y = y.to(device, non_blocking=y.is_pinned())
                out = net(X)
                n = y.shape[0]
                if criterion is not None:
                    loss = criterion(out, y)
                    if loss.ndim > 0:  # reduction='none': per-sample (or per-element) losses
                        acc.add(loss.sum(), loss.numel(), 0, 0)
                    elif reduction == "sum":
                        acc.add(loss, n, 0, 0)
                    else:  # a mean over the batch: weight it by the batch size
                        acc.add(loss * n, n, 0, 0)
                if classify and out.ndim == 2 and y.ndim == 1 and not y.is_floating_point():
                    acc.add(0, 0, (out.argmax(dim=1) == y).sum(), n)
                else:
                    classify = False
    finally:
        net.train(was_training)
    loss_sum, loss_n, correct, seen = acc.values()  # the one host sync
    return {
        "loss": loss_sum / loss_n if loss_n else float("nan"),
        "accuracy": correct / seen if classify and seen else float("nan"),
        "samples": int(loss_n if criterion is not None else seen),
    }


def evaluate_loss(
    net: nn.Module,
    data_iter: Iterable,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device | str | None = None,
) -> float:
    """Mean per-sample loss of ``net`` over ``data_iter``: the article's helper, sync-free.

    Works with ``reduction='none'`` (the article's per-sample losses) and with
    ``'mean'``/``'sum'`` criteria (weighted by batch size), at most one host sync per call.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> data = [(torch.ones(4, 2), torch.zeros(4, 1))]
        >>> round(evaluate_loss(net, data, nn.MSELoss(reduction="none")), 6) >= 0
        True
    """
    if criterion is None:
        raise ValueError("evaluate_loss: criterion is required, e.g. nn.CrossEntropyLoss()")
    return evaluate(net, data_iter, criterion, device)["loss"]


def evaluate_accuracy(
    net: nn.Module, data_iter: Iterable, device: torch.device | str | None = None
) -> float:
    """Fraction of correctly classified samples, with one host sync per call."""
    return evaluate(net, data_iter, None, device)["accuracy"]
