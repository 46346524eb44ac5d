"""Mixed precision decided once (taught in ``08_gpu_compute``).

``autocast_ctx`` returns a null context when AMP is off and ``grad_scaler`` a disabled
scaler unless fp16 needs one, so the training loop has the same lines in every precision.
This is the current ``torch.amp`` API; the article's ``torch.cuda.amp`` is deprecated.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from .devices import as_device

__all__ = ["AmpMode", "AMP_MODES", "amp_dtype", "autocast_ctx", "grad_scaler", "check_amp"]

AmpMode = Literal["off", "bf16", "fp16"]
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")


def amp_dtype(amp: str) -> torch.dtype | None:
    """``'bf16'`` -> ``torch.bfloat16``, ``'fp16'`` -> ``torch.float16``, ``'off'`` -> None."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp: must be one of {AMP_MODES}, got {amp!r}")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def check_amp(device: torch.device | str, amp: str) -> None:
    """Raise ``ValueError`` when ``device`` cannot run ``amp``, saying what to use instead."""
    amp_dtype(amp)
    device = as_device(device)
    if amp == "fp16" and device.type == "cpu":
        raise ValueError(
            "amp: 'fp16' needs a CUDA or MPS device (fp16 GradScaler training is not supported "
            "on CPU); use amp='bf16' or amp='off' on CPU"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"amp: 'bf16' is not supported by {torch.cuda.get_device_name(device)}; "
            "use amp='fp16' (with its GradScaler) or amp='off'"
        )


def autocast_ctx(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp``, or a ``nullcontext`` when AMP is off."""
    check_amp(device, amp)  # fails here, with the fix, rather than inside the first matmul
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=as_device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for fp16 (bf16 has fp32's range: no scaling needed)."""
    check_amp(device, amp)
    return torch.amp.GradScaler(as_device(device).type, enabled=amp == "fp16")
