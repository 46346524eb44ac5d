"""Atomic, safely loadable checkpoints with every RNG state (taught in ``04_training_loop``).

A checkpoint is written to a temporary file in the same folder and renamed over the old
one, so a crash mid-write never leaves a truncated file. It is loaded with
``torch.load(weights_only=True)``: plain tensors, numbers, strings and containers only, so a
checkpoint from elsewhere cannot run code on load. :func:`check_resume` is the one test of
whether a checkpoint continues *this* experiment, for ``fit`` and the DDP program alike.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .devices import as_device
from .errors import ParamError

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "CHECKPOINT_NAME",
    "batch_change",
    "check_resume",
    "resume_position",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_metrics",
]

CHECKPOINT_NAME = "checkpoint.pt"  # in the run's folder (fit's out_dir, the program's --out)
# settings that define the experiment: a checkpoint continues only with the same values (the
# batch may change if the samples per optimizer step stay the same: see check_resume)
RESUME_MUST_MATCH = ("lr", "momentum", "amp", "seed", "channels_last")
_CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "train_sums", "history",
                    "config")  # fmt: skip


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
        # this rank's device generator only (its current device), not get_rng_state_all():
        # set_rng_state_all indexes torch.cuda.default_generators[i] for every saved state
        # (pytorch/pytorch torch/cuda/random.py, set_rng_state_all -> set_rng_state), an
        # IndexError on a node with fewer GPUs, e.g. an elastic job moved to a smaller node
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
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
        saved = state["cuda"]
        if isinstance(saved, (list, tuple)):  # older checkpoints: every GPU's generator
            index = torch.cuda.current_device()
            saved = saved[index] if index < len(saved) else None
        if saved is not None:  # into this rank's device generator, whatever the GPU count
            torch.cuda.set_rng_state(saved.cpu(), torch.cuda.current_device())


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
        raise ParamError(
            "resume",
            f"no checkpoint at {path}; train without --resume first, "
            "or point --out at the folder of the run to continue",
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ParamError(
            "resume",
            f"refused to load {path}: it holds objects other than tensors, numbers, "
            "strings and containers (weights_only=True: a checkpoint from elsewhere could run "
            "code), or it is corrupt; delete it to start over, or restore a good copy",
        ) from exc
    except Exception as exc:  # truncated zip, empty file, random bytes: all "corrupt"
        raise ParamError(
            "resume",
            f"checkpoint {path} is corrupt or not a d2lopt checkpoint "
            f"({type(exc).__name__}); delete it to start over, or restore a good copy",
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload or "epoch" not in payload:
        raise ParamError(
            "resume",
            f"{path} is not a d2lopt training checkpoint (missing model/epoch); "
            "delete it to start over",
        )
    return payload


def check_resume(
    state: dict[str, Any], path: Path, config: TrainConfig, samples: int | None = None, *,
    world_size: int = 1, accumulate: int = 1, strategy: str = "ddp",
) -> None:  # fmt: skip
    """Refuse a checkpoint that would not continue *this* experiment, naming the fix.

    The one check for ``fit`` and the DDP program: same settings, same data, same strategy,
    epochs left to train, and the same samples per optimizer step. The batch per rank may
    change with the world size (an elastic restart) when ``world x batch x accumulate`` stays.
    """
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ParamError(
            "resume",
            f"{path} lacks {', '.join(missing)} (not written by d2lopt.fit); "
            "delete it to start over, or choose another out_dir",
        )
    old = state["config"]
    for key in RESUME_MUST_MATCH:
        if old.get(key) != getattr(config, key):
            was, new = old.get(key), getattr(config, key)
            raise ParamError(
                "resume",
                f"checkpoint was trained with {key}={was!r} but config has {key}={new!r}; "
                "use the same value or a new out_dir",
            )
    if state.get("strategy", "ddp") != strategy:
        raise ParamError(
            "strategy",
            f"the checkpoint was written with strategy {state.get('strategy')!r}, this run "
            f"has {strategy!r}; use the same strategy or a new out_dir",
        )
    step_samples = world_size * config.batch_size * accumulate
    old_b = old.get("batch_size")
    old_step = state.get("global_batch", old_b)  # samples per optimizer step, all ranks
    if config.batch_size != old_b and step_samples != old_step:
        raise ParamError(
            "batch_size",
            f"checkpoint was trained with batch_size={old_b!r} ({old_step} samples per step) "
            f"but config has batch_size={config.batch_size!r} ({step_samples}); use the same "
            "batch, one that gives as many samples per step, or a new out_dir",
        )
    saved = state.get("train_samples")
    if saved is not None and samples is not None and saved != samples:
        raise ParamError(
            "resume",
            f"checkpoint was trained on {saved} samples, this run has {samples}; train on the "
            f"same {saved} (n_train {saved}), or use a new out_dir",
        )
    needed = state["epoch"] + (1 if state["step"] else 0)
    if needed > config.num_epochs:
        raise ParamError(
            "num_epochs",
            f"the checkpoint in {path.parent} has already trained "
            f"into epoch {needed}; set num_epochs >= {needed} to continue it",
            owner="TrainConfig",
        )


def resume_position(
    state: dict[str, Any], *, world_size: int, accumulate: int, batch_size: int
) -> tuple[int, int]:
    """Where a checkpoint's epoch stands for this run: ``(micro-batches done, global step)``.

    Rank r takes every world-th index of one permutation, so the *global* sample stream is
    the same for any world size: the samples the checkpoint's steps consumed carry over to a
    job restarted with more or fewer processes (elastic ``--nnodes MIN:MAX``), counted in
    this run's micro-batches (``10_ddp``, ``11_scheduling``).
    """
    done = state["step"] * state.get("global_batch", state["config"]["batch_size"])
    skip = done // (world_size * accumulate * batch_size) * accumulate
    history_steps = sum(rec.get("steps", 0) for rec in state["history"])
    return skip, history_steps + skip // accumulate


def batch_change(
    state: dict[str, Any], config: TrainConfig, *, world_size: int = 1, accumulate: int = 1
) -> str | None:
    """What a resume on another number of ranks does to the global batch, and how to keep it.

    The batch is per rank, so resuming an N-rank run on N/2 ranks halves the samples per
    optimizer step (128 -> 64): a different trajectory, which :func:`check_resume` allows
    (an elastic restart must continue) but the learner should hear about, with the
    ``--accumulate`` (or ``--batch-size``) that keeps the old step. ``None``: unchanged.
    """
    old = state["config"]
    old_step = state.get("global_batch", old["batch_size"])
    new_step = world_size * config.batch_size * accumulate
    if new_step == old_step:
        return None
    was = (f"{state.get('world_size', 1)} rank(s) x batch {old['batch_size']} x accumulate "
           f"{state.get('accumulate', 1)}")  # fmt: skip
    text = (
        f"the checkpoint trained {old_step} samples per optimizer step ({was}); this run "
        f"takes {new_step} ({world_size} x {config.batch_size} x {accumulate}), so training "
        "continues on another trajectory"
    )
    per_step = world_size * config.batch_size
    if old_step % per_step == 0:
        return text + f"; to keep {old_step}, use --accumulate {old_step // per_step}"
    if old_step % (world_size * accumulate) == 0:
        keep = old_step // (world_size * accumulate)
        return text + f"; to keep {old_step}, use --batch-size {keep}"
    return text


def write_metrics(
    out: Path, config: TrainConfig, history: list[dict[str, Any]], world_size: int = 1
) -> None:
    """``out/metrics.json``: config and per-epoch records, replaced atomically."""
    tmp = out / ".metrics.json.tmp"
    payload = {"config": config.to_dict(), "world_size": world_size, "epochs": history}
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out / "metrics.json")
