"""Loader measurements: one result type (:class:`LoaderRun`) and one sweep, on ``compare``.

Taught in ``05_disk_to_memory``; ``d2lopt tune-loader``, the ladder and notebooks 03, 06,
07 and 12 measure loaders with the same code, so they cannot disagree by construction.

One *pass* is what a training run pays for its data: build the loader (a fresh, seeded,
shuffled one), iterate ``epochs`` epochs (a new iterator per epoch: non-persistent workers
restart there), copy each batch to the device and hand it to ``step``. Inside a pass we
record the **start-up** (seconds to the first batch: worker processes, the first reads)
apart from the **wait** (seconds spent inside ``next()`` in total, the time a GPU would sit
idle), so a reader sees whether a setting pays at start-up or in the steady state.

Settings are compared with :func:`d2lopt.measure.compare_many`: paired rounds in rotating
order, an interval against the reference setting, *inconclusive* when noise could decide.
"""

from __future__ import annotations

import inspect
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..devices import as_device, synchronize
from ..errors import check_int
from ..measure import Comparison, Sweep, compare_many, setting_label
from .loading import build_loader, consume

__all__ = [
    "LoaderRun",
    "LoaderSweep",
    "PassStats",
    "measure_loader",
    "measure_loaders",
    "run_pass",
    "sweep_loaders",
]

Step = Callable[[torch.Tensor, Any], Any]


@dataclass(frozen=True)
class PassStats:
    """What one pass over a loader cost."""

    samples: int
    seconds: float  # the whole pass, building the loader included
    startup: float  # seconds until the first batch arrived
    waited: float  # seconds spent inside next(), start-up included


def run_pass(
    make_loader: Callable[[], Iterable],
    *,
    epochs: int = 1,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    step: Step | None = None,
) -> PassStats:
    """Build a loader with ``make_loader()`` and run ``epochs`` epochs through it.

    ``max_batches`` caps each epoch; ``device`` receives each batch (``non_blocking`` as
    given: it only overlaps a copy that starts from pinned memory) and is synchronized at
    the end, so queued device work is counted.
    """
    dev = as_device(device) if device is not None else None
    startup: list[float] = []

    def on_device(X: torch.Tensor, y: Any) -> None:
        X = X.to(dev, non_blocking=non_blocking)  # overlaps only when X is in pinned memory
        if step is not None:
            step(X, y)

    start = time.perf_counter()
    loader = make_loader()
    samples = 0
    waited = 0.0
    for _ in range(epochs):  # consume() makes a new iterator: non-persistent workers restart
        n, w = consume(
            loader,
            on_device if dev is not None else step,
            max_batches=max_batches,
            on_first_batch=None if startup else lambda: startup.append(time.perf_counter() - start),
        )
        samples, waited = samples + n, waited + w
    del loader  # persistent workers exit with their loader, inside the pass, as in a run
    if dev is not None:
        synchronize(dev)
    elapsed = time.perf_counter() - start
    return PassStats(samples, elapsed, startup[0] if startup else elapsed, waited)


@dataclass(frozen=True)
class LoaderRun:
    """One measured loader setting.

    Attributes:
        label: e.g. ``"num_workers=2, prefetch_factor=4"``.
        settings: the ``build_loader`` arguments that differ between the settings.
        samples: samples per pass.
        seconds: seconds of each measured pass.
        startup: median seconds to the first batch (worker start-up, first reads).
        wait_fraction: median share of a pass spent waiting for batches.
        vs_reference: the interval against the sweep's reference (None for the reference
            itself and for single measurements).
    """

    label: str
    settings: dict[str, Any]
    samples: int
    seconds: tuple[float, ...] = field(repr=False)
    startup: float = math.nan
    wait_fraction: float = math.nan
    vs_reference: Comparison | None = field(default=None, repr=False)

    @property
    def samples_per_s(self) -> float:
        """Samples per second of a whole pass (median pass time, start-up included)."""
        return self.samples / statistics.median(self.seconds)

    def row(self) -> dict[str, Any]:
        """A flat record (settings + results) for tables and plots."""
        c = self.vs_reference
        return self.settings | {
            "label": self.label,
            "samples_per_s": self.samples_per_s,
            "startup_s": self.startup,
            "wait_fraction": self.wait_fraction,
            "rounds": len(self.seconds),
            "vs_reference": "reference" if c is None else str(c),
            "verdict": "" if c is None else c.verdict,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "settings": self.settings,
            "samples": self.samples,
            "seconds": list(self.seconds),
            "startup": self.startup,
            "wait_fraction": self.wait_fraction,
            "samples_per_s": self.samples_per_s,
            "vs_reference": None if self.vs_reference is None else self.vs_reference.to_dict(),
        }


@dataclass(frozen=True)
class LoaderSweep:
    """Every setting of a sweep, measured in the same paired rounds."""

    reference: str
    runs: dict[str, LoaderRun]
    sweep: Sweep = field(repr=False)

    def best(self) -> LoaderRun:
        """The setting that beats the reference with an interval above ``1 + min_effect``;
        the reference itself when none does (a gain noise could explain is no gain)."""
        return self.runs[self.sweep.best()]

    def table(self) -> str:
        """Markdown: samples/s, start-up, wait share and the interval against the reference."""
        rows = [
            f"| setting | samples/s | start-up | waiting | vs {self.reference} | verdict |",
            "|---|---:|---:|---:|---|---|",
        ]
        for name, run in self.runs.items():
            c = run.vs_reference
            rows.append(
                f"| {name} | {run.samples_per_s:,.0f} | {run.startup * 1e3:.0f} ms "
                f"| {run.wait_fraction:.0%} | {'reference' if c is None else c} "
                f"| {'' if c is None else f'**{c.verdict}**'} |"
            )
        return "\n".join(rows)


def _check_passes(epochs: int, max_batches: int | None) -> None:
    check_int("epochs", epochs, 1)  # passes per measurement
    if max_batches is not None:  # None: all
        check_int("max_batches", max_batches, 1)


def measure_loaders(
    loaders: Mapping[str, Callable[[], Iterable]],
    *,
    reference: str,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    epochs: int = 1,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    non_blocking: bool | Mapping[str, bool] = False,
    step: Step | Mapping[str, Step] | None = None,
    max_seconds: float = 30.0,
    warmup: int = 1,
    min_effect: float = 0.05,
    confidence: float = 0.95,
    max_rounds: int = 200,
) -> LoaderSweep:
    """Compare loaders in paired rounds; each value of ``loaders`` builds a fresh loader.

    A round runs one pass (see :func:`run_pass`) of every loader in a rotating order, so a
    burst of load hits all of them alike. Each non-reference setting gets a
    :class:`~d2lopt.measure.Comparison` against ``reference``. ``step`` and
    ``non_blocking`` may be one value for every loader or a mapping by loader name, when
    the settings differ in how a batch is copied and trained (the ladder's pinned rung).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> ds = TensorDataset(torch.zeros(64, 3))
        >>> s = measure_loaders({"b8": lambda: DataLoader(ds, batch_size=8),
        ...                      "b32": lambda: DataLoader(ds, batch_size=32)},
        ...                     reference="b8", max_seconds=1)
        >>> s.runs["b32"].samples
        64
    """
    _check_passes(epochs, max_batches)
    stats: dict[str, list[PassStats]] = {name: [] for name in loaders}

    def pass_options(name: str) -> dict[str, Any]:
        nb = non_blocking[name] if isinstance(non_blocking, Mapping) else non_blocking
        st = step[name] if isinstance(step, Mapping) else step
        return dict(epochs=epochs, max_batches=max_batches, device=device, non_blocking=nb,
                    step=st)  # fmt: skip

    def timed(name: str) -> Callable[[], None]:
        make = loaders[name]
        if not callable(make):
            raise TypeError(
                f"loaders[{name!r}]: must build a loader when called, got {type(make).__name__}; "
                "pass lambda: DataLoader(...)"
            )

        options = pass_options(name)

        def one_pass() -> None:
            stats[name].append(run_pass(make, **options))

        return one_pass

    sweep = compare_many(
        {name: timed(name) for name in loaders},
        reference=reference,
        device=device,
        min_effect=min_effect,
        confidence=confidence,
        max_seconds=max_seconds,
        warmup=warmup,
        max_rounds=max_rounds,
        number=1,  # one pass per timed block: the pass records line up with the rounds
    )
    runs = {
        name: _loader_run(
            name,
            dict((settings or {}).get(name, {})),
            stats[name][-sweep.rounds :],  # warm-up passes come first
            sweep.seconds[name],
            sweep.comparisons.get(name),
        )
        for name in loaders
    }
    return LoaderSweep(reference, runs, sweep)


def sweep_loaders(
    dataset: Any,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    reference: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    **kwargs: Any,
) -> LoaderSweep:
    """Measure ``build_loader(dataset, ...)`` for every setting of ``grid``.

    ``grid`` is either ``{"num_workers": [0, 1, 2]}`` (every combination) or a list of
    setting dicts. Every loader shuffles with the same seeded generator, so every setting
    sees the same sample order. ``reference`` (default: the first setting) is what the
    others are compared with; ``kwargs`` go to :func:`measure_loaders` (``epochs``,
    ``max_batches``, ``step``, ``device``, ``max_seconds``, ...) or, when they are
    ``build_loader`` arguments (``pin_memory``), to every loader.

    Example: ``sweep_loaders(ds, {"num_workers": [0, 1, 2]}, epochs=2)``.
    """
    if isinstance(grid, Mapping):
        if not grid:
            raise ValueError("grid: give at least one build_loader argument and its values")
        names = list(grid)
        settings = [dict(zip(names, v, strict=True)) for v in itertools.product(*grid.values())]
    else:
        settings = [dict(s) for s in grid]
        if not settings:
            raise ValueError("grid: give at least one setting to measure")
    loader_params = set(inspect.signature(build_loader).parameters) - {"dataset"}
    fixed = {"batch_size": batch_size, "seed": seed, "shuffle": True}
    fixed |= {k: kwargs.pop(k) for k in list(kwargs) if k in loader_params}
    if reference is not None and dict(reference) not in settings:
        settings.insert(0, dict(reference))
    ref = setting_label(dict(reference) if reference is not None else settings[0])
    by_label = {setting_label(s): s for s in settings}

    def maker(s: Mapping[str, Any]) -> Callable[[], Iterable]:
        return lambda: build_loader(dataset, **(fixed | dict(s)))

    for s in settings:  # fail fast, naming the bad argument, before any measuring
        build_loader(dataset, **(fixed | s))
    return measure_loaders(
        {label: maker(s) for label, s in by_label.items()},
        reference=ref,
        settings=by_label,
        **kwargs,
    )


def measure_loader(
    loader: Iterable | Callable[[], Iterable],
    *,
    label: str = "",
    repeats: int = 3,
    warmup: int = 1,
    epochs: int = 1,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    step: Step | None = None,
) -> LoaderRun:
    """One loader on its own: median of ``repeats`` passes after ``warmup`` passes.

    For a number to report, not a verdict: to decide whether one loader beats another,
    measure both with :func:`measure_loaders`. ``loader`` may be a loader (re-iterated each
    pass) or a function that builds one (start-up then counts in every pass).
    """
    _check_passes(epochs, max_batches)
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    make = loader if callable(loader) and not hasattr(loader, "__iter__") else (lambda: loader)
    passes = [
        run_pass(
            make,
            epochs=epochs,
            max_batches=max_batches,
            device=device,
            non_blocking=non_blocking,
            step=step,
        )  # fmt: skip
        for _ in range(warmup + repeats)
    ][warmup:]
    return _loader_run(label, {}, passes, [p.seconds for p in passes], None)


def _loader_run(
    label: str,
    settings: dict[str, Any],
    passes: Sequence[PassStats],
    seconds: Sequence[float],
    vs_reference: Comparison | None,
) -> LoaderRun:
    """Summarize measured passes: medians of start-up and of the share spent waiting."""
    return LoaderRun(
        label=label,
        settings=settings,
        samples=passes[-1].samples,
        seconds=tuple(seconds),
        startup=statistics.median(p.startup for p in passes),
        wait_fraction=statistics.median(p.waited / p.seconds for p in passes),
        vs_reference=vs_reference,
    )
