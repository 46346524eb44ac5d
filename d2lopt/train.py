"""The article's training loop with every optimization as one visible line (``04_training_loop``).

``fit`` is the loop the course builds up: device and precision are decided once, then the
same lines run on CPU, CUDA and MPS. It checkpoints atomically, turns SIGINT/SIGTERM into
"save and stop", resumes bit-for-bit (same sample order, same RNG streams), logs to
TensorBoard and returns the per-epoch history.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import EpochRandomSampler, seed_worker
from .metrics import DeviceAccumulator, evaluate
from .precision import autocast_ctx, grad_scaler
from .timing import Timer

__all__ = ["fit", "make_loader", "TrainingInterrupted", "notice_once", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
# config fields that must match when resuming: changing them mid-run changes the experiment
_RESUME_MUST_MATCH = ("batch_size", "lr", "momentum", "amp", "seed", "channels_last")
_noticed: set[str] = set()


def notice_once(key: str, message: str) -> None:
    """Print one line to stderr the first time ``key`` is seen in this process."""
    if key not in _noticed:
        _noticed.add(key)
        print(f"d2lopt: {message}", file=sys.stderr)


class TrainingInterrupted(Exception):
    """Raised by :func:`fit` after a signal: the checkpoint at ``path`` holds all progress."""

    def __init__(self, signum: int, path: Path) -> None:
        self.signum, self.path = signum, path
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: progress saved to {path}; continue with resume=True")


def make_loader(dataset: Dataset, config: TrainConfig, *, train: bool) -> DataLoader:
    """A ``DataLoader`` configured from ``config`` (shuffled, resumable order for training).

    ``pin_memory`` is only requested where it can work (CUDA); elsewhere d2lopt says so once
    instead of letting PyTorch warn on every loader.
    """
    device = config.torch_device
    pin = config.pin_memory and device.type == "cuda"
    if config.pin_memory and not pin:
        notice_once("pin", f"pin_memory needs CUDA; running without it on {device.type}")
    workers = config.num_workers
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=EpochRandomSampler(len(dataset), config.seed) if train else None,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=config.prefetch_factor if workers else None,
        persistent_workers=config.persistent_workers,
        worker_init_fn=seed_worker if workers else None,
        generator=torch.Generator().manual_seed(config.seed),
    )


@contextlib.contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _skip(batches: Iterator, n: int) -> None:
    for _ in itertools.islice(batches, n):
        pass


def fit(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable | None,
    config: TrainConfig,
    *,
    criterion: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``net`` with the article's loop; return one record per epoch.

    Args:
        net: the model (moved to ``config.device`` once, here).
        train_iter: training batches ``(X, y)``; a sampler with ``set_epoch`` gets it called.
        test_iter: evaluation batches, or ``None`` to skip evaluation.
        config: hyper-parameters and optimization switches.
        criterion: per-sample loss; default ``CrossEntropyLoss(reduction='none')``.
        optimizer: default SGD with ``config.lr`` and ``config.momentum``.
        out_dir: receives ``checkpoint.pt`` (every epoch, and on SIGINT/SIGTERM),
            ``metrics.json`` and TensorBoard events (``out_dir/tb``).
        resume: continue from ``out_dir/checkpoint.pt``.
        log_dir: TensorBoard folder (defaults to ``out_dir/tb``; ``None`` without out_dir).
        progress: show a tqdm bar (``None``: tqdm decides, honouring ``TQDM_DISABLE``).
        on_epoch_end: called with each epoch's record (live plots).

    Returns:
        ``[{"epoch", "train_loss", "test_loss", "test_acc", "epoch_time", "eval_time",
        "samples_per_s"}, ...]``; ``test_*`` are ``None`` for epochs without evaluation.

    Raises:
        TrainingInterrupted: a signal arrived; the checkpoint holds every finished step.
    """
    from tqdm.auto import trange

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, the folder whose checkpoint.pt to continue")
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if out is not None and not resume and ckpt_path.exists():
        raise ValueError(
            f"out_dir: {out} already holds a checkpoint; pass resume=True (--resume) to "
            "continue it, or choose another out_dir — nothing was overwritten"
        )

    # ---- decided once: device, memory format, precision ------------------------------------
    device = config.torch_device
    nb = config.non_blocking  # async copy: returns at once, overlaps compute (pinned only)
    if config.pin_memory and device.type != "cuda":
        notice_once("pin", f"pin_memory needs CUDA; running without it on {device.type}")
    torch.manual_seed(config.seed)
    net.to(device)  # C6: the model moves once, not per batch
    if config.channels_last:
        net.to(memory_format=torch.channels_last)  # NHWC lets conv kernels skip transposes
    model = torch.compile(net) if config.compile else net
    criterion = criterion or nn.CrossEntropyLoss(reduction="none")  # per-sample losses
    optimizer = optimizer or torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum
    )
    autocast = autocast_ctx(device, config.amp)  # nullcontext when amp='off'
    scaler = grad_scaler(device, config.amp)  # disabled (a no-op) unless fp16
    sampler = getattr(train_iter, "sampler", None)
    loader_gen = getattr(train_iter, "generator", None)

    history: list[dict[str, Any]] = []
    start_epoch, start_step, saved_rng, saved_sums = 0, 0, None, None
    if resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        for key in _RESUME_MUST_MATCH:
            if state["config"].get(key) != getattr(config, key):
                raise ValueError(
                    f"resume: checkpoint was trained with {key}={state['config'].get(key)!r} but "
                    f"config has {key}={getattr(config, key)!r}; use the same value or a new "
                    "out_dir"
                )
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, start_step = state["epoch"], state["step"]
        history, saved_rng, saved_sums = state["history"], state["rng"], state["train_sums"]

    def checkpoint(epoch: int, step: int, sums: list[float]) -> None:
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "train_sums": sums, "history": history, "rng": rng_state(),
                "config": config.to_dict(),
            })  # fmt: skip

    writer = None
    if log_dir is not None or out is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir if log_dir is not None else out / "tb"))
    timer, eval_timer = Timer(device), Timer(device)
    train_sums = DeviceAccumulator(2, device)  # loss sum, samples: summed on device, no sync

    try:
        with _stop_on_signals(out is not None) as signals:
            bar = {} if progress is None else {"disable": not progress}  # None: TQDM_DISABLE rules
            for epoch in trange(start_epoch, config.num_epochs, desc="epoch", **bar):
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)  # new, reproducible order each epoch
                if loader_gen is not None:
                    loader_gen.manual_seed(config.seed + epoch)  # reproducible worker seeds
                resumed_mid_epoch = epoch == start_epoch and start_step > 0
                if epoch == start_epoch and saved_rng is not None and not resumed_mid_epoch:
                    set_rng_state(saved_rng)
                train_sums.reset()
                net.train()
                timer.start()
                batches = iter(train_iter)
                step = 0
                if resumed_mid_epoch:
                    _skip(batches, start_step)  # same order: replay the sampler, skip done steps
                    step = start_step
                    train_sums.load_state(saved_sums)
                    set_rng_state(saved_rng)
                for X, y in batches:
                    X = X.to(device, non_blocking=nb)
                    if config.channels_last:
                        X = X.contiguous(memory_format=torch.channels_last)
                    y = y.to(device, non_blocking=nb)
                    with autocast:  # fp32 weights, low-precision matmuls/convs
                        loss = criterion(model(X), y)
                    optimizer.zero_grad(set_to_none=True)  # drop grads instead of a memset
                    scaler.scale(loss.mean()).backward()  # scale() is identity unless fp16
                    scaler.step(optimizer)
                    scaler.update()
                    train_sums.add(loss.detach().float().sum(), y.shape[0])  # no host sync
                    step += 1
                    if signals:  # a signal arrived: save this exact point and stop
                        checkpoint(epoch, step, train_sums.values())
                        raise TrainingInterrupted(signals[0], ckpt_path)
                epoch_time = timer.stop()
                loss_sum, seen = train_sums.values()  # the epoch's one training-side sync
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / seen if seen else math.nan,
                    "test_loss": None,
                    "test_acc": None,
                    "epoch_time": epoch_time,
                    "eval_time": 0.0,
                    "samples_per_s": seen / epoch_time if epoch_time > 0 else math.nan,
                }
                last = epoch + 1 == config.num_epochs
                if test_iter is not None and ((epoch + 1) % config.eval_every == 0 or last):
                    eval_timer.start()
                    result = evaluate(model, test_iter, criterion, device)  # C11/C13
                    record["eval_time"] = eval_timer.stop()
                    record["test_loss"], record["test_acc"] = result["loss"], result["accuracy"]
                history.append(record)
                checkpoint(epoch + 1, 0, [0.0, 0.0])
                if writer is not None:
                    for key in ("train_loss", "test_loss", "test_acc", "samples_per_s"):
                        if record[key] is not None:
                            writer.add_scalar(key, record[key], epoch + 1)
                    writer.flush()
                if out is not None:
                    _write_metrics(out, config, history)
                if on_epoch_end is not None:
                    on_epoch_end(record)
    finally:
        if writer is not None:
            writer.close()
    return history


def _write_metrics(out: Path, config: TrainConfig, history: list[dict[str, Any]]) -> None:
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps({"config": config.to_dict(), "epochs": history}, indent=2))
    tmp.replace(out / "metrics.json")
