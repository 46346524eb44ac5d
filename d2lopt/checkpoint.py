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
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    """Restore what :func:`rng_state` captured."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
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
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"resume: no checkpoint at {path}; train without --resume first, "
            "or point --out at the folder of the run to continue"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
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
