"""What one ladder run is: the workload, the loops, and what each run measures.

Taught in ``12_putting_it_together`` (the apparatus of :mod:`d2lopt.ladder`). The workload
is the standard one (JPEG files decoded and augmented per sample, the course CNN) or the
learner's (``--dataset``/``--model``). A run builds its loaders, trains ``epochs`` epochs
with the rung's loop (the article's, :func:`d2lopt.fit`, or a peer's) and evaluates; its
:class:`RunStats` keep the fixed costs (start-up to the first batch, the first step's extra
time) apart from the steady state, and the data stalls (time inside ``next()``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pkgutil
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate, random_split

from .article import article_evaluate_loss, article_train_epoch
from .config import TrainConfig
from .data import EpochRandomSampler
from .devices import resolve_device, synchronize
from .errors import ParamError
from .input_pipelines import (
    DeviceAugmentLoader,
    GpuDecodeLoader,
    ThreadLoader,
    decode_images,
    read_encoded,
)
from .loop import TrainStep, place
from .models import cnn, init_weights
from .precision import autocast_ctx, grad_scaler
from .train import fit, make_loader
from .tuning import standard_dataset

__all__ = [
    "Rung",
    "RunStats",
    "Workload",
    "d2l_train_ch6",
    "load_user_data",
    "load_user_model",
    "loader_label",
    "run_rung",
    "run_ceiling",
    "PEER_RUNS",
    "PeakMemory",
    "Timed",
    "train_step",
    "main_process_loading",
]

MEASURED, SKIPPED, REJECTED = "measured", "skipped", "rejected"


@dataclass
class Rung:
    """One step of the ladder: what it adds, how it was decided, and whether it was kept."""

    name: str
    adds: str
    config: TrainConfig | None
    loader: dict[str, Any] = field(default_factory=lambda: {"kind": "dataloader"})
    loop: str = "article"  # "article": the article's loop (+ switches); "fit": d2lopt.fit
    status: str = MEASURED
    reason: str = ""
    decision: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ your data
def _resolve(spec: Any, param: str) -> Any:
    """``MODULE:ATTR`` -> the object (``pkgutil.resolve_name``), errors naming ``param``."""
    if not isinstance(spec, str) or ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise ParamError(param, f"expected MODULE:ATTR such as mydata:train_set, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: local modules are importable
    try:
        return pkgutil.resolve_name(spec)
    except ImportError as exc:
        raise ParamError(
            param,
            f"cannot import {spec.partition(':')[0]!r} ({exc}); run from the folder "
            "that holds it or install its package",
        ) from None
    except AttributeError as exc:
        raise ParamError(param, f"{spec!r} does not exist ({exc})") from None
    except ValueError:
        raise ParamError(param, f"{spec!r} is not an import path of Python names") from None


def _is_map_dataset(obj: Any) -> bool:
    from torch.utils.data import IterableDataset

    if isinstance(obj, (type, tuple, list, IterableDataset)):  # a class is a factory
        return False
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def load_user_data(spec: str, seed: int = 0) -> tuple[Dataset, Dataset, str]:
    """``--dataset MODULE:ATTR`` -> ``(train, test, how the test set was made)``.

    ``ATTR`` is a map-style ``Dataset``, or a zero-argument callable returning one or a
    ``(train, test)`` pair. A single data set is split with a seeded 10 % held out for
    evaluation. Errors name ``--dataset`` and say what to point it at.
    """
    obj = _resolve(spec, "dataset")
    if callable(obj) and not _is_map_dataset(obj):
        try:
            obj = obj()
        except Exception as exc:  # the learner's factory: report it as a bad --dataset value
            raise ParamError(
                "dataset", f"calling {spec}() raised {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(map(_is_map_dataset, obj)):
        train, test = obj
        how = "its own (train, test) pair"
    elif _is_map_dataset(obj):
        if len(obj) < 2:
            raise ParamError("dataset", f"{spec} has {len(obj)} sample(s); need at least 2")
        held = max(1, round(0.1 * len(obj)))
        train, test = random_split(
            obj, [len(obj) - held, held], generator=torch.Generator().manual_seed(seed)
        )
        how = f"a seeded 10% held out ({held} of {len(obj)} samples)"
    else:
        raise ParamError(
            "dataset",
            f"{spec} gives a {type(obj).__name__}, not a map-style Dataset; point it "
            "at a Dataset, or a zero-argument function returning one or a (train, test) pair",
        )
    for part, ds in (("train", train), ("test", test)):
        if len(ds) == 0:
            raise ParamError("dataset", f"the {part} set of {spec} is empty")
    return train, test, how


def load_user_model(spec: str) -> Callable[[], nn.Module]:
    """``--model MODULE:ATTR`` -> a zero-argument factory of fresh ``nn.Module`` s.

    Every rung starts from the same fresh weights, so the flag names a function or class
    that *builds* the model, not a model instance.
    """
    obj = _resolve(spec, "model")
    if isinstance(obj, nn.Module):
        raise ParamError(
            "model",
            f"{spec} is a model instance; point it at a zero-argument function or "
            "class that builds one (every rung starts from the same fresh weights)",
        )
    if not callable(obj):
        raise ParamError(
            "model", f"{spec} is a {type(obj).__name__}, not a function building a model"
        )

    def build() -> nn.Module:
        try:
            net = obj()
        except Exception as exc:
            raise ParamError(
                "model", f"calling {spec}() raised {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(net, nn.Module):
            raise ParamError("model", f"{spec}() returned a {type(net).__name__}, not an nn.Module")
        return net

    build()  # fail now, naming the flag, not in the middle of the ladder
    return build


# ------------------------------------------------------------------------------ workload
class Workload:
    """The data sets, the model factory and the loaders every rung is built from."""

    def __init__(self, s: Any) -> None:  # a d2lopt.ladder.LadderSettings
        self.s = s
        self.device = resolve_device(s.device)
        self.samples: dict[str, list] | None = None  # image files: decode-once/GPU-decode rungs
        if s.dataset is None:
            root, size = s.data_dir, s.image_size
            self.train_set = standard_dataset(s.n_train, size, train=True, root=root)
            self.test_set = standard_dataset(s.n_test, size, train=False, root=root)
            self.samples = {"train": self.train_set.samples, "test": self.test_set.samples}
            self.description = (
                f"{s.n_train} JPEGs of {size}px on disk, decoded and augmented per sample "
                f"(RandomResizedCrop + flip), {s.n_test} test images"
            )
        else:
            train, test, how = load_user_data(s.dataset, s.seed)
            self.train_set, self.test_set = self._cap(train, s.n_train), self._cap(test, s.n_test)
            self.description = (
                f"{s.dataset}: {len(self.train_set)} training samples (of {len(train)}), "
                f"{len(self.test_set)} test samples from {how}"
            )
        self.model_factory = load_user_model(s.model) if s.model else None
        self.model_name = s.model or "d2lopt.models.cnn(in_channels=3)"
        self.batch_shape = self._check_batches()
        self._device_batches: dict[str, list] = {}

    def _cap(self, ds: Dataset, n: int) -> Dataset:
        """At most ``n`` samples (seeded): the ladder measures speed, not accuracy."""
        if len(ds) <= n:
            return ds
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.s.seed))
        return Subset(ds, keep[:n].tolist())

    def _check_batches(self) -> tuple[int, ...]:
        """Fail early, naming the flag, when the model cannot train on the data's batches."""
        param = "dataset" if self.s.dataset else "model"
        try:
            X, y = default_collate([self.train_set[i] for i in range(min(2, len(self.train_set)))])
        except Exception as exc:
            raise ParamError(
                "dataset",
                f"samples must be (input, class index) pairs that default_collate "
                f"can batch ({type(exc).__name__}: {exc})",
            ) from None
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
            raise ParamError(
                param,
                f"labels must be integer class indices (the ladder trains with "
                f"cross-entropy), got {getattr(y, 'dtype', type(y).__name__)}",
            )
        try:
            with torch.no_grad():
                out = self.net()(X)
                nn.functional.cross_entropy(out, y)
        except Exception as exc:
            what = f"{self.s.model or 'the course CNN'}"
            raise ParamError(
                "model",
                f"{what} does not accept the data's batches (X {tuple(X.shape)}, "
                f"y {tuple(y.shape)}): {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
            ) from None
        return tuple(X.shape[1:])

    @property
    def images(self) -> bool:
        """Encoded image files d2lopt can decode itself (the decode rungs apply)."""
        return self.samples is not None

    def base_config(self) -> TrainConfig:
        s = self.s  # the article's settings: num_workers=0, blocking copies, fp32, eval each epoch
        return TrainConfig(
            num_epochs=s.epochs, batch_size=s.batch_size, device=str(self.device), lr=s.lr,
            seed=s.seed,
        )  # fmt: skip

    def net(self) -> nn.Module:
        torch.manual_seed(self.s.seed)  # every rung and peer starts from the same weights
        if self.model_factory is not None:
            return self.model_factory()
        net = cnn(in_channels=3)
        net.apply(init_weights)
        return net

    def loader(self, spec: dict[str, Any], config: TrainConfig, *, train: bool) -> Iterable:
        """The training or test loader of a rung (built inside the timed run: start-up)."""
        ds = self.train_set if train else self.test_set
        kind, s, dev = spec["kind"], self.s, self.device
        if kind == "dataloader":
            return make_loader(ds, config, train=train)
        if kind == "threads":
            sampler = EpochRandomSampler(len(ds), s.seed) if train else None
            return ThreadLoader(
                ds,
                batch_size=config.batch_size,
                num_threads=spec["threads"],
                sampler=sampler,
                pin_memory=config.pin_memory and dev.type == "cuda",
            )
        assert self.samples is not None, "decode rungs apply to image files only"
        files = self.samples["train" if train else "test"]
        common = dict(batch_size=config.batch_size, size=s.image_size, train=train, seed=s.seed)
        if kind == "decode_once":
            cache = decode_images(files, dev)  # the one-time decode counts in the run's start-up
            return DeviceAugmentLoader(cache.images, cache.labels, **common)
        if kind == "gpu_decode":
            return GpuDecodeLoader(read_encoded(files), device=dev, **common)
        raise ValueError(f"loader: unknown kind {kind!r}")

    def device_batches(self, train: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ceiling's input: one augmented epoch (or the test set), already on the device."""
        key = "train" if train else "test"
        if key not in self._device_batches:
            ds = self.train_set if train else self.test_set
            loader = DataLoader(ds, batch_size=self.s.batch_size)
            self._device_batches[key] = [(X.to(self.device), y.to(self.device)) for X, y in loader]
        return self._device_batches[key]

    def decoded_mib(self) -> float:
        """Memory the decode-once cache needs: uint8 [N, C, H, W] for train + test."""
        assert self.samples is not None
        c, h, w = self.batch_shape
        return (len(self.samples["train"]) + len(self.samples["test"])) * c * h * w / 2**20


# ------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class RunStats:
    """One whole run: its time, and where the time went (fixed costs, stalls)."""

    samples: int  # training samples
    seconds: float  # the whole run: loaders built, training, evaluation
    startup: float  # run start -> first training batch (loader and worker start-up, decode)
    first_step: float  # the first loop body (first-call compilation, lazy initialization)
    step: float  # median loop body after the first
    waited: float  # seconds inside next() after the first batch: data stalls
    stepped: float  # seconds in loop bodies after the first
    peak_memory_mib: float | None = None

    @property
    def fixed(self) -> float:
        """Fixed costs: start-up plus what the first step took beyond a normal one."""
        return self.startup + max(0.0, self.first_step - self.step)

    @property
    def stall_fraction(self) -> float:
        """Share of the steady training loop spent waiting for the next batch."""
        busy = self.waited + self.stepped
        return self.waited / busy if busy > 0 else math.nan

    @property
    def steady_samples_per_s(self) -> float:
        return self.samples / max(self.seconds - self.fixed, 1e-9)


class Timed:
    """The training loader of one run, timed batch by batch (fit reads sampler/dataset)."""

    def __init__(self, loader: Iterable, start: float) -> None:
        self.loader, self.start = loader, start
        self.startup: float | None = None
        self.first_step: float | None = None
        self.waited, self.bodies, self.samples = 0.0, [], 0

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, generator, persistent_workers
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self):
        t = time.perf_counter()
        batches = iter(self.loader)  # non-persistent workers start here: a stall
        for batch in batches:
            got = time.perf_counter()
            if self.startup is None:
                self.startup = got - self.start
            else:
                self.waited += got - t
            self.samples += len(batch[1])
            yield batch
            t = time.perf_counter()
            if self.first_step is None:
                self.first_step = t - got
            else:
                self.bodies.append(t - got)

    def stats(self, seconds: float) -> RunStats:
        step = statistics.median(self.bodies) if self.bodies else (self.first_step or 0.0)
        return RunStats(
            samples=self.samples,
            seconds=seconds,
            startup=self.startup if self.startup is not None else seconds,
            first_step=self.first_step or 0.0,
            step=step,
            waited=self.waited,
            stepped=sum(self.bodies),
        )


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; elsewhere the
    proportional set size (PSS, via psutil) of this process and its loader workers, sampled
    every 50 ms. PSS counts a page a forked worker shares with its parent half for each,
    so workers are not double-counted (RSS where the OS has no PSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._thread = device, 0, None
        self._stop = threading.Event()

    @staticmethod
    def _tree_bytes() -> int:
        import psutil

        total = 0
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
        return total

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._tree_bytes())
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak / 2**20 if self.peak else None


# ------------------------------------------------------------------------------ the loops
Step = Callable[[torch.Tensor, torch.Tensor], None]


def train_step(net: nn.Module, config: TrainConfig) -> Step:
    """The step of :func:`d2lopt.fit` without the loader: what the decision passes run."""
    device = config.torch_device
    place(net, config, device).train()  # once, in the memory format the rung asks for
    model = torch.compile(net) if config.compile else net
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    return TrainStep(model, criterion, optimizer, config, device)  # fit's own step object


def _article_loop(
    net: nn.Module, train: Timed, test: Iterable, config: TrainConfig, evaluate_train: Iterable
) -> None:
    """The article's loop (``article_fit``'s pieces) plus the switches of the rungs below
    loop hygiene: async copies, AMP, channels_last; evaluation of train and test every epoch."""
    device = config.torch_device
    net.to(device)
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    plain = not config.non_blocking and config.amp == "off" and not config.channels_last
    autocast, scaler = autocast_ctx(device, config.amp), grad_scaler(device, config.amp)
    nb = config.non_blocking  # async copies: effective from pinned batches only
    for _ in range(config.num_epochs):
        if plain:  # the article's own epoch, verbatim
            article_train_epoch(net, train, criterion, optimizer, device)
        else:
            for X, y in train:
                X, y = X.to(device, non_blocking=nb), y.to(device, non_blocking=nb)
                if config.channels_last:
                    X = X.contiguous(memory_format=torch.channels_last)
                with autocast:
                    loss = criterion(net(X), y)
                optimizer.zero_grad()
                scaler.scale(loss.mean()).backward()
                scaler.step(optimizer)
                scaler.update()
        with autocast:  # the article's evaluation, unchanged: train and test, a sync per batch
            article_evaluate_loss(net, evaluate_train, criterion, device)
            article_evaluate_loss(net, test, criterion, device)


def d2l_train_ch6(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable,
    num_epochs: int,
    lr: float,
    device: torch.device,
    momentum: float = 0.0,
) -> dict[str, float]:
    """d2l's ``train_ch6`` (d2l 1.0.3) with its own ``Accumulator``, ``Timer`` and helpers.

    Left out: its ``Animator`` plot, its prints and its re-initialization (the net comes
    initialized like every rung's). ``momentum`` lets the ladder match its optimizer, so the
    comparison is loop against loop.
    """
    from d2l import torch as d2l

    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    loss = nn.CrossEntropyLoss()
    timer = d2l.Timer()
    train_l = train_acc = test_acc = math.nan
    metric = d2l.Accumulator(3)
    for _ in range(num_epochs):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = d2l.Accumulator(3)
        net.train()
        for X, y in train_iter:
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            ls = loss(y_hat, y)
            ls.backward()
            optimizer.step()
            with torch.no_grad():  # float() of the loss and accuracy: host syncs every batch
                metric.add(ls * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l, train_acc = metric[0] / metric[2], metric[1] / metric[2]
        test_acc = d2l.evaluate_accuracy_gpu(net, test_iter)
    return {
        "train_loss": train_l,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "examples_per_s": metric[2] * num_epochs / timer.sum(),
    }


@functools.cache
def _lightning_module() -> type:
    import lightning as L

    class LadderModule(L.LightningModule):
        """The ladder's model in Lightning: same loss, optimizer and memory format."""

        def __init__(self, net: nn.Module, config: TrainConfig) -> None:
            super().__init__()
            self.net, self.config = net, config
            self.criterion = nn.CrossEntropyLoss(reduction="none")

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            X, y = batch
            if self.config.channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            return self.criterion(self.net(X), y).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            X, y = batch
            self.log("test_loss", self.criterion(self.net(X), y).mean(), batch_size=len(y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            c = self.config
            return torch.optim.SGD(self.net.parameters(), lr=c.lr, momentum=c.momentum)

    return LadderModule


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning announces devices and tips on every Trainer: the ladder compares loops."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            # torch 2.10+ deprecates LeafSpec, which Lightning 2.6 still builds on every step
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ------------------------------------------------------------------------------ the entries
def _timed_run(body: Callable[[float], Timed], device: torch.device) -> RunStats:
    """Run ``body(start)`` (it builds its loaders and trains); its time is the whole run."""
    synchronize(device)
    start = time.perf_counter()
    timed = body(start)
    synchronize(device)  # queued GPU work belongs to this run
    return timed.stats(time.perf_counter() - start)


def run_rung(wl: Workload, rung: Rung) -> RunStats:
    assert rung.config is not None
    config = rung.config

    def body(start: float) -> Timed:
        train = wl.loader(rung.loader, config, train=True)
        test = wl.loader(rung.loader, config, train=False)
        timed = Timed(train, start)
        if rung.loop == "fit":
            fit(wl.net(), timed, test, config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device)


def run_ceiling(wl: Workload, top: Rung) -> RunStats:
    """The top rung's loop and evaluation, on batches that already sit on the device."""
    assert top.config is not None
    train, test = wl.device_batches(train=True), wl.device_batches(train=False)

    def body(start: float) -> Timed:
        timed = Timed(train, start)
        if top.loop == "fit":
            fit(wl.net(), timed, test, top.config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, top.config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device)


def _peer_net(wl: Workload, config: TrainConfig) -> nn.Module:
    net = wl.net()
    if config.channels_last:  # a model-level setting: the peer's own loop is untouched
        net.to(memory_format=torch.channels_last)
    return net


def _run_d2l(wl: Workload, top: Rung) -> RunStats:
    config = top.config
    assert config is not None
    # bf16 autocast needs no loop change (no GradScaler): d2l gets it; fp16 it cannot
    amp = autocast_ctx(wl.device, config.amp) if config.amp == "bf16" else contextlib.nullcontext()

    def body(start: float) -> Timed:
        train = Timed(wl.loader(top.loader, config, train=True), start)
        test = wl.loader(top.loader, config, train=False)
        with amp:
            net = _peer_net(wl, config)
            d2l_train_ch6(
                net, train, test, config.num_epochs, config.lr, wl.device, config.momentum
            )
        return train

    return _timed_run(body, wl.device)


def _run_lightning(wl: Workload, top: Rung) -> RunStats:
    import lightning as L

    config, dev = top.config, wl.device
    assert config is not None

    def body(start: float) -> Timed:
        train = Timed(wl.loader(top.loader, config, train=True), start)
        test = wl.loader(top.loader, config, train=False)
        with _quiet_lightning():
            trainer = L.Trainer(
                accelerator={"cuda": "gpu", "mps": "mps"}.get(dev.type, "cpu"),
                devices=[dev.index or 0] if dev.type == "cuda" else 1,
                precision={"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[config.amp],
                max_epochs=config.num_epochs,
                # evaluate like the top rung: every epoch (article loop) or once at the end
                check_val_every_n_epoch=config.eval_every if top.loop == "fit" else 1,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(_lightning_module()(_peer_net(wl, config), config), train, test)
        return train

    return _timed_run(body, wl.device)


PEER_RUNS = {"d2l": _run_d2l, "lightning": _run_lightning}


# ------------------------------------------------------------------------------ the climb
def loader_label(spec: dict[str, Any], config: TrainConfig) -> str:
    kind = spec["kind"]
    pin = ", pin_memory" if config.pin_memory else ""
    if kind == "dataloader":
        text = f"DataLoader, num_workers={config.num_workers}"
        if config.num_workers:
            text += f", prefetch_factor={config.prefetch_factor or 2}"
            text += ", persistent" if config.persistent_workers else ""
        return text + pin
    if kind == "threads":
        return f"{spec['threads']} loader threads{pin}"
    return {
        "decode_once": "decode once + batched augmentation",
        "gpu_decode": "batched GPU decode",
    }[kind]


def main_process_loading(config: TrainConfig) -> TrainConfig:
    """The loader knobs reset: the new loader makes its batches in the main process."""
    return replace(config, num_workers=0, prefetch_factor=None, persistent_workers=False)
