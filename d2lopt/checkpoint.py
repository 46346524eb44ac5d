"""Atomic, safely loadable checkpoints with every RNG state (taught in ``04_training_loop``).

A checkpoint is written to a temporary file in the same folder and renamed over the old
one, so a crash mid-write never leaves a truncated file. It is loaded with
``torch.load(weights_only=True)``: plain tensors, numbers, strings and containers only, so a
checkpoint from elsewhere cannot run code on load.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .devices import as_device

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, as ``weights_only``-loadable values."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (from any device: RNG states live on the CPU)."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= state.keys():
        raise ValueError(
            "state: expected the dict returned by d2lopt.checkpoint.rng_state() "
            "(keys 'python', 'numpy', 'torch' and optionally 'cuda')"
        )
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# what torch.load(weights_only=True) rebuilds: checked at save time, not at the failed resume
_SAFE_SCALARS = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device)
_SAFE_CONTAINERS = (dict, OrderedDict, Counter, list, tuple, torch.Size, set)


def _check_loadable(value: Any, where: str) -> None:
    kind = type(value)
    if kind in _SAFE_SCALARS or kind in (torch.Tensor, torch.nn.Parameter):
        return
    if kind not in _SAFE_CONTAINERS:  # exact types: np.float64 is a float but pickles as numpy
        raise TypeError(
            f"payload: {where} is a {kind.__module__}.{kind.__name__}, which "
            "torch.load(weights_only=True) refuses to load; store tensors, Python numbers, "
            "strings and containers of them (e.g. obj.state_dict(), float(x), torch.from_numpy(a))"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_loadable(key, f"{where} key {key!r}")
            _check_loadable(item, f"{where}[{key!r}]")
    else:
        for i, item in enumerate(value):
            _check_loadable(item, f"{where}[{i}]")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename).

    Raises:
        TypeError: ``payload`` holds something ``weights_only`` loading would refuse (found
            now rather than when resuming).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload: expected a dict, got {type(payload).__name__}")
    _check_loadable(payload, "payload")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: {path} is a folder; give a file name such as {path}/checkpoint.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; honour the user's umask instead
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        ValueError: the file is missing or is not a readable d2lopt checkpoint, with the fix.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    if isinstance(map_location, (str, torch.device)):
        map_location = as_device(map_location, "map_location")
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"resume: no checkpoint at {path}; train without --resume first, "
            "or point --out at the folder of the run to continue"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"resume: refused to load {path}: it holds objects other than tensors, numbers, "
            "strings and containers (weights_only=True: a checkpoint from elsewhere could run "
            "code), or it is corrupt; delete it to start over, or restore a good copy"
        ) from exc
    except Exception as exc:  # truncated zip, empty file, random bytes: all "corrupt"
        raise ValueError(
            f"resume: checkpoint {path} is corrupt or not a d2lopt checkpoint "
            f"({type(exc).__name__}); delete it to start over, or restore a good copy"
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload or "epoch" not in payload:
        raise ValueError(
            f"resume: {path} is not a d2lopt training checkpoint (missing model/epoch); "
            "delete it to start over"
        )
    return payload
