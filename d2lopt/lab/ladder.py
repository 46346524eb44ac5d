"""The optimization ladder: every lesson of the course, measured in one run (``d2lopt ladder``).

Taught in ``12_putting_it_together``. One workload (by default JPEG files on disk, decoded
and augmented per sample, and the course CNN; ``--dataset``/``--model`` swap in yours)
climbs rungs that each add **one** optimization to the best rung so far. A rung is *kept*
only when :func:`d2lopt.compare` says it **holds** against that previous best; otherwise it
is *rejected*, with its interval. Each decision measures what the rung changes:

- loader rungs (worker processes, threads, pinned memory, GPU decode, decode once): passes of
  the training loader with the training step, through :func:`d2lopt.lab.bench.measure_loaders`
  (the code ``d2lopt tune-loader`` measures with);
- compute rungs (AMP, ``channels_last``, ``torch.compile``): the same passes, one step each;
- loop hygiene: whole runs, since it changes the evaluation.

Then the kept rungs, the compute ceiling (the top rung's loop and evaluation on batches that
already sit on the device) and two peers (d2l's ``train_ch6``, Lightning's ``Trainer``) run
whole in the same paired rounds (:func:`d2lopt.compare_many`): every figure gets an
interval against the baseline, and "ahead of a peer" means the interval of best/peer lies
above 1. Each run also reports its fixed costs (start-up to the first batch, the first
step's extra time: compilation) apart from its steady state, and its data stalls: the share
of the training loop spent waiting for the next batch.

Nothing is assumed: a rung the hardware cannot use is *skipped* with the reason.

This module reads top to bottom: the settings and :func:`run_ladder`; the workload (data,
model, loaders); what one run measures (:class:`Timed`, :class:`RunStats`,
:class:`PeakMemory`); one run's loops (the article's, :func:`d2lopt.fit`, the peers'); the
climb; the final rounds and the content of ``ladder.json``. The tables, caveats and plot
that read a finished ``ladder.json`` are in :mod:`d2lopt.lab.ladder_report`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate, random_split

from ..config import TrainConfig
from ..data import EpochRandomSampler, notice_once
from ..devices import resolve_device, synchronize
from ..errors import ParamError, check_int
from ..loop import TrainStep, place
from ..measure import Comparison, Sizing, Sweep, compare, compare_many, size_rounds
from ..models import cnn, init_weights
from ..precision import autocast_ctx
from ..train import fit, make_loader, pin_memory_for
from ..verdict import DOES_NOT_HOLD, HOLDS
from .article import article_evaluate_loss, article_train_epoch
from .bench import LoaderSweep, measure_loaders, run_pass
from .input_pipelines import (
    DeviceAugmentLoader,
    GpuDecodeLoader,
    ThreadLoader,
    decode_images,
    read_encoded,
)
from .ladder_report import LOOPS, PEERS, check_targets, save_outputs
from .mfu import flops_per_sample, matmul_peak, precision_dtype, utilisation
from .peers import (
    LIGHTNING_PRECISION,
    d2l_book_loaders,
    d2l_book_train,
    d2l_train_ch6,
    lightning_fit,
    lightning_guide,
    lightning_loaders,
)
from .recommend import write_recommended
from .specs import call_factory, check_sample, resolve
from .tuning import default_workers, standard_dataset

__all__ = [
    "RUNG_NAMES",
    "LadderSettings",
    "PeakMemory",
    "Rung",
    "RunStats",
    "Timed",
    "Workload",
    "load_user_data",
    "load_user_model",
    "run_ladder",
    "train_step",
]


RUNG_NAMES = (
    "baseline",
    "+ loader workers",
    "+ loader threads",
    "+ pin_memory/non_blocking",
    "+ GPU decode",
    "+ decode once",
    "+ AMP",
    "+ loop hygiene",
    "+ channels_last",
    "+ torch.compile",
)


# LadderSettings.preset's caps and budgets, per (device kind, quick): the reasons are in its
# docstring
_PRESET_FIELDS = ("n_train", "n_test", "image_size", "batch_size", "budget_seconds")
_PRESETS: dict[tuple[str, bool], tuple[int | float, ...]] = {
    ("cpu", True): (256, 64, 32, 32, 100.0),
    ("cpu", False): (2048, 512, 32, 64, 510.0),
    ("gpu", True): (2048, 512, 64, 128, 100.0),
    ("gpu", False): (16384, 2048, 64, 256, 510.0),
}
ROUNDS = 12  # paired rounds each comparison is sized for: past the first planned look (9)
BRIEF_ROUNDS = 7  # a rung expected to lose here (bf16 without bf16 units): enough for an interval


@dataclass(frozen=True)
class LadderSettings:
    """Sizes, caps and the time budget of one ladder run; :meth:`preset` scales them.

    ``budget_seconds`` is the whole run's time, set-up included. It is shared out over the
    decisions and the final rounds (:class:`Plan`), and each comparison sizes its work from
    what a round costs on this machine (:func:`d2lopt.measure.size_rounds`): ``n_train`` and
    ``n_test`` are the most samples a run may use, not what it must use.
    """

    n_train: int = 2048
    n_test: int = 512
    image_size: int = 32
    batch_size: int = 64
    epochs: int = 2
    budget_seconds: float = 510.0
    max_rounds: int = 200
    min_effect: float = 0.05
    confidence: float = 0.95
    lr: float = 0.05
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    data_dir: str | None = None
    dataset: str | None = None  # MODULE:ATTR of the learner's data set (default: standard)
    model: str | None = None  # MODULE:ATTR of a zero-argument model factory
    quick: bool = False  # informational: which preset the sizes came from

    def __post_init__(self) -> None:
        for name, least in (
            ("n_train", 1), ("n_test", 1), ("batch_size", 1), ("epochs", 1),
            ("seed", 0), ("max_rounds", 2),  # a ratio needs pairs
            ("image_size", 8),  # the CNN pools 3x
        ):  # fmt: skip
            check_int(name, getattr(self, name), least)
        if self.dataset is None and self.batch_size > self.n_train:
            raise ParamError(
                "batch_size",
                f"{self.batch_size} exceeds n_train={self.n_train}; use a smaller "
                "batch or more training images",
            )
        if self.dataset is None and self.n_test > 10_000:
            raise ParamError("n_test", f"the test split has 10000 images, got {self.n_test}")
        for name in ("lr", "budget_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ParamError(name, f"must be a number > 0, got {value!r}")
        if not 0 <= self.min_effect < 1:
            raise ParamError("min_effect", f"must be in [0, 1), got {self.min_effect!r}")
        if not 0.5 <= self.confidence < 1:
            raise ParamError("confidence", f"must be in [0.5, 1), got {self.confidence!r}")

    @classmethod
    def preset(cls, quick: bool = False, device: str = "auto", **overrides: Any) -> LadderSettings:
        """``--quick``, CPU-sized or GPU-sized settings; ``None`` overrides ignored.

        The budgets are the promises the command makes: under two minutes for ``--quick``
        and under ten for the default, on any 2-core x86 machine, set-up included (100 s and
        510 s, leaving room for the round a comparison may overrun). The sizes only cap the
        work: 32 px JPEGs on a CPU (an AVX2 laptop trains the CNN at 64 px four times
        slower, and a ladder that fits a budget there says little about 64 px anyway), at
        most 256 training images for ``--quick`` and 2048 for the default. How many of them
        a comparison uses is measured, not set (:func:`d2lopt.measure.size_rounds`).
        """
        dev = resolve_device(device)
        kind = "cpu" if dev.type == "cpu" else "gpu"  # a GPU step is fast: bigger, more batches
        base = dict(zip(_PRESET_FIELDS, _PRESETS[kind, bool(quick)], strict=True))
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(device=device, quick=quick, **(base | given))


class Plan:
    """The ladder's time budget, shared out over its phases as the run goes.

    Every phase (a rung's decision, the final rounds) has a weight: the entries its rounds
    run. When a phase starts it gets its weight's share of what is *left*, so time a
    decision did not need (it stopped at an early look) goes to the phases after it, and a
    phase that overran takes from them. ``eta`` is what is left of the budget: the run ends
    by then unless a round overruns its comparison's budget.
    """

    def __init__(
        self, budget: float, weights: dict[str, float], *, reserve: float = 0.03,
        clock: Callable[[], float] = time.perf_counter, started: float | None = None,
    ) -> None:  # fmt: skip
        self.budget, self.weights, self.clock = budget, dict(weights), clock
        self.started = clock() if started is None else started
        self.reserve = reserve * budget  # writing the report, the last round's overrun
        self.given: dict[str, float] = {}

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return max(0.0, self.budget - self.reserve - self.elapsed())

    def share(self, phase: str) -> float:
        """Seconds for ``phase`` now: its weight's share of what is left to the phases ahead."""
        ahead = sum(w for p, w in self.weights.items() if p not in self.given)
        weight = self.weights.get(phase, 1.0)
        # spent already: still > 0, so the phase measures its smallest round and says so
        seconds = max(self.left() * weight / max(ahead, weight), 1e-3)
        self.given[phase] = seconds
        return seconds

    def eta(self) -> float:
        return max(0.0, self.budget - self.elapsed())


def run_ladder(
    settings: LadderSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """Decide the rungs, run kept rungs + ceiling + peers in paired rounds, return the report.

    Args:
        settings: sizes and budget (default: ``LadderSettings.preset(quick=True)``).
        out_dir: if given, receives ``ladder.json``, ``ladder.md``, ``ladder.png`` and
            ``recommended.py``.
        log: receives progress lines (default: stderr).
        progress: called with ``(elapsed, budget)`` seconds after every line, for a bar
            with an ETA (:class:`d2lopt.lab.logbar.LogBar`'s ``at``).

    Returns:
        The ``ladder.json`` content: ``rungs`` (status, reason, the decision's interval and
        sizing; for kept rungs samples/s, speedup and its interval, fraction of the
        ceiling, MFU, time breakdown, fixed costs, data stalls, peak memory), ``ceiling``,
        ``peers`` and ``loop_overhead`` (with ``vs_best``), ``machine`` (FLOPs, peaks),
        ``best``, ``targets``, ``hardware``, ``settings``, ``data``, ``load_average``.
    """
    s = settings or LadderSettings.preset(quick=True)
    started = time.perf_counter()
    load_before = load_average()
    sink = log or (lambda line: print(line, file=sys.stderr))

    def log(line: str) -> None:
        elapsed = time.perf_counter() - started
        sink(f"[{elapsed:4.0f} s] {line}")
        if progress is not None:
            progress(elapsed, s.budget_seconds)

    wl = Workload(s)
    hardware = describe_hardware(wl.device)
    log(f"ladder on {wl.device}: {wl.description}; batch {s.batch_size}, {s.epochs} epochs a "
        f"run; at most {wl.usage(None)}; budget {s.budget_seconds:.0f} s")  # fmt: skip
    plan = Plan(s.budget_seconds, phase_weights(wl), started=started)
    machine = machine_limits(wl, plan, log)
    climb = _Climb(wl, plan, log)
    rungs = climb.run()  # decided; now measured whole, side by side
    final = final_rounds(wl, rungs, plan, log)
    result = report(wl, rungs, climb.loader_sweep, final, machine, hardware)
    result["targets"] = check_targets(result)
    result["load_average"] = {"before": load_before, "after": load_average()}
    result["elapsed_s"] = time.perf_counter() - started
    result["reproduce"] = reproduce_command(result)
    result = json_safe(result)
    if out_dir is not None:
        save_outputs(result, out_dir)
        write_recommended(result, out_dir)
    log(f"done in {result['elapsed_s']:.0f} s")
    return result


# ====== the workload
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
    obj = resolve(spec, "dataset", from_cwd=True)
    if callable(obj) and not _is_map_dataset(obj):
        obj = call_factory(obj, spec, "dataset")
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
    check_sample(train, spec, "dataset")  # (x, class index) items, said before any rung
    return train, test, how


def load_user_model(spec: str) -> Callable[[], nn.Module]:
    """``--model MODULE:ATTR`` -> a zero-argument factory of fresh ``nn.Module`` s.

    Every rung starts from the same fresh weights, so the flag names a function or class
    that *builds* the model, not a model instance.
    """
    obj = resolve(spec, "model", from_cwd=True)
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
        net = call_factory(obj, spec, "model")
        if not isinstance(net, nn.Module):
            raise ParamError("model", f"{spec}() returned a {type(net).__name__}, not an nn.Module")
        return net

    build()  # fail now, naming the flag, not in the middle of the ladder
    return build


# ------------------------------------------------------------------------------ workload
class Workload:
    """The data sets, the model factory and the loaders every rung is built from.

    ``n_train``/``n_test`` cap the samples; each comparison then uses the first
    ``batches * batch_size`` of a seeded order (:meth:`part`), sized from what its rounds
    cost on this machine, and says how many it used.
    """

    def __init__(self, s: LadderSettings) -> None:
        self.s = s
        self.device = resolve_device(s.device)
        self.samples: dict[str, list] | None = None  # image files: decode-once/GPU-decode rungs
        if s.dataset is None:
            root, size = s.data_dir, s.image_size
            self.train_set = standard_dataset(s.n_train, size, train=True, root=root)
            self.test_set = standard_dataset(s.n_test, size, train=False, root=root)
            self.samples = {"train": self.train_set.samples, "test": self.test_set.samples}
            self.available = (len(self.train_set), len(self.test_set))
            self.description = (
                f"JPEGs of {size}px on disk, decoded and augmented per sample "
                f"(RandomResizedCrop + flip)"
            )
        else:
            train, test, how = load_user_data(s.dataset, s.seed)
            self.train_set, self.test_set = self._cap(train, s.n_train), self._cap(test, s.n_test)
            self.available = (len(train), len(test))
            self.description = f"{s.dataset} (test samples: {how})"
        self.model_factory = load_user_model(s.model) if s.model else None
        self.model_name = s.model or "d2lopt.models.cnn(in_channels=3)"
        self.sample_batch = self._check_batches()  # two samples: checked, and FLOPs counted on
        self.batch_shape = tuple(self.sample_batch[0].shape[1:])
        self._device_batches: dict[tuple[bool, int | None], list] = {}
        g = torch.Generator().manual_seed(s.seed)  # which samples a sized comparison uses
        self._order = {True: torch.randperm(len(self.train_set), generator=g).tolist(),
                       False: torch.randperm(len(self.test_set), generator=g).tolist()}  # fmt: skip

    @property
    def largest(self) -> int:
        """Batches an epoch when a run uses every training sample the caps allow."""
        return max(1, len(self.train_set) // self.s.batch_size)

    def sizes(self, batches: int | None) -> tuple[int, int]:
        """Training and test samples a run of ``batches`` batches an epoch uses (None: all).

        The test set shrinks with the training set, in the capped sets' proportion, to at
        least one batch: a run's evaluation keeps its share of the run.
        """
        n_train, n_test = len(self.train_set), len(self.test_set)
        if batches is None:
            return n_train, n_test
        train = min(n_train, batches * self.s.batch_size)
        test = min(n_test, max(self.s.batch_size, math.ceil(train * n_test / n_train)))
        return train, test

    def part(self, train: bool, batches: int | None) -> tuple[Dataset, list | None]:
        """The data set (and image files) of a run of ``batches`` batches an epoch."""
        full = self.train_set if train else self.test_set
        files = self.samples["train" if train else "test"] if self.samples else None
        n = len(full) if batches is None else self.sizes(batches)[0 if train else 1]
        if n == len(full):
            return full, files
        keep = self._order[train][:n]
        return Subset(full, keep), [files[i] for i in keep] if files is not None else None

    def usage(self, batches: int | None) -> str:
        """``'512 of 2048 training and 128 of 512 test samples'``, and of how many there are."""
        train, test = self.sizes(batches)
        total_train, total_test = self.available
        text = f"{train} of {total_train} training and {test} of {total_test} test samples"
        capped = len(self.train_set) < self.available[0]
        return text + (f" (at most {len(self.train_set)}: --n-train)" if capped else "")

    def _cap(self, ds: Dataset, n: int) -> Dataset:
        """At most ``n`` samples (seeded): the ladder measures speed, not accuracy."""
        if len(ds) <= n:
            return ds
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.s.seed))
        return Subset(ds, keep[:n].tolist())

    def _check_batches(self) -> tuple[torch.Tensor, torch.Tensor]:
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
        return X, y

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

    def loader(
        self, spec: dict[str, Any], config: TrainConfig, *, train: bool, batches: int | None = None
    ) -> Iterable:
        """The training or test loader of a rung (built inside the timed run: start-up),
        over the samples of a run of ``batches`` batches an epoch (:meth:`part`)."""
        ds, files = self.part(train, batches)
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
                pin_memory=pin_memory_for(config.pin_memory, dev, announce=False),  # quiet per rung
            )
        assert files is not None, "decode rungs apply to image files only"
        common = dict(batch_size=config.batch_size, size=s.image_size, train=train, seed=s.seed)
        if kind == "decode_once":
            cache = decode_images(files, dev)  # the one-time decode counts in the run's start-up
            return DeviceAugmentLoader(cache.images, cache.labels, **common)
        if kind == "gpu_decode":
            return GpuDecodeLoader(read_encoded(files), device=dev, **common)
        raise ValueError(f"loader: unknown kind {kind!r}")

    def device_batches(
        self, train: bool, batches: int | None = None, limit: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ceiling's input: one augmented epoch (or the test set), copied to the device.

        The batches are built once per size and kept on the host; each call copies them to
        the device afresh, and they leave it when the caller drops the list. The ceiling
        calls it before its timer starts and drops the list after its run, so the data set
        does not sit on the GPU through every later rung (about 0.9 GB at the GPU preset).
        """
        key = (train, batches)
        if key not in self._device_batches:
            ds, _ = self.part(train, batches)
            loader = DataLoader(ds, batch_size=self.s.batch_size)
            self._device_batches[key] = list(loader)  # on the host
        chosen = self._device_batches[key][:limit]  # limit: the first ones (None: all)
        return [(X.to(self.device), y.to(self.device)) for X, y in chosen]

    def decoded_mib(self) -> float:
        """Memory the decode-once cache needs: uint8 [N, C, H, W] for train + test."""
        assert self.samples is not None
        c, h, w = self.batch_shape
        return (len(self.samples["train"]) + len(self.samples["test"])) * c * h * w / 2**20


# ====== what one run measures
@dataclass(frozen=True)
class RunStats:
    """One whole run: its time, and where the time went (fixed costs, stalls, evaluation)."""

    samples: int  # training samples
    seconds: float  # the whole run: loaders built, training, evaluation
    startup: float  # run start -> first training batch (loader and worker start-up, decode)
    first_step: float  # the first loop body (first-call compilation, lazy initialization)
    step: float  # median loop body after the first
    waited: float  # seconds inside next() after the first batch: data stalls
    stepped: float  # seconds in loop bodies after the first
    peak_memory_mib: float | None = None
    evaluation: float = 0.0  # host seconds between epochs and after the last: evaluation
    syncs: float | None = None  # host seconds reading tensors to Python outside the loader
    # (None: not counted); a transform's .item() inside next() is loading, not a sync
    step_syncs: float = 0.0  # the part of ``syncs`` inside loop bodies
    sync_calls: int = 0
    host_waited: float | None = None  # ``waited`` on the host clock (CUDA: waited is GPU time)
    host_stepped: float | None = None

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

    def breakdown(self) -> dict[str, float | None]:
        """Seconds of the run by where the host spent them; they sum to ``seconds``.

        Like Holistic Trace Analysis's split of idle time, from what the run measured
        itself: *fixed* (start-up to the first batch, the first step's extra), *data_wait*
        (inside ``next()``), *host_syncs* (reading tensors to Python: ``.item()``,
        ``float()``..., where the host waits for queued device work), *compute* (the loop
        bodies without their syncs), *evaluation* (between epochs and after the last,
        without its syncs) and *other* (the rest: building the model, tearing down). On
        CUDA these are host seconds: the GPU's idle share is the stall fraction.
        """
        waited = self.waited if self.host_waited is None else self.host_waited
        stepped = self.stepped if self.host_stepped is None else self.host_stepped
        syncs = self.syncs or 0.0
        parts = {
            "fixed": self.fixed,
            "data_wait": waited,
            "host_syncs": self.syncs,
            "compute": max(0.0, stepped + min(self.first_step, self.step) - self.step_syncs),
            "evaluation": max(0.0, self.evaluation - (syncs - self.step_syncs)),
        }
        parts["other"] = max(0.0, self.seconds - sum(v or 0.0 for v in parts.values()))
        return parts


class _Unsized:
    """A loader without ``len()``: Lightning then iterates it to its end each epoch.

    Given a sized loader, Lightning stops after ``len()`` batches without asking for one
    more, so :class:`Timed` never sees an epoch end: the last step and the evaluation after
    it would be booked as "other". Only the Lightning entries get this view.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


class HostSyncs:
    """Host seconds spent reading tensor values into Python during a run, and how many.

    ``.item()``, ``float()``, ``int()``, ``bool()`` and ``.tolist()`` of a device tensor make
    the host wait for every kernel queued before them (a CUDA sync); on a CPU they cost
    little, and this shows it. While active, those ``torch.Tensor`` methods are wrapped by
    a timer (a fraction of a microsecond a call); on exit the originals come back. Not used
    around ``torch.compile``d runs, whose tracing must see the original methods.
    """

    NAMES = ("item", "tolist", "__float__", "__int__", "__bool__")

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter

        def timed(tensor: torch.Tensor, *args: Any) -> Any:
            t = clock()
            try:
                return original(tensor, *args)
            finally:
                self.seconds += clock() - t
                self.calls += 1

        return timed

    def __enter__(self) -> HostSyncs:
        for name in self.NAMES:
            setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.NAMES:
            delattr(torch.Tensor, name)  # the inherited TensorBase method shows through again


class Timed:
    """The training loader of one run, timed batch by batch (fit reads sampler/dataset).

    On the CPU the stalls are host time inside ``next()``, and a step body is host time:
    the host does the work. On CUDA the host only queues a step, so host time inside
    ``next()`` would include the GPU work that a blocking call in the loader waits for
    (a pageable copy, a stream sync) and report it as a stall. There, a CUDA event is
    recorded when the host asks for the next batch (after the step was queued) and when it
    gets it: the GPU time between the two is what the device *idled* for data (0 when the
    batch came before the queued step ran out; the loader's own GPU work, decode or
    augmentation, counts as data time), and the GPU time from getting a batch to the end
    of its step is the step's. An epoch's first batch follows evaluation (host syncs):
    its wait stays host time. The time between epochs (from an epoch's last step to the
    next epoch's first request, and after the last epoch) is the run's evaluation.
    """

    def __init__(
        self,
        loader: Iterable,
        start: float,
        device: torch.device | None = None,
        event: Callable[[], Any] | None = None,
        syncs: HostSyncs | None = None,
    ) -> None:
        self.loader, self.start, self.syncs = loader, start, syncs
        self.startup: float | None = None
        self.first_step: float | None = None
        self.waited, self.bodies, self.samples = 0.0, [], 0
        self.between, self.step_syncs = 0.0, 0.0  # evaluation; syncs inside loop bodies
        self.data_syncs, self.data_sync_calls = 0.0, 0  # inside next(): the loader's own
        self._ended: float | None = None  # when the last epoch's loop ended
        cuda = device is not None and torch.device(device).type == "cuda"
        if event is None and cuda:
            event = functools.partial(torch.cuda.Event, enable_timing=True)
        self._event = event
        self._gaps: list[tuple[Any, Any]] = []  # (step queued, batch got): device idle
        self._steps: list[tuple[Any, Any]] = []  # (batch got, step queued): device busy
        self._epoch_starts = 0.0  # host seconds to each later epoch's first batch
        self._steps_timed: list[float] | None = None  # steps timed by the consumer (Lightning)

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, generator, persistent_workers
        if name in ("loader", "_event"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _record(self) -> Any:
        ev = self._event()
        ev.record()  # on the current stream, behind the work queued so far
        return ev

    def _synced(self) -> float:
        return self.syncs.seconds if self.syncs is not None else 0.0

    def _calls(self) -> int:
        return self.syncs.calls if self.syncs is not None else 0

    def __iter__(self):
        t = time.perf_counter()
        if self._ended is not None:  # the previous epoch ended: what ran since is evaluation
            self.between += t - self._ended
            self._ended = None
        asked = None  # the event behind the step queued last, in this epoch
        before = (self._synced(), self._calls())  # a transform's .item() is loading, no sync
        batches = iter(self.loader)  # non-persistent workers start here: a stall
        for batch in batches:
            got = time.perf_counter()
            self.data_syncs += self._synced() - before[0]
            self.data_sync_calls += self._calls() - before[1]
            got_event = None
            if self.startup is None:
                self.startup = got - self.start
            else:
                self.waited += got - t
                if self._event is not None:
                    got_event = self._record()
                    if asked is not None:
                        self._gaps.append((asked, got_event))
                    else:  # an epoch's first batch: evaluation ran before it, host time
                        self._epoch_starts += got - t
            self.samples += len(batch[1])
            synced = self._synced()
            yield batch
            t = time.perf_counter()
            self.step_syncs += self._synced() - synced
            before = (self._synced(), self._calls())
            asked = self._record() if self._event is not None else None
            if self.first_step is None:
                self.first_step = t - got
            else:
                self.bodies.append(t - got)
                if got_event is not None:
                    self._steps.append((got_event, asked))
        self._ended = time.perf_counter()

    def steps_from(self, seconds: list[float]) -> None:
        """Take the steps' host times from the consumer (Lightning's batch hooks).

        Lightning's data fetcher asks for batch *i + 1* before it runs step *i*, so the time
        between two requests is the previous step, and each epoch's last step runs after the
        loader ended, where evaluation is booked. Given the steps' own times, the run's host
        time outside ``next()`` is split into them and the rest (evaluation, the loop's own).
        """
        self._steps_timed = list(seconds)

    def stats(self, seconds: float) -> RunStats:
        """The run's numbers; on CUDA call it after synchronizing (the events must be done)."""
        between = self.between
        if self._ended is not None:  # after the last epoch: the final evaluation
            between += max(0.0, self.start + seconds - self._ended)
        first_step, bodies = self.first_step or 0.0, self.bodies
        if self._steps_timed:  # the consumer's own step times (steps_from)
            outside = first_step + sum(bodies) + between
            first_step, bodies = self._steps_timed[0], self._steps_timed[1:]
            between = max(0.0, outside - first_step - sum(bodies))
        step = statistics.median(bodies) if bodies else first_step
        waited, stepped = self.waited, sum(bodies)
        host_waited, host_stepped = waited, stepped
        if self._event is not None and self._steps:  # GPU time, ms -> s
            waited = self._epoch_starts + sum(a.elapsed_time(b) for a, b in self._gaps) / 1e3
            stepped = sum(a.elapsed_time(b) for a, b in self._steps) / 1e3
        return RunStats(
            samples=self.samples,
            seconds=seconds,
            startup=self.startup if self.startup is not None else seconds,
            first_step=first_step,
            step=step,
            waited=waited,
            stepped=stepped,
            evaluation=between,
            syncs=self.syncs.seconds - self.data_syncs if self.syncs is not None else None,
            step_syncs=self.step_syncs,
            sync_calls=self._calls() - self.data_sync_calls,
            host_waited=host_waited,
            host_stepped=host_stepped,
        )


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; elsewhere the
    proportional set size (PSS, via psutil) of this process and its loader workers, sampled
    every 50 ms. PSS counts a page a forked worker shares with its parent half for each,
    so workers are not double-counted (RSS where the OS has no PSS).

    On a GPU it is the run's *own* peak: what it allocated on top of what was already
    allocated when it started. ``reset_peak_memory_stats`` sets the peak to the memory
    allocated now, not to zero (pytorch/pytorch ``c10/cuda/CUDACachingAllocator.cpp``,
    ``resetPeakStats`` -> ``reset_peak_stat``: ``stat.peak = stat.current``), so the absolute
    ``max_memory_allocated`` would charge every run with whatever earlier runs left behind.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._thread = device, 0, None
        self.baseline = 0  # CUDA: bytes allocated when the run started, not its own
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
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.baseline
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float | None:
        return self.peak / 2**20 if self.peak else None


# ====== one run
MEASURED, SKIPPED, REJECTED, UNDECIDED = "measured", "skipped", "rejected", "undecided"


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
    loop hygiene: async copies, AMP, channels_last, each step :func:`d2lopt.fit`'s own
    :class:`~d2lopt.loop.TrainStep`; evaluation of train and test every epoch, the article's."""
    device = config.torch_device
    place(net, config, device)
    criterion = nn.CrossEntropyLoss(reduction="none")
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    plain = not config.non_blocking and config.amp == "off" and not config.channels_last
    step = TrainStep(net, criterion, optimizer, config, device)
    for _ in range(config.num_epochs):
        if plain:  # the article's own epoch, verbatim
            article_train_epoch(net, train, criterion, optimizer, device)
        else:
            for X, y in train:
                step(X, y)
        with step.autocast:  # the article's evaluation: train and test, a sync per batch
            article_evaluate_loss(net, evaluate_train, criterion, device)
            article_evaluate_loss(net, test, criterion, device)


# ------------------------------------------------------------------------------ the entries
def _timed_run(
    body: Callable[[float, HostSyncs | None], Timed], device: torch.device, *, syncs: bool = True
) -> RunStats:
    """Run ``body(start, syncs)`` (it builds its loaders and trains); its time is the whole
    run. ``syncs``: count the host syncs (not around ``torch.compile``: :class:`HostSyncs`)."""
    synchronize(device)
    counter = HostSyncs() if syncs else None
    with counter if counter is not None else contextlib.nullcontext():
        start = time.perf_counter()
        timed = body(start, counter)
        synchronize(device)  # queued GPU work belongs to this run
        seconds = time.perf_counter() - start
    return timed.stats(seconds)


def run_rung(wl: Workload, rung: Rung, batches: int | None = None) -> RunStats:
    """One whole run of ``rung`` on the samples of ``batches`` batches an epoch."""
    assert rung.config is not None
    config = rung.config

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        train = wl.loader(rung.loader, config, train=True, batches=batches)
        test = wl.loader(rung.loader, config, train=False, batches=batches)
        timed = Timed(train, start, wl.device, syncs=syncs)
        if rung.loop == "fit":
            fit(wl.net(), timed, test, config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device, syncs=not config.compile)


def run_ceiling(wl: Workload, top: Rung, batches: int | None = None) -> RunStats:
    """The top rung's loop and evaluation, on batches that already sit on the device."""
    assert top.config is not None
    train = wl.device_batches(train=True, batches=batches)
    test = wl.device_batches(train=False, batches=batches)

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        timed = Timed(train, start, wl.device, syncs=syncs)
        if top.loop == "fit":
            fit(wl.net(), timed, test, top.config, progress=False)
        else:
            _article_loop(wl.net(), timed, test, top.config, evaluate_train=train)
        return timed

    return _timed_run(body, wl.device, syncs=not top.config.compile)


def _peer_net(wl: Workload, config: TrainConfig) -> nn.Module:
    net = wl.net()
    if config.channels_last:  # a model-level setting: the peer's own loop is untouched
        net.to(memory_format=torch.channels_last)
    return net


def _run_d2l(wl: Workload, top: Rung, batches: int | None = None) -> RunStats:
    """Loop overhead: d2l's ``train_ch6`` loop fed exactly like the best rung."""
    config = top.config
    assert config is not None
    # bf16 autocast needs no loop change (no GradScaler): d2l gets it; fp16 it cannot
    amp = autocast_ctx(wl.device, config.amp) if config.amp == "bf16" else contextlib.nullcontext()

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        loader = wl.loader(top.loader, config, train=True, batches=batches)
        train = Timed(loader, start, wl.device, syncs=syncs)
        test = wl.loader(top.loader, config, train=False, batches=batches)
        with amp:
            net = _peer_net(wl, config)
            d2l_train_ch6(
                net, train, test, config.num_epochs, config.lr, wl.device, config.momentum
            )
        return train

    return _timed_run(body, wl.device)


def _run_lightning(wl: Workload, top: Rung, batches: int | None = None) -> RunStats:
    """Loop overhead: Lightning's ``Trainer`` fed exactly like the best rung."""
    config = top.config
    assert config is not None

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        loader = wl.loader(top.loader, config, train=True, batches=batches)
        train = Timed(loader, start, wl.device, syncs=syncs)
        test = wl.loader(top.loader, config, train=False, batches=batches)
        trainer = lightning_fit(
            _peer_net(wl, config), _Unsized(train), test, max_epochs=config.num_epochs,
            lr=config.lr, momentum=config.momentum, device=wl.device,
            precision=LIGHTNING_PRECISION[config.amp], root_dir=".", defaults=False,
            channels_last=config.channels_last,
            # evaluate like the top rung: every epoch (article loop) or once at the end
            check_val_every_n_epoch=config.eval_every if top.loop == "fit" else 1,
        )  # fmt: skip
        train.steps_from(trainer.lightning_module.step_seconds)
        return train

    return _timed_run(body, wl.device)


def _run_d2l_book(wl: Workload, top: Rung, batches: int | None = None) -> RunStats:
    """d2l as its book runs it: ``train_ch6`` with its own loaders, init, fp32 and evaluation."""
    train_set, test_set = wl.part(True, batches)[0], wl.part(False, batches)[0]

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        with warnings.catch_warnings():  # d2l asks for 4 workers on any machine: said in "how"
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            train_iter, test_iter = d2l_book_loaders(train_set, test_set, wl.s.batch_size)
            train = Timed(train_iter, start, wl.device, syncs=syncs)
            d2l_book_train(wl.net(), train, test_iter, wl.s.epochs, wl.s.lr, wl.device)
        return train

    return _timed_run(body, wl.device)


def _run_lightning_guide(wl: Workload, top: Rung, batches: int | None = None) -> RunStats:
    """Lightning as its docs run it: the guide's loaders and precision, the default Trainer
    (sanity steps, validation every epoch, a checkpoint and logs each epoch, written to a
    temporary folder that is part of the run)."""
    import tempfile

    guide = lightning_guide(wl.device)
    train_set, test_set = wl.part(True, batches)[0], wl.part(False, batches)[0]
    config = wl.base_config()

    def body(start: float, syncs: HostSyncs | None) -> Timed:
        with tempfile.TemporaryDirectory(prefix="d2lopt-lightning-") as root:
            B = wl.s.batch_size
            train_loader, val_loader = lightning_loaders(train_set, test_set, B, guide)
            train = Timed(train_loader, start, wl.device, syncs=syncs)
            trainer = lightning_fit(
                wl.net(), _Unsized(train), val_loader, max_epochs=wl.s.epochs, lr=config.lr,
                momentum=config.momentum, device=wl.device, precision=guide["precision"],
                root_dir=root, defaults=True,
            )  # fmt: skip
            train.steps_from(trainer.lightning_module.step_seconds)
        return train

    return _timed_run(body, wl.device)


LOOP_RUNS = {"d2l": _run_d2l, "lightning": _run_lightning}  # the best rung's loader and settings
PEER_RUNS = {"d2l": _run_d2l_book, "lightning": _run_lightning_guide}  # as people run them


# ------------------------------------------------------------------------------ loader rungs
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


# ====== the climb
def _amp_candidate(device: torch.device) -> str:
    from ..devices import supports_bf16

    if device.type == "cuda":
        return "bf16" if supports_bf16(device) else "fp16"
    return "fp16" if device.type == "mps" else "bf16"


def pair(sweep: Sweep, slow: str, fast: str) -> dict:
    """How many times faster ``fast`` ran than ``slow`` in the same paired rounds.

    Judged with the sweep's own planned looks (:meth:`d2lopt.measure.Sweep.between`): its
    rounds stopped at one of them, so a fresh 95 % interval on them would peek.
    """
    c = sweep.between(fast, slow)
    return {"ratio": c.speedup, "ci": list(c.ci), "rounds": c.rounds, "text": str(c)}


def _step_settings(config: TrainConfig) -> tuple:
    """What a training step (``TrainStep`` via ``train_step``) reads from its config."""
    return (config.non_blocking, config.amp, config.channels_last, config.compile,
            config.lr, config.momentum, config.device)  # fmt: skip


def _bf16_emulated(device: torch.device, amp: str) -> bool:
    """bf16 autocast on a CPU without bf16 units (``d2lopt env``): predictably slower."""
    from ..devices import cpu_has_bf16_units

    return device.type == "cpu" and amp == "bf16" and not cpu_has_bf16_units()


def phase_weights(wl: Workload) -> dict[str, float]:
    """Each phase's share of the budget: the entries its rounds run (:class:`Plan`).

    Whole runs weigh half as much again as passes (they evaluate too). The final rounds'
    entries are guessed before the climb: half the rungs that apply kept, plus the
    baseline, the ceiling and four peers.
    """
    s, dev = wl.s, wl.device
    weights = {"+ loader workers": float(len(_worker_grid())), "+ loader threads": 3.0}
    if dev.type == "cuda":
        weights["+ pin_memory/non_blocking"] = 2.0
        if wl.images:
            weights["+ GPU decode"] = 2.0
    if wl.images:
        weights["+ decode once"] = 2.0
    weights["+ AMP"] = 1.0 if _bf16_emulated(dev, _amp_candidate(dev)) else 2.0
    weights["+ loop hygiene"] = 3.0
    if len(wl.batch_shape) == 3:
        weights["+ channels_last"] = 2.0
    if s.compile:
        weights["+ torch.compile"] = 2.0
    weights["final rounds"] = 1.5 * (2 + len(weights) / 2 + 2 * len(PEERS))
    return weights


def _worker_grid() -> list[dict[str, Any]]:
    counts = default_workers()[1:][-4:]  # the 4 largest counts: a sweep fits its budget
    return [{"num_workers": 0}] + [
        {"num_workers": w, "prefetch_factor": 2, "persistent_workers": True} for w in counts
    ]


class _Climb:
    """Decide the rungs in order: kept when compare says *holds*, rejected when it says
    *does not hold*, and *undecided* otherwise (the climb goes on from the best kept rung)."""

    def __init__(self, wl: Workload, plan: Plan, log: Callable[[str], None]) -> None:
        self.wl, self.s, self.plan, self.log = wl, wl.s, plan, log
        self.best = Rung(
            "baseline",
            "the article's loop: num_workers=0, blocking copies, fp32, evaluate_loss on train "
            "and test every epoch",
            wl.base_config(),
        )
        self.rungs = [self.best]
        self.loader_sweep: list[dict[str, Any]] = []

    # -- bookkeeping
    def skip(self, name: str, adds: str, reason: str) -> None:
        self.rungs.append(Rung(name, adds, None, loader={}, status=SKIPPED, reason=reason))
        self.log(f"{name}: skipped ({reason})")

    def judge(
        self, cand: Rung, cmp: Comparison, measured: str, sizing: Sizing, **extra: Any
    ) -> None:
        """Keep, reject or leave undecided, by the verdict alone: never for lack of rounds."""
        decision = {
            "against": self.best.name,
            "measured": measured,
            "comparison": cmp.to_dict(),
            "summary": str(cmp),
            "verdict": cmp.verdict,
            "sizing": sizing.to_dict(),
            "samples": self.wl.usage(sizing.size),
        } | extra
        cand.decision = decision
        expected = extra.get("expected", "")
        if cmp.verdict == HOLDS:
            self.rungs.append(cand)
            self.best = cand
            self.log(f"{cand.name}: kept, {cmp} against {decision['against']}")
            return
        cand.status = REJECTED if cmp.verdict == DOES_NOT_HOLD else UNDECIDED
        cand.reason = f"{cmp} against {self.best.name}: {cmp.verdict}"
        why = [cmp.reason] if cand.status == UNDECIDED else []
        why += [] if sizing.fits or cand.status == REJECTED else [sizing.note]
        why += [expected] if expected else []
        if why:
            decision["why"] = "; ".join(why)
            cand.reason += f" ({decision['why']})"
        self.rungs.append(cand)
        self.log(f"{cand.name}: {cand.status}, {cand.reason}")

    # -- measurements
    def _judging(self, seconds: float) -> dict[str, Any]:
        s = self.s
        return dict(device=self.wl.device, min_effect=s.min_effect, confidence=s.confidence,
                    max_seconds=max(seconds, 1e-3), warmup=0, max_rounds=s.max_rounds)  # fmt: skip

    def sized(
        self, phase: str, one_round: Callable[[int], Any], *, brief: bool = False
    ) -> tuple[Sizing, float]:
        """The batches an epoch for ``phase``'s rounds, from measured rounds (the probes warm
        every entry up), and the seconds left for its paired rounds."""
        budget = self.plan.share(phase)
        rounds = BRIEF_ROUNDS if brief else ROUNDS
        sizing = size_rounds(one_round, budget=budget, rounds=rounds, largest=self.wl.largest)
        self.log(f"{phase}: {sizing.note}; {self.wl.usage(sizing.size)}")
        return sizing, budget - sizing.spent

    def loader_passes(
        self, phase: str, loaders: dict[str, tuple[dict, TrainConfig]],
        settings: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[LoaderSweep, Sizing]:  # fmt: skip
        """Loader candidates vs the previous best's loader, each pass a run's epochs over
        the samples the sizing chose, training every batch.

        Each loader is measured the way its own config runs: its batches copied with its
        ``non_blocking`` and trained by a step built from its config (one step per distinct
        step setting). A step built from the previous config would copy a pinned rung's
        labels blocking (``TrainStep``: ``y.to(device, non_blocking=False)`` is
        ``cudaMemcpyAsync`` + ``cudaStreamSynchronize``, pytorch/pytorch
        ``aten/src/ATen/native/cuda/Copy.cu``), so the rung would be measured without the
        overlap it claims, and the kept config would not be the one measured.
        """
        wl, s, prev = self.wl, self.s, self.best
        steps: dict[tuple, Step] = {}
        by_label: dict[str, Step] = {}
        for label, (_, config) in loaders.items():
            key = _step_settings(config)
            if key not in steps:
                steps[key] = train_step(wl.net(), config)
            by_label[label] = steps[key]

        def makers(batches: int) -> dict[str, Callable[[], Iterable]]:
            return {label: functools.partial(wl.loader, spec, config, train=True, batches=batches)
                    for label, (spec, config) in loaders.items()}  # fmt: skip

        non_blocking = {label: config.non_blocking for label, (_, config) in loaders.items()}

        def one_round(batches: int) -> None:
            for label, make in makers(batches).items():
                run_pass(make, epochs=s.epochs, device=wl.device,
                         non_blocking=non_blocking[label], step=by_label[label])  # fmt: skip

        sizing, left = self.sized(phase, one_round)
        sweep = measure_loaders(
            makers(sizing.size),
            reference=loader_label(prev.loader, prev.config),
            settings=settings,
            epochs=s.epochs,
            step=by_label,
            non_blocking=non_blocking,
            **self._judging(left),
        )
        return sweep, sizing

    def step_passes(
        self, phase: str, candidate: TrainConfig, *, brief: bool = False
    ) -> tuple[Comparison, Sizing, dict[str, Any]]:
        """The previous best's loader feeding the previous vs the candidate training step."""
        wl, s, prev = self.wl, self.s, self.best
        before, after = train_step(wl.net(), prev.config), train_step(wl.net(), candidate)
        extra: dict[str, Any] = {}
        if candidate.compile:  # first-call compilation: a fixed cost, timed apart
            X, y = wl.device_batches(train=True, limit=1)[0]
            t0 = time.perf_counter()
            after(X, y)
            synchronize(wl.device)
            extra["compile_s"] = time.perf_counter() - t0

        def passes(step: Step, batches: int) -> Callable[[], Any]:
            make = functools.partial(wl.loader, prev.loader, prev.config, train=True,
                                     batches=batches)  # fmt: skip
            return functools.partial(
                run_pass, make, epochs=s.epochs, device=wl.device,
                non_blocking=prev.config.non_blocking, step=step,
            )  # fmt: skip

        def one_round(batches: int) -> None:
            passes(before, batches)()
            passes(after, batches)()

        sizing, left = self.sized(phase, one_round, brief=brief)
        k = sizing.size
        cmp = compare(passes(before, k), passes(after, k), number=1, **self._judging(left))
        return cmp, sizing, extra

    # -- the rungs
    def workers(self) -> None:
        name, prev = "+ loader workers", self.best
        grid = _worker_grid()
        loaders, rows = {}, {}
        for setting in grid:
            config = replace(prev.config, **({"prefetch_factor": None, "persistent_workers": False}
                                             | setting))  # fmt: skip
            label = loader_label({"kind": "dataloader"}, config)
            loaders[label], rows[label] = ({"kind": "dataloader"}, config), setting
        self.log(f"{name}: {len(grid)} loader settings, each pass training every batch")
        sweep, sizing = self.loader_passes(name, loaders, settings=rows)
        self.loader_sweep = [run.to_dict() for run in sweep.runs.values()]
        others = [r for r in sweep.runs.values() if r.vs_reference is not None]
        pick = max(others, key=lambda r: r.vs_reference.speedup)
        w = pick.settings["num_workers"]
        cand = Rung(
            name,
            f"{w} worker process{'es' if w > 1 else ''} (prefetch_factor=2, persistent), "
            f"the best of {len(grid)} settings",
            replace(prev.config, num_workers=w, prefetch_factor=2, persistent_workers=True),
            loader={"kind": "dataloader"},
            loop=prev.loop,
        )
        measured = "loader passes, training every batch (the sweep of d2lopt tune-loader)"
        self.judge(cand, pick.vs_reference, measured, sizing, setting=pick.label)

    def threads(self) -> None:
        name, prev = "+ loader threads", self.best
        n = default_workers()[-1]
        spec, config = {"kind": "threads", "threads": n}, main_process_loading(prev.config)
        loaders = {loader_label(prev.loader, prev.config): (prev.loader, prev.config)}
        label = loader_label(spec, config)
        loaders[label] = (spec, config)
        processes = replace(prev.config, num_workers=n, prefetch_factor=2, persistent_workers=True)
        proc_label = loader_label({"kind": "dataloader"}, processes)
        if proc_label not in loaders:  # threads against as many worker processes, same rounds
            loaders[proc_label] = ({"kind": "dataloader"}, processes)
        self.log(f"{name}: {label} against {', '.join(k for k in loaders if k != label)}")
        sweep, sizing = self.loader_passes(name, loaders)
        vs_processes = pair(sweep.sweep, proc_label, label)
        cand = Rung(
            name,
            f"{n} threads build the batches in the main process, instead of worker processes",
            config,
            loader=spec,
            loop=prev.loop,
        )
        self.judge(
            cand,
            sweep.runs[label].vs_reference,
            "loader passes, training every batch",
            sizing,
            loader_runs=[r.to_dict() for r in sweep.runs.values()],
            threads_vs_processes=vs_processes,
        )

    def pinned(self) -> None:
        name, adds = "+ pin_memory/non_blocking", "page-locked batches, asynchronous copies"
        wl, prev = self.wl, self.best
        if wl.device.type != "cuda":
            self.skip(
                name,
                adds,
                f"needs CUDA; on {wl.device.type} no batch crosses a host-to-device link",
            )
            return
        config = replace(prev.config, pin_memory=True, non_blocking=True)
        label = loader_label(prev.loader, config)
        sweep, sizing = self.loader_passes(  # each measured with its own copies and step
            name,
            {loader_label(prev.loader, prev.config): (prev.loader, prev.config),
             label: (prev.loader, config)},
        )  # fmt: skip
        cand = Rung(name, adds, config, loader=prev.loader, loop=prev.loop)
        self.judge(cand, sweep.runs[label].vs_reference, "loader passes, training every batch",
                   sizing, loader_runs=[r.to_dict() for r in sweep.runs.values()])  # fmt: skip

    def gpu_decode(self) -> None:
        name = "+ GPU decode"
        adds = "JPEG bytes read once; each batch decoded by one batched decode_jpeg on the GPU"
        wl = self.wl
        if not wl.images:
            self.skip(
                name, adds, "needs JPEG files d2lopt can read: --dataset gives decoded samples"
            )
            return
        if wl.device.type != "cuda":
            self.skip(name, adds, "needs CUDA (nvJPEG)")
            return
        self._loader_rung(name, adds, {"kind": "gpu_decode"})

    def decode_once(self) -> None:
        name, wl = "+ decode once", self.wl
        if not wl.images:
            self.skip(
                name,
                "uint8 cache + batched augmentation on the device",
                "needs image files whose decoding d2lopt can split from the augmentation; your "
                "--dataset's __getitem__ is opaque (its transform may be random), so caching "
                "its output would change what the model sees",
            )
            return
        need = wl.decoded_mib()
        if wl.device.type == "cuda":
            free = torch.cuda.mem_get_info(wl.device)[0] / 2**20
        else:
            import psutil

            free = psutil.virtual_memory().available / 2**20
        adds = (
            f"every image decoded once into a uint8 cache on the {wl.device.type} (at most "
            f"{need:.1f} MiB), then random crop + flip as one batched kernel per batch"
        )
        if need > 0.5 * free:
            self.skip(
                name, adds, f"the cache needs {need:.0f} MiB, over half the {free:.0f} MiB free"
            )
            return
        self._loader_rung(name, adds, {"kind": "decode_once", "cache_mib": need})

    def _loader_rung(self, name: str, adds: str, spec: dict[str, Any]) -> None:
        prev = self.best
        config = main_process_loading(prev.config)
        label = loader_label(spec, config)
        self.log(f"{name}: {label} against {loader_label(prev.loader, prev.config)}")
        sweep, sizing = self.loader_passes(
            name,
            {loader_label(prev.loader, prev.config): (prev.loader, prev.config),
             label: (spec, config)},
        )  # fmt: skip
        cand = Rung(name, adds, config, loader=spec, loop=prev.loop)
        self.judge(cand, sweep.runs[label].vs_reference, "loader passes, training every batch",
                   sizing, loader_runs=[r.to_dict() for r in sweep.runs.values()])  # fmt: skip

    def step_rung(self, name: str, adds: str, change: dict[str, Any], expected: str = "") -> None:
        """A rung that changes the training step; ``expected``: why it should lose here
        (measured briefly all the same, and reported with the reason)."""
        prev = self.best
        candidate = replace(prev.config, **change)
        self.log(f"{name}: training passes with and without it" + (f" ({expected})" if expected
                                                                    else ""))  # fmt: skip
        try:
            cmp, sizing, extra = self.step_passes(name, candidate, brief=bool(expected))
        except Exception as exc:  # e.g. torch.compile without a C++ compiler: say why, go on
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            self.skip(name, adds, f"failed here: {type(exc).__name__}: {first}")
            return
        cand = Rung(name, adds, candidate, loader=prev.loader, loop=prev.loop)
        if expected:
            extra["expected"] = expected
        self.judge(cand, cmp, "training passes (the loader feeding the step)", sizing, **extra)

    def hygiene(self) -> None:
        prev, s, wl = self.best, self.s, self.wl
        name = "+ loop hygiene"
        cand = Rung(
            name,
            "d2lopt.fit: evaluate the test set once at the end, not train+test every epoch; "
            "loss summed on the device (no per-batch syncs)",
            replace(prev.config, eval_every=s.epochs),
            loader=prev.loader,
            loop="fit",
        )
        self.log(f"{name}: whole runs with the article's loop and with d2lopt.fit")

        def one_round(batches: int) -> None:
            run_rung(wl, prev, batches)
            run_rung(wl, cand, batches)

        sizing, left = self.sized(name, one_round)
        k = sizing.size
        cmp = compare(
            functools.partial(run_rung, wl, prev, k),
            functools.partial(run_rung, wl, cand, k),
            number=1,
            **self._judging(left),
        )
        self.judge(cand, cmp, "whole runs (training and evaluation)", sizing)

    def run(self) -> list[Rung]:
        wl, s = self.wl, self.s
        self.workers()
        self.threads()
        self.pinned()
        self.gpu_decode()
        self.decode_once()
        amp = _amp_candidate(wl.device)
        expected = ""
        if _bf16_emulated(wl.device, amp):
            expected = ("expected slower: this CPU has no bf16 units (AVX512-BF16 or AMX, "
                        "`d2lopt env`), so bf16 is emulated; measured briefly")  # fmt: skip
        self.step_rung("+ AMP", f"autocast to {amp}", {"amp": amp}, expected=expected)
        self.hygiene()
        if len(wl.batch_shape) == 3:
            self.step_rung(
                "+ channels_last",
                "NHWC memory format for the convolutions",
                {"channels_last": True},
            )
        else:
            self.skip(
                "+ channels_last",
                "NHWC memory format for the convolutions",
                f"needs 4-D image batches; --dataset gives samples of shape {wl.batch_shape}",
            )
        if s.compile:
            self.step_rung("+ torch.compile", "compiled model (inductor)", {"compile": True})
        else:
            self.skip(
                "+ torch.compile",
                "compiled model (inductor)",
                "optional: add --compile (its first-call compilation is timed apart)",
            )
        return self.rungs


# ====== the final rounds and ``ladder.json``
KEPT = MEASURED  # a kept rung is measured in the final rounds
_PEER_INSTALL = {"d2l": "pip install --no-deps d2l==1.0.3", "lightning": "pip install lightning"}


def _peer_amp(wl: Workload, key: str) -> str:
    """The precision (``TrainConfig.amp`` value) a peer runs at as people run it: d2l's
    book in fp32, Lightning at the precision its guide gives for this device."""
    if key != "lightning":
        return "off"
    precision = lightning_guide(wl.device)["precision"]
    return next(amp for amp, p in LIGHTNING_PRECISION.items() if p == precision)


def final_rounds(
    wl: Workload, rungs: list[Rung], plan: Plan, log: Callable[[str], None]
) -> tuple[Sweep, dict[str, list[RunStats]], dict[str, str], Sizing, dict[str, str]]:
    """Kept rungs, ceiling and peers: whole runs in the same paired rounds, sized to the
    budget left. Returns the sweep, each entry's runs, the peers that could not run (why),
    the sizing and each entry's precision (``TrainConfig.amp`` values, for its MFU)."""
    s = wl.s
    kept = [r for r in rungs if r.status == KEPT]
    top = kept[-1]
    assert top.config is not None
    runs: dict[str, Callable[[int], RunStats]] = {
        r.name: functools.partial(run_rung, wl, r) for r in kept
    }
    amp = {r.name: r.config.amp for r in kept if r.config is not None}
    runs["ceiling"] = functools.partial(run_ceiling, wl, top)
    amp["ceiling"] = top.config.amp
    missing: dict[str, str] = {}
    for key in PEERS:
        if importlib.util.find_spec(key) is None:  # a peer is a comparison, not a requirement
            missing[key] = f"not installed: {_PEER_INSTALL[key]}"
            notice_once(f"peer-{key}", f"{key} is not installed, so its peers are skipped: "
                        f"{_PEER_INSTALL[key]}")  # fmt: skip
            continue
        runs[LOOPS[key]] = functools.partial(LOOP_RUNS[key], wl, top)
        runs[PEERS[key]] = functools.partial(PEER_RUNS[key], wl, top)
        loop_amp = top.config.amp if key == "lightning" or top.config.amp == "bf16" else "off"
        amp[LOOPS[key]] = loop_amp
        amp[PEERS[key]] = _peer_amp(wl, key)
    records: dict[str, list[RunStats]] = {name: [] for name in runs}

    def one_round(batches: int) -> None:  # as the timed rounds run them: memory sampled too
        for run in runs.values():
            with PeakMemory(wl.device):
                run(batches)
            gc.collect()

    log(f"final rounds: {len(runs)} whole runs per round")
    sizing = size_rounds(one_round, budget=plan.share("final rounds"), rounds=ROUNDS,
                         largest=wl.largest)  # fmt: skip
    k = sizing.size
    log(f"final rounds: {sizing.note}; {wl.usage(k)}")

    def recorded(name: str, run: Callable[[int], RunStats]) -> Callable[[], None]:
        def call() -> None:
            with PeakMemory(wl.device) as mem:
                stats = run(k)
            records[name].append(replace(stats, peak_memory_mib=mem.mib))
            gc.collect()  # Lightning's reference cycles hold loaders (and workers) otherwise
            counts = {len(v) for v in records.values()}
            if len(counts) == 1:  # every entry ran once more: a round is complete
                log(f"round {counts.pop()}: " + ", ".join(
                    f"{n} {v[-1].samples / v[-1].seconds:.0f}/s" for n, v in records.items()
                ))  # fmt: skip

        return call

    gc.collect()
    gc.freeze()  # older objects out of the collector's way: gc.collect() above stays cheap
    try:
        sweep = compare_many(
            {name: recorded(name, run) for name, run in runs.items()},
            reference="baseline",
            device=wl.device,
            min_effect=s.min_effect,
            confidence=s.confidence,
            max_seconds=max(1e-3, plan.given["final rounds"] - sizing.spent),
            warmup=0,
            max_rounds=s.max_rounds,
            number=1,  # one run per timed block: the records line up with the rounds
        )
    finally:
        gc.unfreeze()
    return sweep, {n: v[-sweep.rounds :] for n, v in records.items()}, missing, sizing, amp


def machine_limits(wl: Workload, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """The model's FLOPs per sample and this device's measured matmul peak per precision.

    What *model FLOP utilisation* (MFU) divides by: the peak matrix throughput this process
    reaches here, in this run (:func:`d2lopt.lab.mfu.matmul_peak`, mamf-finder's idea), not a
    datasheet figure. About 1 % of the budget per precision, at most 2 s.
    """
    batch = wl.sample_batch
    flops = {"train": flops_per_sample(wl.net, batch, train=True),
             "forward": flops_per_sample(wl.net, batch, train=False)}  # fmt: skip
    amps = {"off", _amp_candidate(wl.device)}
    if importlib.util.find_spec("lightning") is not None:
        amps.add(_peer_amp(wl, "lightning"))
    sizes = (1024, 2048, 4096, 8192) if wl.device.type == "cuda" else (256, 512, 1024, 2048)
    seconds = min(2.0, max(0.5, 0.01 * plan.budget))
    peaks = {}
    for amp in sorted(amps):
        peak = matmul_peak(wl.device, precision_dtype(amp), seconds=seconds, sizes=sizes)
        peaks[amp] = peak
        log(f"matmul peak, {peak['dtype']}: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s "
            f"(n={peak['size']})")  # fmt: skip
    log(f"the model: {flops['train']:.3g} FLOP a training sample "
        f"(forward {flops['forward']:.3g})")  # fmt: skip
    return {"flops_per_sample": flops, "peaks": peaks}


def _row(
    name: str, sweep: Sweep, recs: list[RunStats], amp: str, machine: dict[str, Any]
) -> dict[str, Any]:
    med = statistics.median
    memory = [r.peak_memory_mib for r in recs if r.peak_memory_mib is not None]
    seconds = [r.seconds for r in recs]
    parts = [r.breakdown() for r in recs]
    breakdown_s = {
        key: (None if any(p[key] is None for p in parts) else med(p[key] for p in parts))
        for key in parts[0]
    }
    run_s = med(seconds)
    samples_per_s = recs[-1].samples / sweep.median(name)
    peak = machine["peaks"][amp]["flops_per_s"]
    row: dict[str, Any] = {
        "samples_per_s": samples_per_s,
        "steady_samples_per_s": med(r.steady_samples_per_s for r in recs),
        "fixed_s": med(r.fixed for r in recs),
        "startup_s": med(r.startup for r in recs),
        "first_step_s": med(r.first_step for r in recs),
        "stall_fraction": med(r.stall_fraction for r in recs),
        "peak_memory_mib": max(memory) if memory else None,
        "seconds": list(sweep.seconds[name]),
        "precision": amp,
        "mfu": utilisation(machine["flops_per_sample"]["train"], samples_per_s, peak),
        "breakdown_s": breakdown_s,
        "breakdown": {k: (None if v is None else v / run_s) for k, v in breakdown_s.items()},
        "host_syncs_per_run": med(r.sync_calls for r in recs),
    }
    if name == sweep.reference:
        row |= {"speedup": 1.0, "speedup_ci": [1.0, 1.0], "vs_baseline": None}
    else:
        c = sweep.comparisons[name]
        row |= {"speedup": c.speedup, "speedup_ci": list(c.ci), "vs_baseline": c.to_dict()}
    if name == "ceiling":
        row |= {"fraction_of_ceiling": 1.0, "fraction_ci": [1.0, 1.0]}
    else:
        f = pair(sweep, name, "ceiling")  # entry time / ceiling time
        row |= {
            "fraction_of_ceiling": 1 / f["ratio"],
            "fraction_ci": [1 / f["ci"][1], 1 / f["ci"][0]],
        }
    return row


def describe_hardware(device: torch.device) -> dict[str, Any]:
    from ..devices import accelerator_name
    from ..envinfo import environment_report

    rep = environment_report()
    cpu = accelerator_name("cpu")
    with contextlib.suppress(OSError):  # the CPU's marketing name, for the results' folder
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    name = cpu if device.type == "cpu" else accelerator_name(device)
    keys = ("python", "platform", "torch", "torchvision", "cpu_cores", "torch_threads",
            "memory_gib", "cpu_bf16_units", "cuda_version", "gpus", "mps_available")  # fmt: skip
    isa = torch.backends.cpu.get_cpu_capability()  # what ATen's kernels use (ATEN_CPU_CAPABILITY)
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        isa += f", oneDNN capped at {os.environ['ONEDNN_MAX_CPU_ISA']}"
    return {"name": name, "cpu_model": cpu, "cpu_capability": isa} | {k: rep[k] for k in keys}


def _isa_caps(device: torch.device) -> str:
    """`` (ATEN_CPU_CAPABILITY=avx2, ...)`` when the CPU's kernels were capped, as the course
    does to compute like a common AVX2 laptop; the results' device then says so."""
    caps = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
            if os.environ.get(k)]  # fmt: skip
    return f" ({', '.join(caps)})" if caps and device.type == "cpu" else ""


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("d2lopt", "torch", "d2l", "lightning"):
        try:
            out[pkg] = torch.__version__ if pkg == "torch" else version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def json_safe(obj: Any) -> Any:
    """NaN (an interval that needs more rounds) as null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def _rung_row(r: Rung, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One rung of ``ladder.json``: how it was decided, and its final rounds when kept."""
    return {
        "name": r.name,
        "adds": r.adds,
        "status": r.status,
        "reason": r.reason,
        "loop": r.loop if r.config is not None else None,
        "loader": r.loader or None,
        "config": r.config.to_dict() if r.config is not None else None,
        "decision": r.decision,
    } | rows.get(r.name, {"samples_per_s": None, "speedup": None})


def _against_best(
    labels: dict[str, str], rows: dict[str, dict[str, Any]], missing: dict[str, str],
    sweep: Sweep, top: Rung, how: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Each peer (or loop) against the best rung (``vs_best``: peer time / best time), or
    why it was skipped."""
    out: dict[str, Any] = {}
    for key, label in labels.items():
        if label in rows:
            vs = pair(sweep, label, top.name)
            out[key] = {"name": label, "status": MEASURED, "how": how[key], "vs_best": vs}
            out[key] |= rows[label]
        else:
            out[key] = {"name": label, "status": SKIPPED, "how": how[key], "reason": missing[key]}
    return out


def _how_peers_ran(wl: Workload, top: Rung) -> tuple[dict[str, str], dict[str, str]]:
    """One line per peer: how it was fed and run (the loop-overhead ones, as the best rung)."""
    assert top.config is not None
    best = f"the best rung's loader ({loader_label(top.loader, top.config)}), batch, precision"
    loops = {"d2l": f"train_ch6's loop, {best}", "lightning": f"Trainer.fit, {best}"}
    people: dict[str, str] = {"d2l": "train_ch6 as its book runs it: load_data_fashion_mnist's "
                              "loaders (num_workers=d2l.get_dataloader_workers()), its init, fp32, "
                              "test accuracy every epoch"}  # fmt: skip
    people["lightning"] = "Trainer defaults (validation every epoch, sanity steps, checkpoints)"
    if importlib.util.find_spec("lightning") is not None:
        g = lightning_guide(wl.device)
        people["lightning"] += (f", precision={g['precision']!r}, num_workers="
                                f"{g['num_workers']}, pin_memory={g['pin_memory']}, as its speed "
                                "guide says")  # fmt: skip
    return loops, people


def report(
    wl: Workload,
    rungs: list[Rung],
    loader_sweep: list[dict[str, Any]],
    final: tuple[Sweep, dict[str, list[RunStats]], dict[str, str], Sizing, dict[str, str]],
    machine: dict[str, Any],
    hardware: dict[str, Any],
) -> dict[str, Any]:
    """The ``ladder.json`` content, less its targets, load average and elapsed time."""
    s = wl.s
    sweep, records, missing, sizing, amp = final
    rows = {name: _row(name, sweep, recs, amp[name], machine) for name, recs in records.items()}

    top = [r for r in rungs if r.status == KEPT][-1]
    rung_rows = [_rung_row(r, rows) for r in rungs]
    loops_how, peers_how = _how_peers_ran(wl, top)
    best = rows[top.name]
    result: dict[str, Any] = {
        "schema": 3,
        "device": f"{wl.device}: {hardware['name']}"
        + (f", {hardware['cpu_cores']} cores" if wl.device.type == "cpu" else "")
        + _isa_caps(wl.device),
        "device_type": wl.device.type,
        "hardware": hardware,
        "versions": _versions(),
        "workload": f"{wl.description}; {wl.model_name}",
        "data": {
            "available": list(wl.available),
            "capped": [len(wl.train_set), len(wl.test_set)],
            "final_rounds": wl.usage(sizing.size),
        },  # fmt: skip
        "settings": asdict(s),
        "memory_kind": "CUDA allocator peak"
        if wl.device.type == "cuda"
        else "peak PSS of the process and its loader workers (host memory, psutil)",
        "machine": machine,
        "rungs": rung_rows,
        "ceiling": rows["ceiling"]
        | {"config": top.config.to_dict(), "loop": top.loop, "loader": top.loader},
        "peers": _against_best(PEERS, rows, missing, sweep, top, peers_how),
        "loop_overhead": _against_best(LOOPS, rows, missing, sweep, top, loops_how),
        "best": {"name": top.name}
        | {
            k: best[k]
            for k in (
                "samples_per_s",
                "speedup",
                "speedup_ci",
                "fraction_of_ceiling",
                "fraction_ci",
                "stall_fraction",
                "fixed_s",
                "steady_samples_per_s",
                "mfu",
                "breakdown",
            )
        },  # fmt: skip
        "loader_sweep": loader_sweep,  # LoaderRun.to_dict() rows, as tune-loader's
        "final_rounds": sweep.rounds,
        "final_sizing": sizing.to_dict(),
        "final_looks": sweep.looks,  # the intervals of the final rounds are split over these
        "final_share": sweep.share,  # and spend this many looks' share of the error
    }
    return result


# LadderSettings fields -> the flag of d2lopt ladder that sets them (d2lopt.cli.ladder.FLAGS)
_SIZE_FLAGS = {"n_train": "--n-train", "n_test": "--n-test", "image_size": "--image-size",
               "batch_size": "--batch-size", "epochs": "--epochs", "max_rounds": "--rounds",
               "budget_seconds": "--budget"}  # fmt: skip


def reproduce_command(result: dict[str, Any]) -> str:
    """The ``d2lopt ladder`` command that measures this workload again, every flag included.

    The learner's ``--dataset``/``--model``, ``--compile``, ``--seed`` and ``--device``
    always; a size or budget only where it differs from the preset for ``--quick`` and this
    device kind (the preset scales them to the hardware).
    """
    import shlex

    s = result["settings"]
    words = ["d2lopt", "ladder"] + (["--quick"] if s.get("quick") else [])
    if s.get("device", "auto") != "auto":
        words += ["--device", s["device"]]
    if s.get("compile"):
        words.append("--compile")
    for key in ("dataset", "model", "data_dir"):
        if s.get(key):
            words += [f"--{key.replace('_', '-')}", str(s[key])]
    if s.get("seed"):
        words += ["--seed", str(s["seed"])]
    kind = "cpu" if str(result.get("device", "cpu")).startswith("cpu") else "gpu"
    preset = {f.name: f.default for f in fields(LadderSettings)}
    preset |= dict(zip(_PRESET_FIELDS, _PRESETS[kind, bool(s.get("quick"))], strict=True))
    for key, flag in _SIZE_FLAGS.items():
        if key in s and s[key] != preset[key]:
            words += [flag, f"{s[key]:g}" if isinstance(s[key], float) else str(s[key])]
    return shlex.join([*words, "--out", "DIR"])
