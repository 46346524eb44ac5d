"""The article's training loop with every optimization as one visible line (``04_training_loop``).

``fit`` is the loop the course builds up: device and precision are decided once, then the
same lines run on CPU, CUDA and MPS. It checkpoints atomically, turns SIGINT/SIGTERM into
"save and stop", resumes bit-for-bit (same sample order, same RNG streams), logs to
TensorBoard and returns the per-epoch history. The same loop trains one rank of a torchrun
job: ``replicas=`` carries the DDP switches, decided once (``10_ddp``), and the DDP program
``python -m d2lopt.ddp`` calls ``fit``. Its phases live in :mod:`d2lopt.loop`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .checkpoint import CHECKPOINT_NAME, check_resume, load_checkpoint
from .config import TrainConfig
from .data import EpochRandomSampler, check_map_style, notice_once, seed_worker
from .distributed import Replicas
from .errors import ParamError, check_bool, check_int, writable_dir
from .loop import Loop, batches_per_epoch, num_samples

__all__ = [
    "CHECKPOINT_NAME",
    "TrainingInterrupted",
    "fit",
    "make_loader",
    "notice_once",
    "pin_memory_for",
]


class TrainingInterrupted(Exception):
    """Raised by :func:`fit` after a signal: the checkpoint at ``path`` holds all progress."""

    def __init__(self, signum: int, path: Path) -> None:
        self.signum, self.path = signum, path
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: progress saved to {path}; continue with resume=True")


def make_loader(
    dataset: Dataset, config: TrainConfig, *, train: bool, sampler: Sampler | None = None,
    collate_fn: Callable[[list], Any] | None = None, announce: bool = True,
) -> DataLoader:  # fmt: skip
    """A ``DataLoader`` configured from ``config`` (shuffled, resumable order for training).

    The package's one place that builds a DataLoader: ``fit``'s callers, each rank of the
    DDP program (``sampler``: its ``DistributedSampler``) and the loader sweeps of the lab
    (``d2lopt.lab.loading.build_loader``). ``pin_memory`` is only requested where it can
    work (CUDA); elsewhere d2lopt says so once (``announce``) instead of letting PyTorch
    warn on every loader.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    check_bool("train", train)  # True: shuffled, resumable; False: in order
    check_map_style(dataset)
    pin = pin_memory_for(config.pin_memory, config.torch_device, announce=announce)
    workers = config.num_workers
    if sampler is None and train:
        sampler = EpochRandomSampler(len(dataset), config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,  # None: PyTorch's default_collate
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=config.prefetch_factor if workers else None,
        persistent_workers=config.persistent_workers,
        worker_init_fn=seed_worker if workers else None,
        generator=torch.Generator().manual_seed(config.seed),
    )


def pin_memory_for(requested: bool, device: torch.device, *, announce: bool = True) -> bool:
    """``pin_memory`` for a loader feeding ``device``: page-locked memory only helps CUDA copies.

    Elsewhere d2lopt says so once (``announce``) instead of letting PyTorch warn on every
    loader. The one place this is decided for ``make_loader`` and the DDP program.
    """
    pin = requested and device.type == "cuda"
    if requested and not pin and announce:
        notice_once("pin", f"pin_memory needs CUDA; running without it on {device.type}")
    return pin


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
        "on_step": (callable, "a function taking the global step"),
    }
    for name, value in optional.items():
        ok, what = expected[name]
        if value is not None and not ok(value):
            raise TypeError(f"{name}: expected {what} or None, got {type(value).__name__}")


def bars_enabled() -> bool:
    """False when ``TQDM_DISABLE`` is 1/true/yes (CI, recorded notebooks).

    ``tqdm.notebook`` ignores that variable, so the package reads it here, once, for
    :func:`fit`'s bars and :class:`d2lopt.lab.logbar.LogBar`.
    """
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def fit(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable | None,
    config: TrainConfig,
    *,
    criterion: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    out_dir: str | Path | None = None,
    resume: bool | dict[str, Any] = False,
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    replicas: Replicas | None = None,
    checkpoint_every: int = 0,
) -> list[dict[str, Any]]:
    """Train ``net`` with the article's loop; return one record per epoch.

    The same loop trains one process or one rank of a torchrun job: ``replicas`` carries the
    DDP switches, decided once (``10_ddp``; the DDP program ``python -m d2lopt.ddp`` builds
    its data and model, then calls this).

    Args:
        net: the model (moved to the device once, here; wrapped by ``replicas``).
        train_iter: training batches ``(X, y)``; a sampler with ``set_epoch`` gets it called.
        test_iter: evaluation batches (this rank's shard), or ``None`` to skip evaluation.
        config: hyper-parameters and optimization switches.
        criterion: per-sample loss; default ``CrossEntropyLoss(reduction='none')``.
        optimizer: default SGD with ``config.lr`` and ``config.momentum`` (built after
            ``replicas`` wrapped the net: FSDP replaces its parameters by shards).
        out_dir: receives ``checkpoint.pt`` (every epoch, and on SIGINT/SIGTERM),
            ``metrics.json`` and TensorBoard events (``out_dir/tb``); on rank 0 only.
        resume: continue from ``out_dir/checkpoint.pt``; or that checkpoint itself, already
            loaded by the caller (the DDP program reads it once to decide whether to resume).
        log_dir: TensorBoard folder (defaults to ``out_dir/tb``; ``None`` without out_dir).
        progress: show a tqdm bar of the run's batches, with samples/s and the time left
            (``None``: shown unless ``TQDM_DISABLE`` is set).
        on_epoch_end: called with each epoch's record (live plots), on rank 0.
        on_step: called with the global step after every optimizer step (and its
            checkpoint), on every rank: the DDP program's fault injection for tests.
        replicas: this process's part in a torchrun job
            (:class:`~d2lopt.distributed.Replicas`); ``None``: a world of one, where every
            distributed switch is a no-op.
        checkpoint_every: also checkpoint every N optimizer steps (0: at epoch ends only).

    Returns:
        ``[{"epoch", "steps", "train_loss", "test_loss", "test_acc", "epoch_time",
        "eval_time", "samples_per_s", "world_size", "resumed"}, ...]``; ``test_*`` are
        ``None`` for epochs without evaluation. Losses cover every rank's samples.
        ``epoch_time`` and ``samples_per_s`` measure the steps this run trained: after a
        mid-epoch resume, the rest of that epoch (the loss still covers all of it). With
        ``config.compile`` the records also hold ``compile_time``: the run's first step
        (compilation, lazy CUDA initialisation), left out of ``epoch_time`` and
        ``samples_per_s`` (0.0 in later epochs).

    Raises:
        TrainingInterrupted: a signal arrived; the checkpoint holds every finished step.
        TypeError, ValueError: a bad argument, an unwritable ``out_dir``, or a checkpoint
            that would not continue this experiment (other config, data or model).
    """
    replicas = _check_fit(net, train_iter, test_iter, config, replicas, criterion=criterion,
                          optimizer=optimizer, out_dir=out_dir, log_dir=log_dir,
                          progress=progress, on_epoch_end=on_epoch_end, on_step=on_step,
                          resume=resume,
                          checkpoint_every=checkpoint_every)  # fmt: skip
    out = Path(out_dir) if out_dir is not None else None
    loop = Loop(net, train_iter, config, criterion=criterion, optimizer=optimizer, out=out,
                replicas=replicas, checkpoint_every=checkpoint_every)  # fmt: skip
    if resume is not False:  # RNG states come back as CPU tensors; load_state_dict copies them
        state = load_checkpoint(loop.ckpt_path, map_location="cpu") if resume is True else resume
        check_resume(state, loop.ckpt_path, config, num_samples(train_iter),
                     world_size=replicas.world_size, accumulate=replicas.accumulate,
                     strategy=replicas.strategy)  # fmt: skip
        loop.restore(state)
    writer = _writer(log_dir, out) if replicas.is_main else None
    if progress is None:
        progress = bars_enabled()
    bar = _Progress(loop, config, enabled=progress and replicas.is_main)
    try:
        # signals stop one process; N ranks stopping at different steps would deadlock
        with _stop_on_signals(out is not None and not replicas.distributed) as signals:
            for epoch in range(loop.start_epoch, config.num_epochs):
                bar.epoch(epoch)
                steps = loop.run_epoch(epoch, signals, on_batch=bar.batch, on_step=on_step)
                if signals:  # a signal arrived: save this exact point and stop
                    # no step yet: this epoch restarts from its start, with its start's RNGs
                    rng = None if steps else loop.epoch_rng
                    loop.checkpoint(epoch, steps, loop.meter.reduced(), rng)
                    raise TrainingInterrupted(signals[0], loop.ckpt_path)
                record = loop.end_epoch(epoch, steps)
                last = epoch + 1 == config.num_epochs
                if test_iter is not None and ((epoch + 1) % config.eval_every == 0 or last):
                    loss, accuracy, seconds = loop.evaluate(test_iter)  # C11/C13
                    record.update(test_loss=loss, test_acc=accuracy, eval_time=seconds)
                loop.publish(record, writer, on_epoch_end)
                bar.record(record)
                if signals and not last:  # arrived during evaluation: the epoch is saved
                    raise TrainingInterrupted(signals[0], loop.ckpt_path)
    finally:
        loop.close()
        if writer is not None:
            writer.close()
        bar.close()
    return loop.history


class _Progress:
    """:func:`fit`'s bar: the batches of the whole run, with samples/s and the time left.

    An epoch of the full data set takes minutes on a laptop's CPU, so a bar of epochs sat at
    ``0/5`` with no sign of life (issue 22); this one moves with every batch, in a terminal
    and (``tqdm.auto``) as a notebook widget, and ETA covers the whole run. Disabled, it
    does nothing at all per batch. A resumed run starts the bar where the checkpoint was.
    """

    def __init__(self, loop: Loop, config: TrainConfig, *, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.enabled, self.num_epochs = enabled, config.num_epochs
        n = batches_per_epoch(loop.train_iter)  # micro-batches per epoch (None: a plain iterable)
        self.bar = tqdm(
            total=n * config.num_epochs if n else None,
            initial=n * loop.start_epoch + loop.skip if n else 0,
            unit="batch", desc=f"epoch {loop.start_epoch + 1}/{config.num_epochs}",
            disable=not enabled, dynamic_ncols=True,
        )  # fmt: skip
        self.samples, self.start, self.shown = 0, time.perf_counter(), 0.0

    def epoch(self, epoch: int) -> None:
        if self.enabled:
            self.bar.set_description(f"epoch {epoch + 1}/{self.num_epochs}", refresh=False)

    def batch(self, samples: int) -> None:
        if not self.enabled:
            return
        self.samples += samples
        now = time.perf_counter()
        if now - self.shown >= 0.5:  # formatted twice a second, not at every batch
            self.shown = now
            rate = self.samples / max(now - self.start, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} samples/s", refresh=False)
        self.bar.update()

    def record(self, record: dict[str, Any]) -> None:
        """The epoch's result next to the bar (the samples/s of its steps, as recorded)."""
        if self.enabled:
            acc = "" if record["test_acc"] is None else f", test_acc {record['test_acc']:.3f}"
            self.bar.set_postfix_str(
                f"{record['samples_per_s']:,.0f} samples/s, train_loss "
                f"{record['train_loss']:.3f}{acc}"
            )

    def close(self) -> None:
        self.bar.close()


def _check_fit(
    net: Any, train_iter: Any, test_iter: Any, config: Any, replicas: Any, *, resume: Any,
    checkpoint_every: Any, **optional: Any,
) -> Replicas:  # fmt: skip
    """Every argument of :func:`fit` checked before anything runs; the replicas to use."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    _check_fit_args(net, train_iter, test_iter, **optional)
    if not isinstance(resume, (bool, dict)):
        raise TypeError(f"resume: expected True or False, got {resume!r}")
    if replicas is not None and not isinstance(replicas, Replicas):
        raise TypeError(
            f"replicas: expected a d2lopt.distributed.Replicas or None, got "
            f"{type(replicas).__name__}"
        )
    check_int("checkpoint_every", checkpoint_every, 0)
    replicas = replicas or Replicas()
    if replicas.accumulate > 1 and batches_per_epoch(train_iter) is None:
        raise ParamError(
            "accumulate", "needs a train_iter with len() to find each epoch's last micro-batch"
        )
    out_dir = optional["out_dir"]
    if resume is not False and out_dir is None:
        raise ParamError("resume", "needs out_dir, the folder whose checkpoint.pt to continue")
    if out_dir is not None:
        out = Path(out_dir)
        if resume is False and (out / CHECKPOINT_NAME).exists():
            raise ParamError(
                "out_dir",
                f"{out} already holds a checkpoint; pass resume=True (--resume) to "
                "continue it, or choose another out_dir — nothing was overwritten",
            )
        writable_dir(out)  # fail now, not at the first checkpoint an epoch from now
    return replicas


def _writer(log_dir: str | Path | None, out: Path | None) -> Any:
    """TensorBoard's writer for ``log_dir`` (default ``out/tb``), or None for neither."""
    if log_dir is None and out is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir if log_dir is not None else out / "tb"))
