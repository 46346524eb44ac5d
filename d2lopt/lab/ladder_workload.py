"""The ladder's workload: the data sets, the model and the loaders every rung is built from.

Taught in ``12_putting_it_together``. The workload is the standard one (JPEG files decoded
and augmented per sample, the course CNN) or the learner's: ``--dataset``/``--model``
``MODULE:ATTR`` (:func:`load_user_data`, :func:`load_user_model`), checked here so that a
bad value fails at once, naming its flag, not in the middle of the ladder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate, random_split

from ..config import TrainConfig
from ..data import EpochRandomSampler
from ..devices import resolve_device
from ..errors import ParamError
from ..models import cnn, init_weights
from ..train import make_loader, pin_memory_for
from .input_pipelines import (
    DeviceAugmentLoader,
    GpuDecodeLoader,
    ThreadLoader,
    decode_images,
    read_encoded,
)
from .specs import call_factory, check_sample, resolve
from .tuning import standard_dataset

__all__ = ["Workload", "load_user_data", "load_user_model"]


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
    """The data sets, the model factory and the loaders every rung is built from."""

    def __init__(self, s: Any) -> None:  # a d2lopt.lab.ladder.LadderSettings
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
                pin_memory=pin_memory_for(config.pin_memory, dev, announce=False),  # quiet per rung
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

    def device_batches(
        self, train: bool, limit: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ceiling's input: one augmented epoch (or the test set), copied to the device.

        The batches are built once and kept on the host; each call copies them to the
        device afresh, and they leave it when the caller drops the list. The ceiling calls
        it before its timer starts and drops the list after its run, so the data set does
        not sit on the GPU through every later rung (about 0.9 GB at the GPU preset).
        """
        key = "train" if train else "test"
        if key not in self._device_batches:
            ds = self.train_set if train else self.test_set
            loader = DataLoader(ds, batch_size=self.s.batch_size)
            self._device_batches[key] = list(loader)  # on the host
        batches = self._device_batches[key][:limit]  # limit: the first ones (None: all)
        return [(X.to(self.device), y.to(self.device)) for X, y in batches]

    def decoded_mib(self) -> float:
        """Memory the decode-once cache needs: uint8 [N, C, H, W] for train + test."""
        assert self.samples is not None
        c, h, w = self.batch_shape
        return (len(self.samples["train"]) + len(self.samples["test"])) * c * h * w / 2**20
