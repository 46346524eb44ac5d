"""The phases of :func:`d2lopt.fit`, for one process or N ranks (``04_training_loop``, ``10_ddp``).

``fit`` reads as a few named phases: :meth:`Loop.restore` (resume), :meth:`Loop.run_epoch`
(the steps, each a :class:`TrainStep`), :meth:`Loop.end_epoch`, :meth:`Loop.evaluate` and
:meth:`Loop.publish` (checkpoint, metrics, TensorBoard, callback). What
differs between one process and a torchrun job is decided once, before the loop, in a
:class:`Replicas` (taught in ``10_ddp``); on one process every switch is a no-op, as in
nanoGPT's ``train.py``. The DDP program (``python -m d2lopt.ddp``) builds its data and model
and calls ``fit`` with ``replicas=`` this rank's :class:`Replicas`: one loop for 1 to N ranks.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .batches import iterate
from .checkpoint import (
    CHECKPOINT_NAME,
    resume_position,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_metrics,
)
from .config import TrainConfig
from .distributed import Replicas
from .errors import ParamError
from .metrics import DeviceAccumulator, evaluate
from .precision import autocast_ctx, grad_scaler
from .sharding import full_state_dict, load_sharded, save_sharded
from .timing import Timer

__all__ = ["Loop", "TrainStep", "batches_per_epoch", "num_samples", "place", "save_weights"]

SHARDS_DIR = "shards"  # strategy fsdp: one DCP folder per checkpoint, next to checkpoint.pt


# ------------------------------------------------------------------------------ one step
@dataclass
class TrainStep:
    """One micro-batch of the article's step, every optimization a visible switch (``04``).

    ``sync=False`` (accumulation) keeps the gradients for the next micro-batch, without the
    optimizer step; the ladder's rungs call the same object (``d2lopt.lab.ladder.train_step``).
    """

    model: nn.Module
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    device: torch.device
    replicas: Replicas = field(default_factory=Replicas)  # a world of one: no switch is on

    def __post_init__(self) -> None:
        self.autocast = autocast_ctx(self.device, self.config.amp)  # nullcontext when 'off'
        self.scaler = grad_scaler(self.device, self.config.amp)  # a no-op unless fp16

    def __call__(self, X: torch.Tensor, y: torch.Tensor, sync: bool = True) -> torch.Tensor:
        """Train on ``(X, y)``; return the per-sample losses (detached, still on the device)."""
        nb = self.config.non_blocking  # async copy: returns at once, overlaps compute (pinned)
        X = X.to(self.device, non_blocking=nb)
        if self.config.channels_last:
            X = X.contiguous(memory_format=torch.channels_last)  # NHWC: no transposes in convs
        y = y.to(self.device, non_blocking=nb)
        K = self.replicas.accumulate
        # no_sync: gradients accumulate locally; only the last micro-batch of a step
        # all-reduces them (ddp) or reduce-scatters them (fsdp); DDP averages over ranks
        with self.replicas.gradient_sync(self.model, sync):
            with self.autocast:  # fp32 weights, low-precision matmuls/convs
                loss = self.criterion(self.model(X), y)
            mean = loss.mean() if K == 1 else loss.mean() / K  # K micro-batches: one mean
            self.scaler.scale(mean).backward()  # scale() is identity unless fp16
        if sync:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)  # drop grads instead of a memset
        return loss.detach()


def place(net: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """Move ``net`` once (C6: not per batch), in the memory format its kernels prefer."""
    net.to(device)
    if config.channels_last:
        net.to(memory_format=torch.channels_last)  # NHWC lets conv kernels skip transposes
    return net


def save_weights(path: str | os.PathLike, net: nn.Module, replicas: Replicas) -> None:
    """The final ``state_dict`` to ``path``, written by rank 0 (fsdp: gathered, a collective)."""
    weights = full_state_dict(net) if replicas.strategy == "fsdp" else net.state_dict()
    if replicas.is_main:
        save_checkpoint(path, weights)


def _as_many_batches(loader: Any, device: torch.device) -> Iterator:
    """The shard's batches, then empty ones until every rank has run as many forwards.

    With FSDP every forward all-gathers each layer's weights, a collective: a rank whose
    test shard has one batch fewer would leave the others waiting forever.
    """
    most = torch.tensor(len(loader), device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    X0, y0 = loader.dataset[0]
    yield from loader
    for _ in range(int(most) - len(loader)):  # an empty batch adds 0 samples, 0 loss
        yield X0.new_empty((0, *X0.shape)), torch.as_tensor(y0).new_empty((0,))


def _state_mismatch(saved: Any, net: nn.Module) -> str | None:
    """Where a checkpoint's weights and ``net`` differ, in whole names (a message is never cut).

    ``load_state_dict``'s own error lists every key; a command line needs the first few and
    a count. ``None`` when the names and shapes agree (the optimizer is what differs).
    """
    if not isinstance(saved, dict):
        return None
    have = net.state_dict()

    def names(keys: list[str]) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return ", ".join(keys[:3]) + more

    missing = [k for k in have if k not in saved]
    unexpected = [k for k in saved if k not in have]
    shapes = [k for k in have if k in saved and tuple(getattr(saved[k], "shape", ())) !=
              tuple(have[k].shape)]  # fmt: skip
    parts = [f"this net has {names(missing)}, the checkpoint not"] if missing else []
    parts += [f"the checkpoint has {names(unexpected)}, this net not"] if unexpected else []
    parts += [f"{names(shapes)} differ in shape"] if shapes else []
    return "; ".join(parts) or None


def num_samples(loader: Iterable) -> int | None:
    """The samples of ``loader``'s data set (``None`` for a plain or iterable-style one)."""
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # plain iterables, iterable-style data sets
        return None


def batches_per_epoch(loader: Iterable) -> int | None:
    """``len(loader)``, or ``None`` for a plain iterable without one."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _skip(batches: Iterator, n: int) -> None:
    for _ in itertools.islice(batches, n):
        pass


def _until_failure_after(signals: list[int], batches: Iterator) -> Iterator:
    """``batches``, ended early when the loader fails after a stop signal.

    A signal to the whole process group can end DataLoader workers too (SIGTERM; Ctrl-C for
    workers not forked inside ``fit``), and the next fetch then fails; the steps done so far
    are intact, so ``fit`` still saves them.
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


# ------------------------------------------------------------------------------ the phases
class Loop:
    """fit's state between its phases: everything decided once, then run epoch by epoch.

    Built by :func:`d2lopt.fit`; the phases are :meth:`restore`, :meth:`run_epoch`,
    :meth:`end_epoch`, :meth:`evaluate`, :meth:`checkpoint` and :meth:`publish`.
    """

    def __init__(
        self, net: nn.Module, train_iter: Iterable, config: TrainConfig, *,
        criterion: Callable | None, optimizer: torch.optim.Optimizer | None,
        out: Path | None, replicas: Replicas, checkpoint_every: int = 0,
    ) -> None:  # fmt: skip
        self.config, self.replicas, self.out, self.train_iter = config, replicas, out, train_iter
        self.device = device = replicas.device or config.torch_device
        torch.manual_seed(config.seed)  # identical initial state on every rank
        self.net = place(net, config, device)
        wrapped = replicas.wrap(self.net)  # DDP / FSDP, or the net itself on one process
        model = torch.compile(wrapped) if config.compile else wrapped
        # under a process group the plain module evaluates: DDP's hooks would run collectives
        self.eval_model = self.net if replicas.distributed else model
        self.criterion = criterion or nn.CrossEntropyLoss(reduction="none")  # per-sample losses
        # built after wrap(): fsdp replaced the parameters by this rank's shards
        self.optimizer = optimizer or torch.optim.SGD(
            self.net.parameters(), lr=config.lr, momentum=config.momentum
        )
        self.optimizer.zero_grad(set_to_none=True)  # the step zeroes after each update
        self.step = TrainStep(model, self.criterion, self.optimizer, config, device, replicas)
        self.sampler = getattr(train_iter, "sampler", None)
        self.loader_gen = getattr(train_iter, "generator", None)
        self.ckpt_path = out / CHECKPOINT_NAME if out is not None else None
        self.checkpoint_every = checkpoint_every
        self.meter = DeviceAccumulator(2, device)  # loss sum, samples: all-reduced when read
        self.timer, self.eval_timer = Timer(device), Timer(device)
        # --compile: the run's first step (compilation, lazy CUDA initialisation) is timed
        # apart, as the ladder times compile_s apart: (epoch, seconds, samples) once booked
        self.compiled: tuple[int, float, int] | None = None
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] | None = None
        self.start_epoch = self.skip = self.first = self.global_step = 0
        self.epoch_rng: dict | None = None  # RNG states when this epoch's iterator was created
        self.batches: Iterator | None = None  # closed by close(): an error stops the workers
        self.eval_batches: Iterator | None = None

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (checked by :func:`check_resume`)."""
        r, path = self.replicas, self.ckpt_path
        if state.get("shards"):  # fsdp: every rank reads its shard, resharded to this world
            load_sharded(self.out / state["shards"], self.net, self.optimizer)
        else:
            try:
                self.net.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                why = _state_mismatch(state["model"], self.net) or " ".join(str(exc).split())
                raise ParamError(
                    "resume",
                    f"the model/optimizer in {path} do not fit this net ({why}); "
                    "train the same architecture (same --model) or choose a new out_dir",
                ) from None
        self.step.scaler.load_state_dict(state["scaler"])
        self.state, self.history, self.start_epoch = state, state["history"], state["epoch"]
        # where this epoch's sample stream stands, in this world's micro-batches
        self.skip, self.global_step = resume_position(
            state, world_size=r.world_size, accumulate=r.accumulate,
            batch_size=self.config.batch_size,
        )  # fmt: skip
        r.log(f"resumed from checkpoint: epoch {self.start_epoch + 1}, micro-batch {self.skip} "
              f"(saved by {state.get('world_size', 1)} process(es), now {r.world_size}; "
              f"restart {r.restarts})")  # fmt: skip

    def _start_epoch(self, epoch: int) -> None:
        """Order, RNGs and sums at the start of ``epoch`` (or where a resumed epoch stopped)."""
        config, state = self.config, self.state
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # a new, reproducible order each epoch (every rank)
        if self.loader_gen is not None:
            self.loader_gen.manual_seed(config.seed + epoch)  # reproducible worker seeds
        resuming = epoch == self.start_epoch and state is not None
        self.first = self.skip if resuming else 0
        if resuming:  # the RNGs as the interrupted run had them when it created this iterator
            saved = state.get("epoch_rng") if state["step"] else state.get("rng")
            if saved is not None:
                set_rng_state(saved)
        if self.ckpt_path is not None:
            self.epoch_rng = rng_state()  # samplers and worker seeds draw from it in iter()
        self.meter.reset()
        self.net.train()
        self.timer.start()
        self.batches = iterate(self.train_iter)  # a loader failure: clear error, workers stopped
        if self.first:
            _skip(self.batches, self.first)  # same order: replay the sampler, skip done steps
            if self.replicas.is_main:
                self.meter.load_state(state["train_sums"])  # the epoch's global sums, counted once
            if state.get("rng") is not None:
                set_rng_state(state["rng"])
            if self.loader_gen is not None and state.get("loader_rng") is not None:
                self.loader_gen.set_state(state["loader_rng"])
            self.timer.start()  # the speed of this process's steps: not the replayed skip

    def run_epoch(
        self, epoch: int, signals: list[int], on_batch: Callable[[int], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> int:  # fmt: skip
        """Train one epoch (after a resume: its rest); return its optimizer steps so far.

        ``on_batch(samples)`` is called after every micro-batch (fit's progress bar),
        ``on_step(global_step)`` after every optimizer step and its checkpoint.
        """
        self._start_epoch(epoch)
        K, n = self.replicas.accumulate, batches_per_epoch(self.train_iter)
        step = self.first // K
        for i, (X, y) in enumerate(_until_failure_after(signals, self.batches), self.first):
            sync = (i + 1) % K == 0 or i + 1 == n  # the last micro-batch of a step all-reduces
            compiling = self.config.compile and self.compiled is None
            clock = Timer(self.device) if compiling else None  # syncs: only this step counts
            loss = self.step(X, y, sync)
            if clock is not None:
                self.compiled = (epoch, clock.stop(), y.shape[0])  # synced: compiled and run
            self.meter.add(loss.float().sum(), y.shape[0])  # on the device: no host sync
            if on_batch is not None:
                on_batch(y.shape[0])  # a shape: known on the host, no sync
            if not sync:
                continue
            step += 1
            self.global_step += 1
            every = self.checkpoint_every
            if every and step % every == 0 and (n is None or i + 1 < n):
                self.checkpoint(epoch, step, self.meter.reduced())  # a collective: every rank
            if on_step is not None:
                on_step(self.global_step)
            if signals:
                break
        return step

    def end_epoch(self, epoch: int, steps: int) -> dict[str, Any]:
        """The epoch's record: the loss over every rank's samples (one sync, a collective)."""
        epoch_time = self.timer.stop()
        loss_sum, seen = self.meter.reduced()  # the epoch's one training-side sync
        # after a mid-epoch resume the loss covers the whole epoch but the time only this
        # run's part: divide by the samples trained in that time
        trained = seen - (self.state["train_sums"][1] if self.first else 0.0)
        # --compile: the first step's time and samples are booked apart (compile_time)
        booked = self.compiled if self.compiled and self.compiled[0] == epoch else None
        if booked is not None:
            epoch_time, trained = epoch_time - booked[1], trained - booked[2]
        record = {
            "epoch": epoch + 1, "steps": steps,
            "train_loss": loss_sum / seen if seen else math.nan,
            "test_loss": None, "test_acc": None, "epoch_time": epoch_time, "eval_time": 0.0,
            "samples_per_s": trained / epoch_time if epoch_time > 0 else math.nan,
            "world_size": self.replicas.world_size, "resumed": self.first > 0,
        }  # fmt: skip
        if self.config.compile:
            record["compile_time"] = booked[1] if booked is not None else 0.0
        return record

    def evaluate(self, test_iter: Iterable) -> tuple[float, float, float]:
        """Test loss, accuracy (over every rank's shard: a collective) and seconds taken."""
        r, device = self.replicas, self.device
        self.eval_timer.start()
        if r.strategy == "fsdp":  # every rank runs as many forwards (each one all-gathers)
            batches: Iterable = _as_many_batches(test_iter, device)
        else:
            batches = self.eval_batches = iterate(test_iter)
        result = evaluate(self.eval_model, batches, self.criterion, device)  # C11/C13
        loss, acc = result["loss"], result["accuracy"]
        if r.distributed:  # sums over the shards, then the means: every sample counts once
            n = result["samples"]
            meter = DeviceAccumulator(3, device)
            meter.add(loss * n if n else 0.0, acc * n if n else 0.0, n)
            loss_sum, correct, count = meter.reduced()
            loss, acc = loss_sum / count, correct / count
        return loss, acc, self.eval_timer.stop()

    def checkpoint(self, epoch: int, step: int, sums: list[float], rng: dict | None = None) -> None:
        """Save this exact point: rank 0 writes ``checkpoint.pt`` (fsdp: every rank its shard)."""
        if self.ckpt_path is None:
            return
        r, config = self.replicas, self.config
        shards = None
        if r.strategy == "fsdp":  # every rank writes its shard (a collective) ...
            shards = f"{SHARDS_DIR}/e{epoch}-s{step}"
            save_sharded(self.out / shards, self.net, self.optimizer)
        if not r.is_main:
            return
        full = shards is None  # ... then one writer points to it; atomic: never a torn file
        save_checkpoint(self.ckpt_path, {
            "model": self.net.state_dict() if full else None,
            "optimizer": self.optimizer.state_dict() if full else None,
            "shards": shards, "strategy": r.strategy, "scaler": self.step.scaler.state_dict(),
            "epoch": epoch, "step": step, "train_sums": sums, "history": self.history,
            "rng": rng if rng is not None else rng_state(),
            "epoch_rng": self.epoch_rng if step else None,
            "loader_rng": self.loader_gen.get_state() if self.loader_gen is not None else None,
            "train_samples": num_samples(self.train_iter), "config": config.to_dict(),
            "world_size": r.world_size, "accumulate": r.accumulate,
            "global_batch": r.world_size * config.batch_size * r.accumulate, "run_id": r.run_id,
        })  # fmt: skip
        if not full:  # older shard folders are superseded now that the pointer moved
            for old in (self.out / SHARDS_DIR).iterdir():
                if old.name != Path(shards).name:
                    shutil.rmtree(old, ignore_errors=True)

    def publish(self, record: dict[str, Any], writer: Any, on_epoch_end: Callable | None) -> None:
        """Keep the record, checkpoint the epoch's end; rank 0 logs, writes and calls back."""
        self.history.append(record)
        self.checkpoint(record["epoch"], 0, [0.0, 0.0])
        if not self.replicas.is_main:
            return
        if writer is not None:
            for key in ("train_loss", "test_loss", "test_acc", "samples_per_s"):
                if record[key] is not None:
                    writer.add_scalar(key, record[key], record["epoch"])
            writer.flush()
        if self.out is not None:
            write_metrics(self.out, self.config, self.history, self.replicas.world_size)
        if on_epoch_end is not None:
            on_epoch_end(record)

    def close(self) -> None:
        for batches in (self.batches, self.eval_batches):
            if batches is not None:
                batches.close()
