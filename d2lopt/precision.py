"""Mixed precision and TF32, decided once (taught in ``08_gpu_compute``).

``autocast_ctx`` returns a null context when AMP is off and ``grad_scaler`` a disabled
scaler unless fp16 needs one, so the training loop has the same lines in every precision.
This is the current ``torch.amp`` API; the article's ``torch.cuda.amp`` is deprecated.
Both 16-bit modes run on CUDA, MPS *and* CPU: ``torch.autocast("cpu", dtype=torch.float16)``
with ``torch.amp.GradScaler("cpu")`` trains (checked on torch 2.14); whether it is *fast*
there is a measurement, not a rule (``08_gpu_compute`` makes it).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

# AMP_MODES and check_amp are TrainConfig's rules (the one place a run's AMP is decided)
from .config import AMP_MODES, check_amp
from .devices import as_device
from .errors import check_bool, check_choice

__all__ = [
    "AmpMode",
    "AMP_MODES",
    "amp_dtype",
    "autocast_ctx",
    "grad_scaler",
    "check_amp",
    "set_tf32",
]

AmpMode = Literal["off", "bf16", "fp16"]


def amp_dtype(amp: str) -> torch.dtype | None:
    """``'bf16'`` -> ``torch.bfloat16``, ``'fp16'`` -> ``torch.float16``, ``'off'`` -> None."""
    check_choice("amp", amp, AMP_MODES)
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast_ctx(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp``, or a ``nullcontext`` when AMP is off."""
    dtype = amp_dtype(amp)  # whether the device runs it: decided once, by TrainConfig (check_amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=as_device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for fp16 (bf16 has fp32's range: no scaling needed).

    An enabled scaler costs one host sync per step: ``scaler.step`` reads its inf/NaN check
    with ``.item()`` to decide whether to skip the optimizer step. On a GPU that read waits
    for the backward pass to finish; disabled, ``step`` is a plain ``optimizer.step()``.
    """
    amp_dtype(amp)
    return torch.amp.GradScaler(as_device(device).type, enabled=amp == "fp16")


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor cores for fp32 matmuls and cuDNN convolutions.

    PyTorch has two APIs for this switch and refuses a mix of them: after the new
    ``torch.backends.cuda.matmul.fp32_precision = "tf32"``, reading the legacy
    ``torch.get_float32_matmul_precision()`` raises "mix of the legacy and new APIs", and
    after ``torch.backends.cudnn.conv.fp32_precision = "ieee"`` so does reading
    ``torch.backends.cudnn.allow_tf32``. ``torch.compile``'s inductor still reads both
    legacy values on a GPU (torch 2.14), so setting only the new API makes it fail
    (pytorch/pytorch#166387). Setting the *legacy* pair keeps every reader, old and new,
    consistent, so this is the one API the course uses. A global switch, harmless on
    machines without TF32 (the flags are only read by CUDA kernels). Taught in
    ``08_gpu_compute``.

    Example (``fp32_precision``, the new API, exists from torch 2.9 on; the legacy pair this
    sets exists on every torch the course supports):
        >>> set_tf32(False)
        >>> torch.backends.cuda.matmul.fp32_precision, torch.get_float32_matmul_precision()
        ('ieee', 'highest')
    """
    check_bool("enabled", enabled)
    # "high" lets fp32 matmuls use TF32; "highest" keeps them in true fp32
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled  # convolutions: a separate, cuDNN switch
