"""What this machine has, and where to start tuning on it (``01_environment``, ``d2lopt env``).

Extends the article's environment check (PyTorch version, CUDA availability, GPU count) with
what the later lessons depend on: cores for loader workers, bf16/TF32 support for AMP, the
distributed backends for DDP, and turns it into recommended starting settings.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

from .devices import cpu_has_bf16_units, mps_available, supports_bf16, try_gpu
from .errors import check_int

__all__ = [
    "environment_report",
    "format_report",
    "recommend_settings",
    "recommend_workers",
    "usable_cores",
]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def environment_report() -> dict[str, Any]:
    """Versions, devices and capabilities of this machine, as plain JSON-able values."""
    import numpy
    import torch.distributed as dist
    import torchvision

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({
                "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}", "tf32": p.major >= 8,
                "bf16": supports_bf16(f"cuda:{i}"),  # bf16 units, not emulation
            })  # fmt: skip
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cpu_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "cpu_bf16_units": cpu_has_bf16_units(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": gpus,
        "mps_available": mps_available(),
        "default_device": str(try_gpu()),
        "distributed": dist.is_available(),
        "nccl": dist.is_available() and dist.is_nccl_available(),
        "gloo": dist.is_available() and dist.is_gloo_available(),
    }


def recommend_workers(cores: int) -> int:
    """Loader workers to start with: half the cores (C8), none without a spare core.

    A worker process only helps when it has a core of its own while the main process
    trains; with one or two cores the training step already keeps them busy, and the
    course's own sweeps on two cores find that workers do not help (``05_disk_to_memory``,
    claims C2, C3, C8). A starting point either way: ``d2lopt tune-loader`` measures it.
    """
    check_int("cores", cores, 1)  # the number of usable cores
    return 0 if cores <= 2 else cores // 2


def recommend_settings(report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Starting settings for this machine, each with the lesson that explains it.

    These are *starting points* (the article's rules of thumb, adjusted where the course's
    measurements disagree: no workers without a spare core); ``d2lopt tune-loader`` and
    ``d2lopt ladder`` measure what is actually best here. Taught in ``01_environment``.
    """
    r = report or environment_report()
    cuda = r["cuda_available"]
    if cuda:
        amp = "bf16" if all(g["bf16"] for g in r["gpus"]) else "fp16"
    elif r["mps_available"]:
        amp = "fp16"
    else:
        amp = "bf16" if r["cpu_bf16_units"] else "off"
    workers = recommend_workers(r["cpu_cores"])
    return {
        "device": r["default_device"],
        "num_workers": workers,
        "prefetch_factor": 2 if workers else None,  # both need workers (TrainConfig checks)
        "persistent_workers": workers > 0,
        "pin_memory": cuda,
        "non_blocking": cuda,
        "amp": amp,
        "batch_size": 512 if (cuda or r["mps_available"]) else 256,
        "ddp_backend": "nccl" if r["nccl"] and r["gpu_count"] > 0 else "gloo",
    }


def format_report(report: dict[str, Any], recommended: dict[str, Any]) -> str:
    """Human-readable text for ``d2lopt env``."""
    lines = [
        "d2lopt environment report",
        f"  Python              {report['python']} on {report['platform']}",
        f"  PyTorch             {report['torch']} (torchvision {report['torchvision']}, "
        f"numpy {report['numpy']})",
        f"  CPU cores           {report['cpu_cores']} usable, {report['torch_threads']} torch "
        f"threads, bf16 units: {'yes' if report['cpu_bf16_units'] else 'no'}",
        f"  Memory              {report['memory_gib']} GiB",
        f"  CUDA available      {report['cuda_available']} (CUDA {report['cuda_version']}, "
        f"cuDNN {report['cudnn_version']})",
        f"  Number of GPUs      {report['gpu_count']}",
    ]
    for i, g in enumerate(report["gpus"]):
        lines.append(
            f"    cuda:{i}  {g['name']}, {g['memory_gib']} GiB, sm_{g['capability']}, "
            f"TF32 {'yes' if g['tf32'] else 'no'}, bf16 {'yes' if g['bf16'] else 'no'}"
        )
    lines += [
        f"  Apple MPS           {report['mps_available']}",
        f"  Distributed         gloo {report['gloo']}, nccl {report['nccl']}",
        "",
        "recommended starting settings: rules of thumb, not measurements; measure the loader",
        "with `d2lopt tune-loader --dataset module:attr`, everything with `d2lopt ladder`",
    ]
    notes = {"prefetch_factor": "(needs workers)"}
    if recommended["num_workers"] == 0:
        notes["num_workers"] = (
            f"(no spare core among {report['cpu_cores']}: a worker would compete with training)"
        )
    else:
        notes["num_workers"] = f"(half the {report['cpu_cores']} cores, the article's rule)"
    for k, v in recommended.items():
        text = "-" if v is None else str(v)
        note = notes.get(k, "") if k == "num_workers" or v is None else ""
        lines.append(f"  --{k.replace('_', '-'):<20}{text} {note}".rstrip())
    return "\n".join(lines)
