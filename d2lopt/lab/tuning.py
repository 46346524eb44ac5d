"""Find the DataLoader settings that feed *your* data set fastest here (``d2lopt tune-loader``).

Taught in ``12_putting_it_together`` (its sweep is the worker rung of ``d2lopt ladder``;
what each setting costs in memory, :func:`loader_memory`, in ``14_memory``);
the knobs themselves are the lessons of ``05_disk_to_memory`` and ``07_cpu_to_gpu``. The
article gives rules of thumb (workers: half the cores; prefetch: "more until it plateaus");
this module measures them on one machine and one data set with
:func:`d2lopt.lab.bench.sweep_loaders`, the code the ladder measures loaders with: every setting
gets a fresh, seeded, shuffled loader per pass (worker start-up is part of the pass and
reported apart), all settings run in the same paired rounds, and each gets an interval
against PyTorch's default (``num_workers=0``). A setting is "better" only when its whole
interval lies above ``1 + min_effect``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from ..data import check_map_style
from ..errors import ParamError, check_int
from ..measure import setting_label
from ..memory import worker_memory
from .bench import LoaderRun, LoaderSweep, measure_loader, sweep_loaders
from .loading import build_loader
from .specs import call_factory, check_sample, resolve

__all__ = [
    "DEFAULT",
    "default_workers",
    "sweep_grid",
    "tune_loader",
    "load_dataset",
    "dataset_from_flag",
    "standard_dataset",
    "plot_heatmap",
    "LoaderMemory",
    "loader_memory",
]

DEFAULT: dict[str, Any] = {"num_workers": 0}  # PyTorch's defaults: the reference setting


def default_workers(cores: int | None = None) -> list[int]:
    """0, 1, 2, 4, ... up to the usable cores: past them workers only contend (C8)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
    counts, n = [0], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def sweep_grid(
    workers: Sequence[int],
    prefetch: Sequence[int] = (2, 4),
    persistent: Sequence[bool] = (False, True),
    pin: Sequence[bool] = (False,),
) -> list[dict[str, Any]]:
    """Every valid combination as ``build_loader`` arguments; with 0 workers only ``pin``
    varies (prefetching and persistence need workers).

    Example:
        >>> sweep_grid([0, 1], prefetch=[2], persistent=[True])
        [{'num_workers': 0}, {'num_workers': 1, 'prefetch_factor': 2, 'persistent_workers': True}]
    """
    for name, values in (
        ("workers", workers),
        ("prefetch", prefetch),
        ("persistent", persistent),
        ("pin", pin),
    ):
        if not values:
            raise ValueError(f"{name}: give at least one value to sweep")
    for w in workers:
        check_int("workers", w, 0)
    for p in prefetch:
        check_int("prefetch", p, 1)
    grid: list[dict[str, Any]] = []
    for pin_memory in dict.fromkeys(pin):
        pinned = {"pin_memory": True} if pin_memory else {}
        for w in sorted(set(workers)):
            if w == 0:
                grid.append({"num_workers": 0} | pinned)
                continue
            for p in sorted(set(prefetch)):
                for keep in dict.fromkeys(persistent):
                    grid.append(
                        {"num_workers": w, "prefetch_factor": p, "persistent_workers": keep}
                        | pinned
                    )
    return grid


def fit_batches(
    dataset: Dataset, n_settings: int, *, batch_size: int, epochs: int, max_seconds: float,
    rounds: int = 8,
) -> int:  # fmt: skip
    """Batches per epoch so that ``rounds`` paired rounds (+ a warm-up) fit the budget.

    Timed on a few batches of the default loader; workers cost start-up on top, so this
    errs on the short side. At least 2 batches, at most the whole data set.
    """
    loader = build_loader(dataset, batch_size=batch_size, shuffle=True)
    total, probe = len(loader), min(len(loader), 4)
    start = time.perf_counter()
    for i, _ in enumerate(loader):
        if i + 1 >= probe:
            break
    per_batch = (time.perf_counter() - start) / probe
    fit = max_seconds / ((rounds + 1) * n_settings * epochs * max(per_batch, 1e-6))
    return max(2, min(total, int(fit)))


def tune_loader(
    dataset: Dataset,
    grid: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
    epochs: int = 2,
    max_batches: int | None = None,
    device: torch.device | str | None = "cpu",
    max_seconds: float = 60.0,
    max_rounds: int = 200,
    seed: int = 0,
    progress: bool | None = None,
    step: Callable[[torch.Tensor, Any], Any] | None = None,
) -> LoaderSweep:
    """Every setting of ``grid`` against the first (PyTorch's default), in paired rounds.

    :func:`d2lopt.lab.bench.sweep_loaders` with a progress bar over the time budget (its
    ETA is the budget's remainder: the sweep stops earlier once every interval is decided
    and narrow). ``step`` trains on each batch, as the ladder's worker rung does; without it
    the loader is measured alone.
    """
    from tqdm.auto import tqdm

    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "dataset: an IterableDataset yields its whole stream from every worker unless it "
            "shards itself, so per-setting speeds are not comparable; pass a map-style Dataset"
        )
    if not grid:
        raise ValueError("grid: nothing to sweep; pass sweep_grid(...)")
    bar = tqdm(
        total=round(max_seconds),
        unit="s",
        desc="tune-loader",
        disable=None if progress is None else not progress,  # None: a bar on a terminal only
        ncols=min(100, shutil.get_terminal_size().columns),  # 80 where the size is unknown
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of the budget "
        "[{elapsed}<{remaining}]",
    )
    start, last = time.perf_counter(), [0.0]

    def tick(X: torch.Tensor, y: Any) -> None:
        if step is not None:
            step(X, y)
        now = time.perf_counter()
        if now - last[0] > 0.25:  # a redraw costs a terminal write: four a second at most
            last[0] = now
            bar.n = min(round(now - start), bar.total)
            bar.refresh()

    args = dict(batch_size=batch_size, seed=seed, epochs=epochs, max_batches=max_batches,
                device=device, step=tick)  # fmt: skip
    try:
        if len(grid) == 1:  # nothing to compare with: one number, no verdict
            (setting,) = grid
            run = measure_loader(
                lambda: build_loader(dataset, shuffle=True, batch_size=batch_size, seed=seed,
                                     **setting),  # fmt: skip
                label=setting_label(setting), epochs=epochs, max_batches=max_batches,
                device=device, step=tick,
            )  # fmt: skip
            run = LoaderRun(**{**run.__dict__, "settings": dict(setting)})
            return LoaderSweep(run.label, {run.label: run}, None)  # type: ignore[arg-type]
        return sweep_loaders(
            dataset, list(grid), max_seconds=max_seconds, max_rounds=max_rounds, **args
        )
    finally:
        bar.n = min(round(time.perf_counter() - start), bar.total)
        bar.close()


def load_dataset(spec: str, *, from_cwd: bool = False) -> Dataset:
    """Import ``module:attr``: a Dataset instance, or a zero-argument factory returning one.

    ``attr`` may be dotted (``pkg.data:Sets.train``); resolved by ``pkgutil.resolve_name``,
    the standard library's reading of entry-point-style names. The caller decides
    ``sys.path`` (:func:`dataset_from_flag` adds the current folder, as ``python -m`` does).

    Raises:
        ParamError (a ValueError) naming ``dataset``: malformed spec, module or attribute
            missing, or the factory failed; a ParamTypeError (also a TypeError): the object
            is not a map-style data set.
    """
    obj = resolve(spec, "dataset", from_cwd=from_cwd)
    if not isinstance(obj, Dataset) and callable(obj):
        obj = call_factory(obj, spec, "dataset")
    check_map_style(obj, "dataset", what=f"{spec}: tune-loader")
    check_sample(obj, spec, "dataset", labels=False)  # (x, y) items: said here, not mid-sweep
    return obj


def plot_heatmap(results: LoaderSweep | Iterable[LoaderRun | dict], ax: Any = None) -> Any:
    """Samples/s as a heatmap: columns are ``num_workers``, rows the other knobs.

    ``results`` is a sweep, its runs, or their ``to_dict()`` rows (``tune-loader.json``'s
    ``results``, ``ladder.json``'s ``loader_sweep``). A setting whose interval against the
    default *holds* is marked with a star.
    """
    import numpy as np

    runs = list(results.runs.values()) if isinstance(results, LoaderSweep) else list(results)
    cells = []  # (settings, samples/s, holds) from a LoaderRun or its to_dict() row
    for r in runs:
        if isinstance(r, dict):
            vs = r.get("vs_reference") or {}
            cells.append((r["settings"], r["samples_per_s"], vs.get("verdict") == "holds"))
        else:
            vs = r.vs_reference
            cells.append((r.settings, r.samples_per_s, vs is not None and vs.verdict == "holds"))
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: works headless, in any backend

        ax = Figure(figsize=(7, 3.5), layout="constrained").subplots()

    def knobs(s: dict[str, Any]) -> tuple[int, bool, bool]:
        return (s.get("prefetch_factor") or 2, bool(s.get("persistent_workers")),
                bool(s.get("pin_memory")))  # fmt: skip

    workers = sorted({s.get("num_workers", 0) for s, _, _ in cells})
    combos = sorted({knobs(s) for s, _, _ in cells if s.get("num_workers", 0)}) or [
        (2, False, False)
    ]
    grid = np.full((len(combos), len(workers)), np.nan)
    marks = np.zeros(grid.shape, dtype=bool)
    for s, samples_per_s, holds in cells:
        col = workers.index(s.get("num_workers", 0))
        if s.get("num_workers", 0):
            row = combos.index(knobs(s))
        else:  # without workers only pin applies: show it on the first row with that pin
            row = ([i for i, c in enumerate(combos) if c[2] == knobs(s)[2]] or [0])[0]
        grid[row, col], marks[row, col] = samples_per_s, holds
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="lightgray")  # n/a cells in grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    low, high = np.nanmin(grid), np.nanmax(grid)
    for (i, j), v in np.ndenumerate(grid):
        text = "n/a" if math.isnan(v) else f"{v:.0f}" + ("*" if marks[i, j] else "")
        dark = not math.isnan(v) and v < low + 0.5 * (high - low)
        color = "white" if dark else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(len(workers)), [str(w) for w in workers])
    labels = [
        f"prefetch={p}{' persistent' if k else ''}{' pin' if m else ''}" for p, k, m in combos
    ]
    ax.set_yticks(range(len(combos)), labels)
    ax.set_xlabel("num_workers")
    ax.set_title("loader throughput (samples/s; *: faster than workers=0, interval above 1.05)")
    ax.figure.colorbar(image, ax=ax, label="samples/s")
    return ax


def dataset_from_flag(spec: str) -> Dataset:
    """:func:`load_dataset` for ``--dataset``: the current folder's modules are importable."""
    return load_dataset(spec, from_cwd=True)  # a bad spec: ParamError, named --dataset


def standard_dataset(
    n: int, size: int, *, train: bool = True, root: str | os.PathLike | None = None
) -> Dataset:
    """The course's standard on-disk data set: ``n`` JPEGs, decoded and augmented per sample.

    Written once by :func:`d2lopt.data.write_image_folder` under ``root`` (default: the data
    cache) and reused; read like :func:`d2lopt.data.image_folder`. Labels always follow
    ``FASHION_MNIST_CLASSES``, so a small split whose images miss a class (no folder for it)
    keeps the same class indices as the full training split.
    """
    if size < 8:
        raise ParamError("size", f"must be >= 8, got {size}")
    from torchvision.datasets import ImageFolder

    from ..data import FASHION_MNIST_CLASSES, data_root, image_transform, write_image_folder

    base = Path(root) if root is not None else data_root() / "ladder"
    folder = write_image_folder(
        base / f"{'train' if train else 'test'}-{n}-{size}", n, size=size, train=train
    )
    ds = ImageFolder(str(folder), transform=image_transform(train, size), allow_empty=True)
    names = list(FASHION_MNIST_CLASSES)
    fixed = {ds.class_to_idx[c]: names.index(c) for c in ds.classes}  # alphabetical -> fixed
    ds.samples = ds.imgs = [(path, fixed[t]) for path, t in ds.samples]
    ds.targets = [t for _, t in ds.samples]
    ds.classes, ds.class_to_idx = names, {c: i for i, c in enumerate(names)}
    return ds


@dataclass(frozen=True)
class LoaderMemory:
    """What one loader setting costs in memory (``d2lopt tune-loader``'s memory table).

    Attributes:
        label: the setting, as in the speed table.
        workers: worker processes sampled.
        uss, pss: the workers' summed unique / proportional set size after the pass, in
            bytes (psutil; see :func:`d2lopt.memory.worker_memory`). USS is what the
            workers alone hold (copy-on-read shows here); PSS adds their share of what they
            share with the main process.
        growth: the workers' summed USS growth over the pass: it keeps growing with the
            epoch when a data set's Python objects are copied on read (``14_memory``).
        prefetched: bytes of the batches the workers hold ready
            (``num_workers × prefetch_factor × batch bytes``).
        pinned: page-locked bytes the pinning thread can hold at most (every batch in
            flight, or one without workers); 0 without ``pin_memory``.
    """

    label: str
    workers: int
    uss: int
    pss: int
    growth: int
    prefetched: int
    pinned: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def loader_memory(
    dataset: Dataset,
    grid: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
    max_batches: int | None = None,
    seed: int = 0,
) -> dict[str, LoaderMemory]:
    """One untimed pass per setting with :func:`d2lopt.memory.worker_memory`, after the sweep.

    Memory is read in passes of its own, so reading ``/proc`` never slows a timed pass.
    ``persistent_workers`` changes when workers start, not what they hold: settings that
    differ only in it share one measurement.
    """
    measured: dict[tuple, LoaderMemory] = {}
    out: dict[str, LoaderMemory] = {}
    for setting in grid:
        key = tuple(sorted((k, v) for k, v in setting.items() if k != "persistent_workers"))
        if key not in measured:
            args = {k: v for k, v in setting.items() if k != "persistent_workers"}
            loader = build_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed, **args)
            usage = worker_memory(loader, every=4, max_batches=max_batches)
            workers = setting.get("num_workers", 0)
            in_flight = workers * (setting.get("prefetch_factor") or 2)  # PyTorch's default: 2
            growth = usage.growth()
            measured[key] = LoaderMemory(
                label="",
                workers=len(usage.uss),
                uss=usage.total("uss"),
                pss=usage.total("pss"),
                growth=sum(growth.values()),
                prefetched=in_flight * usage.batch_bytes,
                pinned=max(in_flight, 1) * usage.batch_bytes if loader.pin_memory else 0,
            )
        out[setting_label(setting)] = replace(measured[key], label=setting_label(setting))
    return out
