"""The article's global parameters as one validated, frozen object (``02_definition``).

Every field the article's table lists (``num_epochs, batch_size, num_workers,
prefetch_factor, device, lr``) plus one switch per optimization the course measures. An
invalid value or combination fails here, at construction, naming the field and the fix,
instead of deep inside a DataLoader worker twenty minutes into a run.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from .devices import resolve_device
from .precision import AMP_MODES, check_amp

__all__ = ["TrainConfig"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and optimization switches of one training run.

    Args:
        num_epochs: passes over the training set.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        prefetch_factor: batches each worker loads ahead (needs ``num_workers > 0``;
            ``None`` keeps PyTorch's default of 2).
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
        lr: learning rate of SGD.
        momentum: SGD momentum.
        pin_memory: page-locked batches for faster, asynchronous host->GPU copies.
        persistent_workers: keep workers alive between epochs (needs ``num_workers > 0``).
        non_blocking: asynchronous ``.to(device)`` copies (effective with pinned memory).
        amp: ``'off'``, ``'bf16'`` or ``'fp16'`` autocast (fp16 adds a GradScaler).
        eval_every: evaluate on the test set every this many epochs (and after the last).
        channels_last: NHWC memory format for conv nets.
        compile: wrap the model in ``torch.compile``.
        seed: seeds sample order, initialization and worker RNGs.

    Example:
        >>> TrainConfig(num_epochs=2, batch_size=64).batch_size
        64
        >>> TrainConfig(num_workers=0, prefetch_factor=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: TrainConfig.prefetch_factor: needs num_workers > 0 ...
    """

    num_epochs: int = 10
    batch_size: int = 256
    num_workers: int = 0
    prefetch_factor: int | None = None
    device: str = "auto"
    lr: float = 0.05
    momentum: float = 0.9
    pin_memory: bool = False
    persistent_workers: bool = False
    non_blocking: bool = False
    amp: str = "off"
    eval_every: int = 1
    channels_last: bool = False
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, problem: str) -> None:
            raise ValueError(f"TrainConfig.{name}: {problem}")

        for name in ("num_epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                fail(name, f"must be a positive int, got {value!r}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            fail("num_workers", f"must be an int >= 0, got {self.num_workers!r}")
        cores = os.cpu_count() or 1
        if self.num_workers > 4 * cores:
            fail(
                "num_workers",
                f"{self.num_workers} workers on {cores} cores would thrash; "
                f"use at most {cores} (start with {max(1, cores // 2)})",
            )
        if self.prefetch_factor is not None:
            if not _is_int(self.prefetch_factor) or self.prefetch_factor < 1:
                fail(
                    "prefetch_factor",
                    f"must be a positive int or None, got {self.prefetch_factor!r}",
                )
            if self.num_workers == 0:
                fail(
                    "prefetch_factor",
                    "needs num_workers > 0 (got num_workers=0); "
                    "set num_workers >= 1 or prefetch_factor=None",
                )
        if self.persistent_workers is True and self.num_workers == 0:
            fail(
                "persistent_workers",
                "needs num_workers > 0 (got num_workers=0); "
                "set num_workers >= 1 or persistent_workers=False",
            )
        for name in (
            "pin_memory",
            "persistent_workers",
            "non_blocking",
            "channels_last",
            "compile",
        ):
            if not isinstance(getattr(self, name), bool):
                fail(name, f"must be True or False, got {getattr(self, name)!r}")
        for name in ("lr", "momentum"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                fail(name, f"must be a finite number, got {value!r}")
        if self.lr <= 0:
            fail("lr", f"must be > 0, got {self.lr!r} (try 0.05)")
        if not 0 <= self.momentum < 1:
            fail("momentum", f"must be in [0, 1), got {self.momentum!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            fail("seed", f"must be an int in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.device, (str, torch.device)):
            fail("device", f"must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        if self.amp not in AMP_MODES:
            fail("amp", f"must be one of {AMP_MODES}, got {self.amp!r}")
        try:
            device = resolve_device(self.device)
            check_amp(device, self.amp)
        except ValueError as exc:
            raise ValueError(f"TrainConfig.{exc}") from None

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (``'auto'`` becomes the best available one)."""
        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``metrics.json`` and checkpoints."""
        return {k: str(v) if isinstance(v, torch.device) else v for k, v in asdict(self).items()}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
