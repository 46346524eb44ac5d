"""Data-pipeline lessons: in-memory data sets, warm loaders, sweep steps, batched augmentation.

Taught in ``05_disk_to_memory`` (where the data lives, ``num_workers``, ``prefetch_factor``,
``persistent_workers``; judging where more workers stop helping from the steps of a sweep)
and ``06_cpu_compute`` (threads vs workers, batched transforms, ``uint8`` until the device).
The data sets live here, not in notebook cells, so DataLoader workers can import them under
every start method (fork, spawn, forkserver). Loaders are *measured* by
:mod:`d2lopt.lab.bench`; :func:`warm_loaders` hands it loaders whose workers are already running.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..config import TrainConfig
from ..errors import check_int
from ..measure import Comparison, Sweep
from ..train import make_loader
from ..verdict import knee, plateau  # the rules live with the other verdict rules

T = TypeVar("T")

__all__ = [
    "TensorImageDataset",
    "decode_image_folder",
    "build_loader",
    "consume",
    "steps",
    "knee",
    "plateau",
    "warm_loaders",
    "num_threads",
    "batched_augment",
]

# PyTorch warns (at construction and at every iter()) when num_workers exceeds the cores it
# may use. The sweeps cross that line on purpose: it is where "more workers" stops helping.
_MANY_WORKERS = r"This DataLoader will create \d+ worker processes"


class TensorImageDataset(Dataset):
    """Images already in memory (``uint8 [N, C, H, W]``), transformed one sample at a time.

    The in-memory twin of an image folder: no file read, no decode, but the same
    per-sample ``transform`` (augmentation) as the on-disk data set. With
    ``transform=None`` a sample is just a slice of the tensor (the article's "small data
    set: load it once" case). Taught in ``05_disk_to_memory``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(
                "images: expected a tensor [N, C, H, W]; got "
                f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)}"
            )
        if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels: expected a tensor of shape ({images.shape[0]},), one label per image"
            )
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def decode_image_folder(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and decode every image of an image folder once: ``(uint8 [N,C,H,W], labels)``.

    Same files, same order and same labels as ``torchvision.datasets.ImageFolder(root)``:
    this is "the same data, in memory", paid for once instead of every epoch.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.v2.functional import pil_to_tensor

    folder = ImageFolder(str(root))  # raises FileNotFoundError when the folder holds no images
    images = torch.stack([pil_to_tensor(img) for img, _ in folder])
    return images, torch.tensor(folder.targets, dtype=torch.long)


@contextlib.contextmanager
def _allow_many_workers() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MANY_WORKERS, category=UserWarning)
        yield


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    pin_memory: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    collate_fn: Callable[[list], Any] | None = None,
) -> DataLoader:
    """:func:`d2lopt.make_loader` with the article's knobs as arguments, quiet where it should be.

    The knobs are checked once, as :class:`~d2lopt.TrainConfig`'s fields (a bad one names
    its field). ``pin_memory`` is only passed on when CUDA exists (elsewhere d2lopt says so
    once instead of PyTorch warning on every loader). ``num_workers`` above the core count
    is allowed without PyTorch's warning: the sweeps of ``05_disk_to_memory`` go there on
    purpose. ``shuffle``: a seeded random order (``seed``), as ``fit``'s training loaders.
    """
    config = TrainConfig(
        batch_size=batch_size, num_workers=num_workers, prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers, pin_memory=pin_memory, seed=seed,
    )  # fmt: skip
    with _allow_many_workers():
        return make_loader(dataset, config, train=shuffle, collate_fn=collate_fn)


def consume(
    loader: Iterable,
    step: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    *,
    max_batches: int | None = None,
    on_first_batch: Callable[[], Any] | None = None,
) -> tuple[int, float]:
    """Run one pass; return ``(samples, seconds spent waiting for batches)``.

    The wait is the time spent inside ``next()``: on a GPU machine, the time the device
    would sit idle because the input pipeline was late. ``step(X, y)`` is the consumer's
    work per batch (a training step, or a stand-in for one). ``on_first_batch()`` is called
    once, when the first batch has arrived (:func:`d2lopt.lab.bench.run_pass` times start-up
    with it).
    """
    samples, waited = 0, 0.0
    with _allow_many_workers():
        batches = iter(loader)
        for i in itertools.count():
            if max_batches is not None and i >= max_batches:
                break
            t0 = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - t0
            if i == 0 and on_first_batch is not None:
                on_first_batch()
            if batch is None:
                break
            X, y = batch
            if step is not None:
                step(X, y)
            samples += len(X)
        del batches  # a non-persistent iterator shuts its workers down here
    return samples, waited


def steps(sweep: Sweep, order: Sequence[str]) -> list[Comparison]:
    """Each setting against the one before it: ``order[i + 1]`` vs ``order[i]``, same rounds.

    "Where does more stop helping?" is a question about successive steps, and a series of
    medians cannot answer it: one noisy point makes a plateau look like a dip and a dip
    like a plateau. Every variant of a sweep ran in every round, so each step gets its own
    paired interval (:meth:`d2lopt.measure.Sweep.between`). Taught in ``05_disk_to_memory``.

    Example: ``steps(sweep, ["num_workers=0", "num_workers=1", "num_workers=2"])``.
    """
    if isinstance(order, str) or len(order) < 2:
        raise ValueError(f"order: need at least two settings of the sweep, got {order!r}")
    return [sweep.between(b, a) for a, b in itertools.pairwise(order)]


@contextlib.contextmanager
def warm_loaders(
    factories: Mapping[str, Callable[[], DataLoader]],
) -> Iterator[dict[str, Callable[[], DataLoader]]]:
    """Build each loader once, keep its workers alive between passes, shut them all down at the end.

    A loader built inside every timed pass pays its workers' start-up in every pass; on a
    short epoch that start-up swamps what the setting changes (05's first sweeps compared
    process start-up, not loading). Here every loader is built once, and the factories
    yielded return that same loader, for :func:`d2lopt.lab.bench.measure_loaders` or
    :func:`d2lopt.lab.bench.run_pass`: the untimed warm-up pass starts the (persistent) workers,
    and the timed passes measure the steady state, what every epoch after the first costs.
    Measure start-up apart (``bench.measure_loader`` with a factory). Taught in
    ``05_disk_to_memory``.

    Raises:
        ValueError: a loader with workers that do not persist (they would restart every pass).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.zeros(8, 2))
        >>> with warm_loaders({"w0": lambda: build_loader(ds, batch_size=4)}) as loaders:
        ...     loaders["w0"]() is loaders["w0"]()
        True
    """
    built: dict[str, DataLoader] = {}
    for label, make in factories.items():
        loader = make()
        if getattr(loader, "num_workers", 0) > 0 and not loader.persistent_workers:
            raise ValueError(
                f"factories[{label!r}]: its workers would restart every pass; build it with "
                "persistent_workers=True"
            )
        built[label] = loader
    try:
        yield {label: functools.partial(built.__getitem__, label) for label in built}
    finally:
        built.clear()  # the last references: persistent workers exit with their loaders


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)``, then restore the previous value.

    Intra-op threads are process-wide state: a notebook that changes them and forgets to
    restore them silently slows (or speeds up) every later cell. Taught in ``06_cpu_compute``.
    """
    check_int("num_threads", n, 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def batched_augment(
    images: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    mean: float = 0.5,
    std: float = 0.25,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop + horizontal flip + normalize for a whole batch in one kernel.

    ``images`` is ``uint8 [B, C, H, W]`` (kept ``uint8`` until here, on any device). Each
    sample gets its *own* crop and flip, like a per-sample ``RandomResizedCrop`` — but
    ``F.grid_sample`` does all of them at once. (A ``torchvision`` v2 transform applied to
    a batch draws one crop for the whole batch.) Taught in ``06_cpu_compute``.

    The random numbers are drawn on ``images.device`` (``generator``, if given, must be a
    generator of that device): drawn on the CPU, they would cross to the GPU as a blocking
    copy from pageable memory every batch, which waits for the training step queued before
    it (pytorch/pytorch ``aten/src/ATen/native/cuda/Copy.cu``, ``copy_kernel_cuda``:
    ``cudaMemcpyAsync`` then ``cudaStreamSynchronize``): a hidden sync, booked as a data stall.

    Returns:
        ``float32 [B, C, size, size]``, normalized with ``mean`` and ``std``.
    """
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], got shape {tuple(images.shape)}")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale: need 0 < min <= max <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio: need 0 < min <= max, got {ratio}")
    if not 0 <= flip_p <= 1:
        raise ValueError(f"flip_p: must be in [0, 1], got {flip_p}")
    B, C = images.shape[:2]
    dev = images.device
    if generator is not None and generator.device.type != dev.type:
        raise ValueError(
            f"generator: a {generator.device.type} generator cannot draw the crops of images "
            f"on {dev}; pass torch.Generator(device=images.device) (or None)"
        )

    def rand() -> torch.Tensor:  # on the images' device: no per-batch copy, no sync
        return torch.rand(B, generator=generator, device=dev)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * rand()

    area = uniform(*scale)  # fraction of the image area kept
    r = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))  # aspect ratio w/h
    w = torch.sqrt(area * r).clamp(max=1.0)  # crop width, as a fraction of the image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * rand() - 1) * (1 - w)  # crop centre, in [-1, 1]
    cy = (2 * rand() - 1) * (1 - h)
    flip = torch.where(rand() < flip_p, -1.0, 1.0)
    zero = torch.zeros(B, device=dev)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, [B, C, size, size], align_corners=False)
    x = images.float().div_(255)  # the uint8 -> float conversion happens here, once
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.sub_(mean).div_(std)
