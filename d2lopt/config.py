"""The article's global parameters as one validated, frozen object (``02_definition``).

Every field the article's table lists (``num_epochs, batch_size, num_workers,
prefetch_factor, device, lr``) plus one switch per optimization the course measures. An
invalid value or combination fails here, at construction, naming the field and the fix,
instead of deep inside a DataLoader worker twenty minutes into a run.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .errors import ParamError, ParamTypeError, check_bool, check_choice, check_int, check_number

if TYPE_CHECKING:
    import torch

# torch, devices and precision are imported where they are used: the command line reads
# the fields' metadata (its flags) to answer --help without loading PyTorch.

__all__ = ["AMP_MODES", "TrainConfig", "check_amp"]

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")  # re-exported by d2lopt.precision


def check_amp(device: torch.device | str, amp: str) -> None:
    """Raise a ParamError when ``device`` cannot *run* ``amp`` at all, saying what to use.

    Every mode runs on CPU, MPS and CUDA, with one exception: bf16 on a CUDA GPU that
    cannot even emulate it. A GPU without bf16 units (a T4, a V100) still runs bf16
    autocast, emulated and slowly; whether a mode is *fast* is
    :func:`d2lopt.devices.supports_bf16`'s question, and a measurement's. A run's AMP is
    decided once, here, when its :class:`TrainConfig` is built (taught in ``08_gpu_compute``;
    importable from :mod:`d2lopt.precision` too).
    """
    import torch

    from .devices import as_device

    check_choice("amp", amp, AMP_MODES)
    device = as_device(device)
    if amp == "bf16" and device.type == "cuda":
        with torch.cuda.device(device):  # is_bf16_supported asks the *current* device
            runs = torch.cuda.is_bf16_supported(including_emulation=True)
        if not runs:
            gpu = torch.cuda.get_device_name(device)
            raise ParamError(
                "amp", f"'bf16' cannot run on {gpu}; use 'fp16' (with its GradScaler) or 'off'"
            )


def _setting(default: Any, help: str, **flag: Any) -> Any:
    """A field with its command-line flag: ``help``, and ``flag``/``type``/``choices``.

    ``d2lopt.flags.add_config_flags`` turns these into the flags of ``d2lopt train`` and of
    the DDP program, so each setting is defined once, here.
    """
    return field(default=default, metadata={"help": help, **flag})


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
        try:
            self._check()
        except ParamError as exc:  # one wording, naming the field: "TrainConfig.lr: ..."
            raise exc.with_owner("TrainConfig") from None

    def _check(self) -> None:
        for name in ("num_epochs", "batch_size", "eval_every"):
            check_int(name, getattr(self, name), 1)
        check_int("num_workers", self.num_workers, 0)
        cores = os.cpu_count() or 1
        if self.num_workers > 4 * cores:
            raise ParamError(
                "num_workers",
                f"{self.num_workers} workers on {cores} cores would thrash; "
                f"use at most {cores} (start with {max(1, cores // 2)})",
            )
        for name in ("pin_memory", "persistent_workers", "non_blocking", "channels_last",
                     "compile"):  # fmt: skip
            check_bool(name, getattr(self, name))
        if self.prefetch_factor is not None:
            check_int("prefetch_factor", self.prefetch_factor, 1)
        for name in ("prefetch_factor", "persistent_workers"):  # worker settings: need workers
            if getattr(self, name) not in (None, False) and self.num_workers == 0:
                raise ParamError(name, "needs num_workers > 0 (got 0); set num_workers to 1 or "
                                 f"more, or leave {name} out")  # fmt: skip
        check_number("lr", self.lr, above=0)
        check_number("momentum", self.momentum, minimum=0, below=1)
        check_int("seed", self.seed, 0, 2**32 - 1)
        import torch

        from .devices import resolve_device

        if not isinstance(self.device, (str, torch.device)):
            raise ParamTypeError(
                "device", f"must be a string such as 'cpu' or 'cuda', got {self.device!r}"
            )
        check_amp(resolve_device(self.device), self.amp)  # a run's AMP, decided once

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
