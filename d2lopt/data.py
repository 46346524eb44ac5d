"""Data for the course: FashionMNIST with an offline stand-in, and image folders on disk.

Taught in ``03_dataset_dataloader`` and ``05_disk_to_memory``. Users online get the real
FashionMNIST through ``torchvision.datasets.FashionMNIST(download=True)``; offline (CI, air-
gapped clusters) the loader announces it once and generates a deterministic *synthetic*
FashionMNIST of the same shapes and classes (:mod:`d2lopt.synthetic`): garment-like
silhouettes under random affine jitter, texture and noise, hard enough that loss curves and
confusions teach something.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset

from .errors import ParamError, ParamTypeError, ParamUnavailable, check_bool, check_int
from .synthetic import FASHION_MNIST_CLASSES, synthetic_fashion_mnist

__all__ = [
    "FASHION_MNIST_CLASSES",
    "data_root",
    "fashion_mnist",
    "synthetic_fashion_mnist",
    "load_fashion_mnist",
    "write_image_folder",
    "image_folder",
    "image_transform",
    "EpochRandomSampler",
    "check_map_style",
    "seed_worker",
]

Source = Literal["auto", "real", "synthetic"]
SOURCES = ("auto", "real", "synthetic")
_announced: set[str] = set()
_unreachable: set[tuple[str, bool]] = set()  # (folder, split) whose download failed


def _check_path(name: str, value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a folder path (str or Path), got {type(value).__name__}")
    return Path(value).expanduser()


def _check_source(source: object) -> None:
    if source not in SOURCES:
        raise ParamError("source", f"must be 'auto', 'real' or 'synthetic', got {source!r}")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``root``, else ``$D2LOPT_DATA``, else ``~/.cache/d2lopt``."""
    if root is not None:
        return _check_path("root", root)
    return Path(os.environ.get("D2LOPT_DATA", "~/.cache/d2lopt")).expanduser()


def notice_once(key: str, message: str) -> None:
    """Print ``d2lopt: message`` to stderr the first time ``key`` is seen in this process.

    The package's one "say it once" helper (an offline data set, pinning without CUDA, a
    missing optional peer): a notice repeated per loader or per epoch is noise. In a
    torchrun job only rank 0 says it: N ranks saying the same line is noise too.
    """
    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0 (issue 22, item 6)
        return
    if key not in _announced:
        _announced.add(key)
        print(f"d2lopt: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- FashionMNIST
@functools.lru_cache(maxsize=8)
def _real_fashion_mnist(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    ds = torchvision.datasets.FashionMNIST(root, train=train, download=True)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


_SYNTHETIC_VERSION = 2  # bump when synthetic_fashion_mnist changes: invalidates disk caches


@functools.lru_cache(maxsize=8)
def _synthetic_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The full synthetic split, cached on disk (generating 60k images takes seconds)."""
    split = "train" if train else "test"
    cache = data_root() / f"synthetic-fashion-mnist-v{_SYNTHETIC_VERSION}-{split}.pt"
    try:
        payload = torch.load(cache, weights_only=True)
        return payload["images"], payload["labels"]
    except (OSError, RuntimeError, KeyError, EOFError):
        pass  # missing or unreadable: regenerate below
    images, labels = synthetic_fashion_mnist(60_000 if train else 10_000, seed=0 if train else 1)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)  # atomic: concurrent notebooks never read a half-written file
    except OSError:
        pass  # a read-only cache folder only costs the regeneration next time
    return images, labels


def fashion_mnist(
    train: bool = True,
    *,
    root: str | os.PathLike | None = None,
    source: Source = "auto",
    n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """FashionMNIST as tensors: ``(images uint8 [N,1,28,28], labels int64 [N], source)``.

    Args:
        train: the 60k training split, or the 10k test split.
        root: download/cache folder (see :func:`data_root`).
        source: ``"real"`` (download, fail if impossible), ``"synthetic"`` (never touch the
            network) or ``"auto"`` (real when reachable, else synthetic, announced once).
        n: keep the first ``n`` samples (CI-sized experiments).

    Returns:
        images, labels and the source actually used (``"real"`` or ``"synthetic"``).
    """
    check_bool("train", train)  # True: the training split, False: the test split
    _check_source(source)
    if n is not None:
        check_int("n", n, 1)
    used = source
    folder = str(data_root(root) / "data")
    if source == "auto" and (folder, train) in _unreachable:
        used = "synthetic"  # already failed in this process: do not retry the network each call
    elif source != "synthetic":
        try:
            images, labels = _real_fashion_mnist(folder, train)
            used = "real"
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            _unreachable.add((folder, train))
            if source == "real":
                raw = Path(folder) / "FashionMNIST" / "raw"
                why = " ".join(str(exc).split())
                raise ParamUnavailable(
                    "source",
                    f"real FashionMNIST could not be downloaded ({why}); connect to the internet, "
                    f"copy its idx files into {raw} (or set D2LOPT_DATA to the folder that holds "
                    "data/FashionMNIST/raw), or use the 'synthetic' source",
                ) from exc
            used = "synthetic"
            notice_once(
                "fashion-mnist",
                "FashionMNIST is not reachable (offline?); using the synthetic "
                "stand-in: same shapes and 10 classes, generated locally and seeded.",
            )
    if used == "synthetic":
        images, labels = _synthetic_split(train)
    if n is not None:
        if n > len(labels):
            split = "training" if train else "test"
            raise ParamError(
                "n",
                f"the {split} split has {len(labels)} samples, "
                f"asked for {n}; ask for at most {len(labels)}, or leave it out for all",
            )
        images, labels = images[:n], labels[:n]
    return images, labels, used


def load_fashion_mnist(
    batch_size: int,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    root: str | os.PathLike | None = None,
    source: Source = "auto",
    seed: int = 0,
    **loader_kwargs,
) -> tuple[DataLoader, DataLoader]:
    """In-memory FashionMNIST loaders, like ``d2l.load_data_fashion_mnist``.

    The whole split is converted to float once (the article's "small data set: load it once"
    case), so each batch is a slice, with no per-sample decoding.
    ``loader_kwargs`` go to both ``DataLoader`` s (``num_workers``, ``pin_memory``...).
    """
    check_int("batch_size", batch_size, 1)
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            check_int(name, n, 1)
    check_int("seed", seed, 0)
    taken = sorted({"batch_size", "shuffle", "sampler", "batch_sampler"} & set(loader_kwargs))
    if taken:
        raise TypeError(
            f"loader_kwargs: {', '.join(taken)} set by load_fashion_mnist itself (batch_size "
            "argument, seeded shuffling); remove them or build your own DataLoader"
        )
    sets = []
    for train, n in ((True, n_train), (False, n_test)):
        try:
            images, labels, _ = fashion_mnist(train, root=root, source=source, n=n)
        except ParamError as exc:  # name this function's parameter, not fashion_mnist's
            if exc.param == "n":
                raise exc.renamed("n_train" if train else "n_test") from None
            raise
        sets.append(TensorDataset(images.float().div_(255), labels))
    train_iter = DataLoader(
        sets[0],
        batch_size,
        sampler=EpochRandomSampler(len(sets[0]), seed=seed),
        **loader_kwargs,
    )
    test_iter = DataLoader(sets[1], batch_size, shuffle=False, **loader_kwargs)
    return train_iter, test_iter


class EpochRandomSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on ``(seed, epoch)``.

    Call :meth:`set_epoch` at the start of each epoch (as with ``DistributedSampler``).
    Because no hidden generator state is carried from epoch to epoch, a run resumed from a
    checkpoint sees exactly the sample order of the uninterrupted run.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        check_int("n", n, 1)
        check_int("seed", seed, 0, 2**32 - 1)  # seed * 100_003 + epoch must fit in 64 bits
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def check_map_style(dataset: object, param: str = "dataset", what: str = "") -> None:
    """A :class:`ParamTypeError` naming ``param`` unless ``dataset`` is map-style.

    A DataLoader's sampler, workers and ``len()`` need ``__getitem__`` and ``__len__``; an
    ``IterableDataset`` (a stream) would repeat in every worker. ``what`` says who needs it
    (``"tune-loader"``), in the message. The one check of the package (``03_data_loading``).
    """
    who = f"{what} needs" if what else "expected"
    if isinstance(dataset, IterableDataset):
        raise ParamTypeError(param, f"{who} a map-style Dataset (__getitem__ and __len__), got "
                             f"the IterableDataset {type(dataset).__name__}; an unsharded stream "
                             "repeats in every worker")  # fmt: skip
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ParamTypeError(param, f"{who} a map-style Dataset (__getitem__ and __len__), got "
                             f"a {type(dataset).__name__}, not a Dataset")  # fmt: skip


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds Python's and NumPy's RNGs from the worker's torch seed.

    PyTorch seeds each worker's torch RNG (base seed + worker id) but not ``random`` or
    NumPy; without this, NumPy augmentations repeat across workers (``03_dataset_dataloader``).
    """
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# ----------------------------------------------------------------------------- image folders
def write_image_folder(
    root: str | os.PathLike,
    n: int = 2000,
    *,
    size: int = 64,
    fmt: Literal["jpeg", "png"] = "jpeg",
    train: bool = True,
    source: Source = "synthetic",
) -> Path:
    """Write ``n`` FashionMNIST images as encoded RGB files: ``root/<class>/<i>.<ext>``.

    The result is readable by ``torchvision.datasets.ImageFolder``; each sample then costs a
    file read, a decode and the augmentation, like a real large data set. Images are
    upscaled to ``size`` and tinted so there is real decoding work. A finished folder with
    the same parameters is reused (a ``d2lopt-folder.json`` marker records them).
    """
    from PIL import Image

    check_int("n", n, 1)
    check_int("size", size, 8)
    if fmt not in ("jpeg", "png"):
        raise ParamError("fmt", f"must be 'jpeg' or 'png', got {fmt!r}")
    check_bool("train", train)
    _check_source(source)
    root = _check_path("root", root)
    params = {"n": n, "size": size, "fmt": fmt, "train": train, "source": source, "version": 1}
    marker = root / "d2lopt-folder.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    images, labels, _ = fashion_mnist(train, source=source, n=n)
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(1234 + int(train))
    tint = 0.5 + 0.5 * torch.rand(len(x), 3, 1, 1, generator=g)
    rgb = (x * tint).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ext = "jpg" if fmt == "jpeg" else "png"
    for y in sorted(set(labels.tolist())):  # no empty class folders: ImageFolder rejects them
        (root / FASHION_MNIST_CLASSES[y]).mkdir(parents=True, exist_ok=True)
    # Each file appears whole (written aside, then renamed), and the marker last: two
    # processes may write the same folder at once (notebooks run side by side under `make
    # test`), and neither may read a file the other is still writing.
    tmp = f".{os.getpid()}.tmp"
    for i, (img, y) in enumerate(zip(rgb, labels.tolist(), strict=True)):
        path = root / FASHION_MNIST_CLASSES[y] / f"{i:06d}.{ext}"
        Image.fromarray(img).save(path.with_name(path.name + tmp), format=fmt, quality=90)
        os.replace(path.with_name(path.name + tmp), path)
    marker.with_name(marker.name + tmp).write_text(json.dumps(params))
    os.replace(marker.with_name(marker.name + tmp), marker)
    return root


def image_transform(train: bool = True, size: int = 64):
    """Per-sample decode-side pipeline: random crop + flip for training, then normalize."""
    from torchvision.transforms import v2

    check_int("size", size, 1)
    ops = [v2.PILToTensor()]
    if train:
        ops += [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
                v2.RandomHorizontalFlip()]  # fmt: skip
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)]
    return v2.Compose(ops)


def image_folder(root: str | os.PathLike, *, train: bool = True, size: int = 64) -> Dataset:
    """``torchvision.datasets.ImageFolder`` over :func:`write_image_folder` output."""
    from torchvision.datasets import ImageFolder

    root = _check_path("root", root)
    if not root.is_dir():
        raise ValueError(
            f"root: no image folder at {root}; create one with d2lopt.write_image_folder(root)"
        )
    return ImageFolder(str(root), transform=image_transform(train, size))
