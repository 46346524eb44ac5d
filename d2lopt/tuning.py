"""Find the DataLoader settings that feed *your* data set fastest here (``d2lopt tune-loader``).

Taught in ``12_putting_it_together`` (it is rung 2 of ``d2lopt ladder``); the knobs themselves
are the lessons of ``05_disk_to_memory`` and ``07_cpu_to_gpu``. The article gives rules of
thumb (workers: half the cores; prefetch: "more until it plateaus"); this module measures
them on one machine and one data set: every setting gets a fresh loader, worker start-up is
part of the time (that is what ``persistent_workers`` saves), settings are measured in
interleaved rounds so drift hits all alike, and the median is reported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .data import seed_worker
from .devices import resolve_device, synchronize

__all__ = [
    "DEFAULT",
    "LoaderSetting",
    "SweepResult",
    "default_workers",
    "sweep_grid",
    "sweep_loader",
    "best_of",
    "load_dataset",
    "standard_dataset",
    "plot_heatmap",
    "add_command",
]


@dataclass(frozen=True)
class LoaderSetting:
    """One combination of the four loader knobs (PyTorch's defaults when built empty)."""

    num_workers: int = 0
    prefetch_factor: int | None = None  # None: PyTorch's 2 with workers, unused without
    persistent_workers: bool = False
    pin_memory: bool = False

    def label(self) -> str:
        if self.num_workers == 0:
            text = "workers=0"
        else:
            text = f"workers={self.num_workers} prefetch={self.prefetch_factor or 2}"
            text += " persistent" if self.persistent_workers else ""
        return text + (" pin" if self.pin_memory else "")

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DataLoader`` (prefetch/persistent only with workers)."""
        workers = self.num_workers
        return {
            "num_workers": workers,
            "prefetch_factor": self.prefetch_factor if workers else None,
            "persistent_workers": self.persistent_workers and workers > 0,
            "pin_memory": self.pin_memory,  # page-locked batches: async host->GPU copies
            "worker_init_fn": seed_worker if workers else None,
        }


DEFAULT = LoaderSetting()


@dataclass
class SweepResult:
    """Samples/s of one setting: median over rounds, with every round's seconds."""

    setting: LoaderSetting
    samples_per_s: float
    seconds: list[float] = field(repr=False)
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.setting) | {
            "label": self.setting.label(),
            "samples_per_s": self.samples_per_s,
            "seconds": self.seconds,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SweepResult:
        """Inverse of :meth:`to_dict` (e.g. the ``loader_sweep`` rows of ``ladder.json``)."""
        setting = LoaderSetting(**{k: row[k] for k in LoaderSetting.__dataclass_fields__})
        return cls(setting, row["samples_per_s"], list(row["seconds"]), row["samples"])


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
) -> list[LoaderSetting]:
    """Every valid combination; with 0 workers only ``pin`` varies (the rest needs workers)."""
    for name, values in (
        ("workers", workers),
        ("prefetch", prefetch),
        ("persistent", persistent),
        ("pin", pin),
    ):
        if not values:
            raise ValueError(f"{name}: give at least one value to sweep")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in workers):
        raise ValueError(f"workers: must be ints >= 0, got {list(workers)}")
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in prefetch):
        raise ValueError(f"prefetch: must be ints >= 1, got {list(prefetch)}")
    grid: list[LoaderSetting] = []
    for pin_memory in dict.fromkeys(pin):
        for w in sorted(set(workers)):
            if w == 0:
                grid.append(LoaderSetting(0, None, False, pin_memory))
                continue
            for p in sorted(set(prefetch)):
                for keep in dict.fromkeys(persistent):
                    grid.append(LoaderSetting(w, p, keep, pin_memory))
    return grid


def _one_run(
    dataset: Dataset,
    setting: LoaderSetting,
    *,
    batch_size: int,
    epochs: int,
    max_batches: int | None,
    device: torch.device,
    consume: Callable[[torch.Tensor, torch.Tensor], Any] | None,
    seed: int,
) -> tuple[float, int]:
    """Seconds and samples of ``epochs`` passes through a fresh loader (start-up included)."""
    synchronize(device)
    start = time.perf_counter()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        **setting.loader_kwargs(),
    )
    samples = 0
    for _ in range(epochs):  # a new iter() per epoch: non-persistent workers restart here
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            X, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
            # non_blocking only pays off from pinned memory; a pageable copy is synchronous
            X = X.to(device, non_blocking=setting.pin_memory)
            if consume is not None:
                consume(X, y)
            samples += len(X)
    del loader  # persistent workers shut down here, inside the timed region, as in a real run
    synchronize(device)
    return time.perf_counter() - start, samples


def sweep_loader(
    dataset: Dataset,
    settings: Sequence[LoaderSetting],
    *,
    batch_size: int = 64,
    epochs: int = 2,
    max_batches: int | None = None,
    rounds: int = 3,
    device: torch.device | str | None = "cpu",
    consume: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[SweepResult]:
    """Samples/s of ``epochs`` passes over ``dataset`` for each setting, median of ``rounds``.

    Args:
        dataset: a map-style data set returning ``(X, y)`` (or ``X``) samples.
        settings: what to compare (see :func:`sweep_grid`).
        batch_size: samples per batch.
        epochs: passes per measurement; >= 2 lets ``persistent_workers`` show its effect.
        max_batches: stop each pass after this many batches (quick sweeps of big sets).
        rounds: measurements per setting, interleaved across settings (median reported).
        device: batches are copied here (``None``: not copied).
        consume: called with each batch, e.g. a training step, so the loader is tuned for
            the work it will overlap with rather than for an idle CPU.
        seed: shuffling seed (every setting sees the same order).
        log: receives one progress line per round.
    """
    if not settings:
        raise ValueError("settings: nothing to sweep; pass sweep_grid(...)")
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive int, got {value!r}")
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "dataset: an IterableDataset yields its whole stream from every worker unless it "
            "shards itself, so per-setting speeds are not comparable; pass a map-style Dataset"
        )
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    kwargs = dict(
        batch_size=batch_size,
        epochs=epochs,
        max_batches=max_batches,
        device=dev,
        consume=consume,
        seed=seed,
    )
    _one_run(dataset, DEFAULT, **kwargs | {"epochs": 1})  # warm-up: page cache, lazy imports
    times: dict[LoaderSetting, list[float]] = {s: [] for s in settings}
    counted: dict[LoaderSetting, int] = {}
    for r in range(rounds):
        order = list(settings)[r % len(settings) :] + list(settings)[: r % len(settings)]
        for s in order:  # rotated each round: no setting always runs first or last
            seconds, counted[s] = _one_run(dataset, s, **kwargs)
            times[s].append(seconds)
        if log is not None:
            log(f"loader sweep: round {r + 1}/{rounds} done ({len(settings)} settings)")
    return [
        SweepResult(s, counted[s] / statistics.median(t), t, counted[s]) for s, t in times.items()
    ]


def best_of(results: Sequence[SweepResult]) -> SweepResult:
    """The fastest setting; ties go to the simpler one (fewer workers, listed first)."""
    if not results:
        raise ValueError("results: empty; run sweep_loader first")
    return max(results, key=lambda r: (r.samples_per_s, -r.setting.num_workers))


def load_dataset(spec: str) -> Dataset:
    """Import ``module:attr``: a Dataset instance, or a zero-argument factory returning one.

    ``attr`` may be dotted (``pkg.data:Sets.train``). The caller decides ``sys.path`` (the
    CLI adds the current folder, as ``python -m`` does).

    Raises:
        ValueError: malformed spec, module or attribute missing, or the factory failed.
        TypeError: the object is not a map-style data set.
    """
    if not isinstance(spec, str):
        raise TypeError(f"dataset: expected 'module:attr', got {type(spec).__name__}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ValueError(
            f"dataset: expected 'module:attr' such as 'mydata:train_set' or "
            f"'mypkg.data:make_dataset', got {spec!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"dataset: cannot import module {module_name!r} ({exc}); run from the folder that "
            "holds it or install its package"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"dataset: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Dataset) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:  # the user's factory: report it as a bad --dataset value
            raise ValueError(
                f"dataset: calling {spec} raised {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(obj, IterableDataset):
        raise TypeError(
            f"dataset: {spec} is an IterableDataset; tune-loader needs a map-style Dataset "
            "(__len__ and __getitem__), since an unsharded stream repeats in every worker"
        )
    if not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        raise TypeError(
            f"dataset: {spec} is a {type(obj).__name__}, not a Dataset; point to a Dataset "
            "instance or a zero-argument function that returns one"
        )
    return obj


def plot_heatmap(results: Sequence[SweepResult], ax: Any = None) -> Any:
    """Samples/s as a heatmap: columns are ``num_workers``, rows the other knobs."""
    import numpy as np

    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: works headless, in any backend

        ax = Figure(figsize=(7, 3.5), layout="constrained").subplots()
    workers = sorted({r.setting.num_workers for r in results})
    combos = sorted(
        {
            (r.setting.prefetch_factor or 2, r.setting.persistent_workers, r.setting.pin_memory)
            for r in results
            if r.setting.num_workers
        },
    ) or [(2, False, False)]
    grid = np.full((len(combos), len(workers)), np.nan)
    for r in results:
        s = r.setting
        col = workers.index(s.num_workers)
        if s.num_workers:
            row = combos.index((s.prefetch_factor or 2, s.persistent_workers, s.pin_memory))
            grid[row, col] = r.samples_per_s
        else:  # without workers only pin applies: show it on the first row with that pin
            rows = [i for i, c in enumerate(combos) if c[2] == s.pin_memory] or [0]
            grid[rows[0], col] = r.samples_per_s
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="lightgray")  # n/a cells in grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    low, high = np.nanmin(grid), np.nanmax(grid)
    for (i, j), v in np.ndenumerate(grid):
        text = "n/a" if math.isnan(v) else f"{v:.0f}"
        dark = not math.isnan(v) and v < low + 0.5 * (high - low)
        color = "white" if dark else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(len(workers)), [str(w) for w in workers])
    labels = [
        f"prefetch={p}{' persistent' if k else ''}{' pin' if m else ''}" for p, k, m in combos
    ]
    ax.set_yticks(range(len(combos)), labels)
    ax.set_xlabel("num_workers")
    ax.set_title("loader throughput (samples/s, n/a: needs workers)")
    ax.figure.colorbar(image, ax=ax, label="samples/s")
    return ax


# ----------------------------------------------------------------------------------- CLI
def _int_list(minimum: int) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers such as 0,1,2, got {text!r}"
            ) from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= {minimum}, got {text!r}"
            )
        return values

    return parse


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``d2lopt tune-loader``."""
    from .cli import non_negative_int, positive_int

    p = sub.add_parser(
        "tune-loader",
        help="sweep num_workers/prefetch_factor/persistent_workers/pin_memory for a data set",
        description="Measure every DataLoader setting on this machine for your Dataset "
        "(module:attr) or the course's standard image folder; print the best setting and its "
        "speedup over PyTorch's defaults, save a heatmap.",
    )
    p.add_argument(
        "dataset",
        nargs="?",
        default=None,
        help="import path module:attr of a Dataset or of a zero-argument function returning "
        "one (the current folder is importable); default: the standard image folder",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: %(default)s")
    p.add_argument(
        "--workers",
        type=_int_list(0),
        default=None,
        help="num_workers values, e.g. 0,1,2 (default: 0,1,2,4.. up to the cores)",
    )
    p.add_argument(
        "--prefetch",
        type=_int_list(1),
        default=[2, 4],
        help="prefetch_factor values (default: 2,4)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=2,
        help="passes per measurement; >= 2 shows persistent_workers (default: 2)",
    )
    p.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        help="batches per pass (default: the whole data set)",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="interleaved measurements per setting, median kept (default: 3)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where batches are copied: auto, cpu, cuda, mps (default: auto)",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=1024,
        help="images in the standard data set (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=64,
        help="side of the standard images (default: %(default)s)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="shuffling seed")
    p.add_argument(
        "--out",
        default="runs/tune-loader",
        help="folder for tune-loader.json and heatmap.png (default: %(default)s)",
    )
    p.set_defaults(run=_run)


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
        raise ValueError(f"size: must be >= 8, got {size}")
    from torchvision.datasets import ImageFolder

    from .data import FASHION_MNIST_CLASSES, data_root, image_transform, write_image_folder

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


def _run(args: argparse.Namespace) -> int:
    from .cli import UsageError, writable_dir

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {str(exc).partition(': ')[2]}") from None
    cores = default_workers()[-1]
    workers = args.workers if args.workers is not None else default_workers()
    if max(workers) > 4 * cores:
        raise ValueError(
            f"--workers: {max(workers)} workers on {cores} cores would thrash; use at most {cores}"
        )
    try:
        out = writable_dir(args.out)
    except UsageError as exc:  # as ValueError main() catches it under `python -m d2lopt.cli` too
        raise ValueError(str(exc)) from None
    if args.dataset is not None:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: local modules are importable
        try:
            dataset = load_dataset(args.dataset)
        except (ValueError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        name = args.dataset
    else:
        try:
            dataset = standard_dataset(args.n, args.image_size)
        except ValueError as exc:
            raise ValueError(f"--image-size: {str(exc).partition(': ')[2]}") from None
        name = f"standard image folder ({args.n} JPEGs, {args.image_size}px, decode + augment)"
    pins = (False, True) if device.type == "cuda" else (False,)
    if device.type != "cuda":
        print(
            f"tune-loader: pin_memory needs a CUDA GPU; not swept on {device.type}", file=sys.stderr
        )
    grid = sweep_grid(workers, args.prefetch, (False, True), pins)
    print(f"tune-loader: {len(grid)} settings x {args.rounds} rounds on {name}", file=sys.stderr)
    try:
        results = sweep_loader(
            dataset,
            grid,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_batches=args.max_batches,
            rounds=args.rounds,
            device=device,
            seed=args.seed,
            log=lambda line: print(line, file=sys.stderr),
        )
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. samples default_collate rejects
        raise ValueError(f"dataset: loading batches failed ({type(exc).__name__}: {exc})") from None
    best = best_of(results)
    default = next((r for r in results if r.setting == DEFAULT), None)
    print(f"{'setting':<40} {'samples/s':>10} {'vs default':>10}")
    for r in sorted(results, key=lambda r: -r.samples_per_s):
        ratio = f"{r.samples_per_s / default.samples_per_s:.2f}x" if default else "-"
        print(f"{r.setting.label():<40} {r.samples_per_s:>10.0f} {ratio:>10}")
    speedup = best.samples_per_s / default.samples_per_s if default else math.nan
    print(
        f"best: {best.setting.label()}: {best.samples_per_s:.0f} samples/s, "
        + (
            f"{speedup:.2f}x PyTorch's default (num_workers=0)"
            if default
            else "(the default, workers=0, was not in the sweep)"
        )
    )
    report = {
        "dataset": name,
        "device": str(device),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "results": [r.to_dict() for r in results],
        "best": best.to_dict(),
        "speedup_vs_default": speedup,
    }
    (out / "tune-loader.json").write_text(json.dumps(report, indent=2))
    ax = plot_heatmap(results)
    ax.figure.savefig(out / "heatmap.png", dpi=120)
    print(f"saved {out / 'tune-loader.json'} and {out / 'heatmap.png'}")
    return 0
