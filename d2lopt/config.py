"""The article's global parameters as one validated, frozen object (``02_definition``).

Every field the article's table lists (``num_epochs, batch_size, num_workers,
prefetch_factor, device, lr``) plus one switch per optimization the course measures. An
invalid value or combination fails here, at construction, naming the field and the fix,
instead of deep inside a DataLoader worker twenty minutes into a run.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .errors import ParamError

if TYPE_CHECKING:
    import torch

# torch, devices and precision are imported where they are used: the command line reads
# the fields' metadata (its flags) to answer --help without loading PyTorch.

__all__ = ["AMP_MODES", "TrainConfig"]

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")  # re-exported by d2lopt.precision


def _setting(default: Any, help: str, **flag: Any) -> Any:
    """A field with its command-line flag: ``help``, and ``flag``/``type``/``choices``.

    ``d2lopt.flags.add_config_flags`` turns these into the flags of ``d2lopt train`` and of
    the DDP program, so each setting is defined once, here.
    """
    return field(default=default, metadata={"help": help, **flag})


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
        d2lopt.errors.ParamError: TrainConfig.prefetch_factor: needs num_workers > 0 ...
    """

    # fmt: off
    num_epochs: int = _setting(10, "passes over the training set", flag="--epochs",
                               type="positive_int")
    batch_size: int = _setting(256, "samples per batch", type="positive_int")
    num_workers: int = _setting(0, "DataLoader worker processes; 0 loads in the main process",
                                type="non_negative_int")
    prefetch_factor: int | None = _setting(
        None, "batches loaded ahead per worker; needs --num-workers > 0 (default: PyTorch's 2)",
        type="positive_int")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N or mps")
    lr: float = _setting(0.05, "learning rate", type="positive_float")
    momentum: float = _setting(0.9, "SGD momentum", type="unit_float")
    pin_memory: bool = _setting(False, "page-locked batches for async host-to-GPU copies "
                                "(CUDA only)")
    persistent_workers: bool = _setting(False, "keep loader workers between epochs")
    non_blocking: bool = _setting(False, "asynchronous .to(device) copies")
    amp: str = _setting("off", "automatic mixed precision", choices=AMP_MODES)
    eval_every: int = _setting(1, "evaluate every N epochs and after the last",
                               type="positive_int")
    channels_last: bool = _setting(False, "NHWC memory format for the CNN")
    compile: bool = _setting(False, "wrap the model in torch.compile")
    seed: int = _setting(0, "seed for order, init and workers", type="non_negative_int")
    # fmt: on

    def __post_init__(self) -> None:
        def fail(name: str, problem: str, cli: str | None = None) -> None:
            raise ParamError(name, problem, cli=cli, owner="TrainConfig")

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
                    "needs --num-workers 1 or more (got 0); add --num-workers N, or drop "
                    "--prefetch-factor",
                )
        if self.persistent_workers is True and self.num_workers == 0:
            fail(
                "persistent_workers",
                "needs num_workers > 0 (got num_workers=0); "
                "set num_workers >= 1 or persistent_workers=False",
                "needs --num-workers 1 or more (got 0); add --num-workers N, or drop "
                "--persistent-workers",
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
        import torch

        from .devices import resolve_device
        from .precision import check_amp

        if not isinstance(self.device, (str, torch.device)):
            fail("device", f"must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        if self.amp not in AMP_MODES:
            fail("amp", f"must be one of {AMP_MODES}, got {self.amp!r}")
        try:
            device = resolve_device(self.device)
            check_amp(device, self.amp)
        except ParamError as exc:
            raise exc.with_owner("TrainConfig") from None

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (``'auto'`` becomes the best available one)."""
        from .devices import resolve_device

        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``metrics.json`` and checkpoints."""
        import torch

        return {k: str(v) if isinstance(v, torch.device) else v for k, v in asdict(self).items()}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
