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
import os
import signal
import sys
import tempfile
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
from .faults import iterate
from .metrics import DeviceAccumulator, evaluate
from .precision import autocast_ctx, grad_scaler
from .timing import Timer

__all__ = ["fit", "make_loader", "TrainingInterrupted", "notice_once", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
# config fields that must match when resuming: changing them mid-run changes the experiment
_RESUME_MUST_MATCH = ("batch_size", "lr", "momentum", "amp", "seed", "channels_last")
_CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "train_sums", "history",
                    "rng", "epoch_rng", "loader_rng", "train_samples", "config")  # fmt: skip
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
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if not isinstance(train, bool):
        raise TypeError(f"train: expected True (shuffled, resumable) or False, got {train!r}")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"dataset: expected a map-style Dataset with __getitem__ and __len__, "
            f"got {type(dataset).__name__}"
        )
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
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only).

    A second signal acts at once (the previous handlers are back). DataLoader workers forked
    meanwhile inherit this handler and ignore Ctrl-C, which reaches the whole process group:
    they keep serving the main process until it has saved. A SIGTERM to the whole group (a
    cluster stopping the job) ends them, and PyTorch's SIGCHLD handler would then raise in
    the middle of a step or of the checkpoint write: after a SIGTERM, whose process is
    ending, it stays off, and the loop sees the failed loader (``_until_failure_after``).
    """
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # in a forked DataLoader worker: the main process decides
            return
        received.append(signum)
        for s, h in previous.items():
            signal.signal(s, h)
        if signum == signal.SIGTERM and hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        name = signal.Signals(signum).name
        os.write(2, f"d2lopt: {name}: saving a checkpoint after this step "
                    f"(send it again to stop without saving)\n".encode())  # fmt: skip

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


def _until_failure_after(signals: list[int], batches: Iterator) -> Iterator:
    """``batches``, ended early when the loader fails after a stop signal.

    A signal to the whole process group can end DataLoader workers too (SIGTERM; Ctrl-C for
    workers not forked inside :func:`fit`), and the next fetch then fails; the steps done so
    far are intact, so ``fit`` still saves them.
    """
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError:
            if signals:
                return
            raise
        yield batch


def _num_samples(loader: Iterable) -> int | None:
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # plain iterables, iterable-style data sets
        return None


def _writable(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ValueError(
            f"out_dir: cannot write to {out} ({exc.strerror or exc}); choose a writable folder"
        ) from None
    return out


def _check_fit_args(net: Any, train_iter: Any, test_iter: Any, **optional: Any) -> None:
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"net: expected an nn.Module such as d2lopt.mlp(), got {type(net).__name__}"
        )
    for name, it in (("train_iter", train_iter), ("test_iter", test_iter)):
        if not isinstance(it, Iterable) and not (it is None and name == "test_iter"):
            raise TypeError(
                f"{name}: expected a DataLoader of (X, y) batches, got {type(it).__name__}"
            )
    expected = {
        "criterion": (callable, "a loss such as nn.CrossEntropyLoss(reduction='none')"),
        "optimizer": (lambda o: isinstance(o, torch.optim.Optimizer), "a torch.optim optimizer"),
        "out_dir": (lambda p: isinstance(p, (str, os.PathLike)), "a folder path"),
        "log_dir": (lambda p: isinstance(p, (str, os.PathLike)), "a folder path"),
        "progress": (lambda b: isinstance(b, bool), "True or False"),
        "on_epoch_end": (callable, "a function taking the epoch's record"),
    }
    for name, value in optional.items():
        ok, what = expected[name]
        if value is not None and not ok(value):
            raise TypeError(f"{name}: expected {what} or None, got {type(value).__name__}")


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
        ``epoch_time`` and ``samples_per_s`` measure the steps this process trained: after
        a mid-epoch resume, the rest of that epoch (the loss still covers all of it).

    Raises:
        TrainingInterrupted: a signal arrived; the checkpoint holds every finished step.
        TypeError, ValueError: a bad argument, an unwritable ``out_dir``, or a checkpoint
            that would not continue this experiment (other config, data or model).
    """
    from tqdm.auto import trange

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    _check_fit_args(net, train_iter, test_iter, criterion=criterion, optimizer=optimizer,
                    out_dir=out_dir, log_dir=log_dir, progress=progress,
                    on_epoch_end=on_epoch_end)  # fmt: skip
    if not isinstance(resume, bool):
        raise TypeError(f"resume: expected True or False, got {resume!r}")
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, the folder whose checkpoint.pt to continue")
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if out is not None and not resume and ckpt_path.exists():
        raise ValueError(
            f"out_dir: {out} already holds a checkpoint; pass resume=True (--resume) to "
            "continue it, or choose another out_dir — nothing was overwritten"
        )
    if out is not None:
        _writable(out)  # fail now, not at the first checkpoint an epoch from now

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
    start_epoch, start_step, state = 0, 0, None
    if resume:
        # RNG states must come back as CPU tensors; load_state_dict copies to the device
        state = load_checkpoint(ckpt_path, map_location="cpu")
        _check_resume(state, ckpt_path, config, _num_samples(train_iter))
        try:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            why = " ".join(str(exc).split())[:160]
            raise ValueError(
                f"resume: the model/optimizer in {ckpt_path} do not fit this net ({why}); "
                "train the same architecture (same --model) or choose a new out_dir"
            ) from None
        scaler.load_state_dict(state["scaler"])
        start_epoch, start_step, history = state["epoch"], state["step"], state["history"]
    epoch_rng = None  # RNG states when this epoch's loader iterator was created

    def checkpoint(epoch: int, step: int, sums: list[float], rng: dict | None = None) -> None:
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "train_sums": sums, "history": history,
                "rng": rng if rng is not None else rng_state(),
                "epoch_rng": epoch_rng if step else None,
                "loader_rng": loader_gen.get_state() if loader_gen is not None else None,
                "train_samples": _num_samples(train_iter), "config": config.to_dict(),
            })  # fmt: skip

    writer = None
    if log_dir is not None or out is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir if log_dir is not None else out / "tb"))
    timer, eval_timer = Timer(device), Timer(device)
    train_sums = DeviceAccumulator(2, device)  # loss sum, samples: summed on device, no sync
    batches = eval_batches = None  # closed in `finally`: an error stops their workers at once

    try:
        with _stop_on_signals(out is not None) as signals:
            if progress is None:  # tqdm.notebook ignores TQDM_DISABLE: read it here, for both
                progress = os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
            bar = trange(start_epoch, config.num_epochs, desc="epoch", disable=not progress)
            for epoch in bar:
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)  # new, reproducible order each epoch
                if loader_gen is not None:
                    loader_gen.manual_seed(config.seed + epoch)  # reproducible worker seeds
                resumed_mid_epoch = epoch == start_epoch and start_step > 0
                if epoch == start_epoch and state is not None:
                    # the RNGs as the interrupted run had them when it created this iterator
                    set_rng_state(state["epoch_rng"] if resumed_mid_epoch else state["rng"])
                if ckpt_path is not None:
                    epoch_rng = rng_state()  # samplers and worker seeds draw from it in iter()
                train_sums.reset()
                net.train()
                timer.start()
                batches = iterate(train_iter)  # a loader failure: clear error, workers stopped
                step, resumed_samples = 0, 0.0
                if resumed_mid_epoch:
                    _skip(batches, start_step)  # same order: replay the sampler, skip done steps
                    step = start_step
                    train_sums.load_state(state["train_sums"])
                    resumed_samples = state["train_sums"][1]  # trained before the interruption
                    set_rng_state(state["rng"])
                    if loader_gen is not None and state["loader_rng"] is not None:
                        loader_gen.set_state(state["loader_rng"])
                    timer.start()  # the speed of this process's steps: not the replayed skip
                for X, y in _until_failure_after(signals, batches):
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
                    if signals:
                        break
                if signals:  # a signal arrived: save this exact point and stop
                    # no step yet: this epoch restarts from its start, with its start's RNGs
                    checkpoint(epoch, step, train_sums.values(), None if step else epoch_rng)
                    raise TrainingInterrupted(signals[0], ckpt_path)
                epoch_time = timer.stop()
                loss_sum, seen = train_sums.values()  # the epoch's one training-side sync
                # after a mid-epoch resume, the loss covers the whole epoch but the time only
                # this process's part: divide by the samples trained in that time
                trained = seen - resumed_samples
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / seen if seen else math.nan,
                    "test_loss": None,
                    "test_acc": None,
                    "epoch_time": epoch_time,
                    "eval_time": 0.0,
                    "samples_per_s": trained / epoch_time if epoch_time > 0 else math.nan,
                }
                last = epoch + 1 == config.num_epochs
                if test_iter is not None and ((epoch + 1) % config.eval_every == 0 or last):
                    eval_timer.start()
                    eval_batches = iterate(test_iter)
                    result = evaluate(model, eval_batches, criterion, device)  # C11/C13
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
                if signals and not last:  # arrived during evaluation: the epoch is saved
                    raise TrainingInterrupted(signals[0], ckpt_path)
    finally:
        for loader_batches in (batches, eval_batches):
            if loader_batches is not None:
                loader_batches.close()
        if writer is not None:
            writer.close()
    return history


def _check_resume(
    state: dict[str, Any], path: Path, config: TrainConfig, samples: int | None
) -> None:
    """Refuse a checkpoint that would not continue *this* experiment, naming the fix."""
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(
            f"resume: {path} lacks {', '.join(missing)} (not written by d2lopt.fit); "
            "delete it to start over, or choose another out_dir"
        )
    for key in _RESUME_MUST_MATCH:
        if state["config"].get(key) != getattr(config, key):
            raise ValueError(
                f"resume: checkpoint was trained with {key}={state['config'].get(key)!r} but "
                f"config has {key}={getattr(config, key)!r}; use the same value or a new "
                "out_dir"
            )
    saved = state["train_samples"]
    if saved is not None and samples is not None and saved != samples:
        raise ValueError(
            f"resume: checkpoint was trained on {saved} samples but train_iter has {samples}; "
            "use the same training data (--n-train) or a new out_dir"
        )
    needed = state["epoch"] + (1 if state["step"] else 0)
    if needed > config.num_epochs:
        raise ValueError(
            f"TrainConfig.num_epochs: the checkpoint in {path.parent} has already trained "
            f"into epoch {needed}; set num_epochs (--epochs) >= {needed} to continue it"
        )


def _write_metrics(out: Path, config: TrainConfig, history: list[dict[str, Any]]) -> None:
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps({"config": config.to_dict(), "epochs": history}, indent=2))
    tmp.replace(out / "metrics.json")
