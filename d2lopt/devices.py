"""Pick devices once, and synchronize them when timing (taught in ``01_environment``).

The course runs on CPU, CUDA and Apple MPS. Every helper that needs a device goes through
:func:`resolve_device`, so a wrong or missing device fails early with one clear message.
"""

from __future__ import annotations

import os

import torch

from .errors import ParamError, check_int

__all__ = [
    "mps_available",
    "try_gpu",
    "try_all_gpus",
    "resolve_device",
    "synchronize",
    "supports_bf16",
    "accelerator_name",
    "as_device",
]


def mps_available() -> bool:
    """Apple's MPS backend is built into this PyTorch and usable on this machine."""
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def try_gpu(i: int = 0) -> torch.device:
    """Return accelerator ``i`` if it exists (CUDA, then MPS), else the CPU.

    Same contract as ``d2l.try_gpu``, extended to Apple MPS.

    Example:
        >>> try_gpu().type in {"cpu", "cuda", "mps"}
        True
    """
    check_int("i", i, 0)
    if torch.cuda.is_available() and i < torch.cuda.device_count():
        return torch.device(f"cuda:{i}")
    if i == 0 and mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Return every accelerator, or ``[cpu]`` on a CPU-only machine (never an empty list)."""
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if mps_available():
        return [torch.device("mps")]
    return [torch.device("cpu")]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn ``None``/``"auto"``/``"cpu"``/``"cuda:1"``/``"mps"`` into an available device.

    Raises:
        ValueError: the name is unknown or the device is not present on this machine,
            with the fix in the message.
    """
    if device is None or device == "auto":
        return try_gpu()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParamError(
            "device", f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamError(
                "device",
                f"{device!r} requested but CUDA is not available on this machine; "
                "use device='cpu' or 'auto'",
            )
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ParamError(
                "device",
                f"{device!r} requested but only {torch.cuda.device_count()} CUDA "
                f"device(s) exist; use an index below {torch.cuda.device_count()}",
            )
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not mps_available():
            raise ParamError(
                "device",
                f"{device!r} requested but Apple MPS is not available; use device='cpu' or 'auto'",
            )
        return dev
    if dev.type == "cpu":
        return torch.device("cpu")
    raise ParamError("device", f"{device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")


def as_device(device: torch.device | str | int, name: str = "device") -> torch.device:
    """Parse ``device`` (keeping ``'cuda'`` without an index) and check it is present.

    Unlike :func:`resolve_device` it does not pick an index, so ``'cuda'`` keeps meaning
    "the current CUDA device" (what ``torch.cuda.set_device`` chose under DDP).

    Raises:
        TypeError: ``device`` is not a string, ``torch.device`` or int.
        ValueError: unknown, or not present on this machine; the message names ``name``.
    """
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(
            f"{name}: expected a torch.device or a string such as 'cpu' or 'cuda', "
            f"got {type(device).__name__}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParamError(
            name, f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError(
            name,
            f"{str(dev)!r} requested but CUDA is not available on this machine; "
            "use 'cpu' or d2lopt.try_gpu()",
        )
    if dev.type == "mps" and not mps_available():
        raise ParamError(
            name,
            "'mps' requested but Apple MPS is not available; use 'cpu' or d2lopt.try_gpu()",
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ParamError(name, f"{str(dev)!r} is not supported; use 'cpu', 'cuda' or 'mps'")
    return dev


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU): timings must include them."""
    dev = as_device(device) if device is not None else try_gpu()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def supports_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast is *fast* on ``device`` (hardware units), not merely allowed.

    PyTorch runs bf16 almost everywhere, but only some hardware computes it natively:
    CPUs with AVX512-BF16 or AMX, NVIDIA GPUs of compute capability 8.0 (Ampere) and newer.
    Elsewhere it is emulated and usually slower than fp32 (``08_gpu_compute``). On CUDA
    this asks ``torch.cuda.is_bf16_supported(including_emulation=False)``: its default
    (``True``) also answers yes for a T4 or V100, which only emulate bf16.
    """
    dev = as_device(device)
    if dev.type == "cuda":
        with torch.cuda.device(dev):  # is_bf16_supported asks the *current* device
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if dev.type == "mps":
        return True
    return cpu_has_bf16_units()


# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: no bf16 dot products
_NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                 "AVX512_CORE_VNNI"}  # fmt: skip


def cpu_has_bf16_units() -> bool:
    """True when the CPU advertises native bf16 instructions (AVX512-BF16 or AMX-BF16) and
    this process may use them.

    ``ONEDNN_MAX_CPU_ISA`` (oneDNN runs the convolutions and matmuls) or
    ``ATEN_CPU_CAPABILITY`` capped below AVX-512 make the process compute like a CPU without
    them: that is how the course emulates a common AVX2 laptop, where bf16 autocast runs
    about 8x slower than fp32 (``08_gpu_compute``, ``d2lopt ladder``).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return isa not in _NO_BF16_ISAS and aten not in ("default", "avx2", "zvector", "vsx")


def accelerator_name(device: torch.device | str) -> str:
    """A human name for the device, for reports (``NVIDIA H100 80GB HBM3``, ``cpu``...)."""
    dev = as_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return "Apple MPS"
    import platform

    return platform.processor() or platform.machine() or "cpu"
