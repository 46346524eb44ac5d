"""Input pipelines past the ``DataLoader``: threads, decode once, decode on the GPU.

Taught in ``06_cpu_compute`` (threads vs worker processes; ``uint8`` until the device and
one batched augmentation instead of one per sample) and climbed as rungs in
``12_putting_it_together`` (``d2lopt ladder``). Each loader here is an iterable of
``(X, y)`` batches, so :func:`d2lopt.fit`, the article's loop and
:func:`d2lopt.lab.bench.measure_loaders` take it like a ``DataLoader``.

- :class:`ThreadLoader`: batches built by a pool of threads in the main process. JPEG
  decoding (PIL) and tensor kernels release the GIL, so threads overlap where it counts,
  without starting, feeding and pickling to worker processes.
- :func:`decode_images` + :class:`DeviceAugmentLoader`: decode every image **once** into a
  ``uint8`` tensor (4x smaller than float32), keep it on the device, and draw each batch's
  random crops and flips as one batched kernel (:func:`d2lopt.lab.loading.batched_augment`) every
  epoch. This is FFCV's and DALI's idea, on the course's own pieces.
- :func:`read_encoded` + :class:`GpuDecodeLoader`: keep the *encoded* JPEG bytes in memory
  (about a tenth of the decoded size) and decode each batch with one batched
  ``torchvision.io.decode_jpeg(..., device="cuda")`` call (nvJPEG), for data sets whose
  decoded images do not fit.
"""

from __future__ import annotations

import collections
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from ..data import check_map_style
from ..devices import as_device, try_gpu
from ..errors import check_bool, check_int
from ..train import pin_memory_for
from .loading import batched_augment

__all__ = [
    "ThreadLoader",
    "DecodedImages",
    "decode_images",
    "DeviceAugmentLoader",
    "EncodedImages",
    "read_encoded",
    "GpuDecodeLoader",
]

# the course's normalization (d2lopt.data.image_transform): (x / 255 - 0.5) / 0.25
MEAN, STD = 0.5, 0.25


class ThreadLoader:
    """Batches of a map-style data set, each built by one of ``num_threads`` threads.

    The thread-based twin of ``DataLoader(num_workers=n)``: ``prefetch`` batches per thread
    are in flight while the loop trains, in the sampler's order. No process starts, nothing
    is pickled, and the data set is shared, not copied. It helps when ``__getitem__``
    spends its time in code that releases the GIL (file reads, PIL decoding, torch
    kernels); pure-Python work gains nothing. Random augmentations draw from the global
    RNGs of several threads, so their order is not reproducible (speed is what it is for).

    Args:
        dataset: a map-style ``Dataset`` returning ``(X, y)`` samples.
        batch_size: samples per batch (the last batch may be smaller).
        num_threads: threads building batches.
        sampler: the order of indices (``fit`` calls its ``set_epoch``); default 0..n-1.
        prefetch: batches in flight per thread.
        pin_memory: page-lock each batch in its thread (CUDA only), as the DataLoader's
            pinning thread does, so the copy to the GPU can be asynchronous.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        num_threads: int,
        sampler: Any = None,
        prefetch: int = 2,
        pin_memory: bool = False,
    ) -> None:
        check_map_style(dataset)
        check_int("batch_size", batch_size, 1)
        check_int("num_threads", num_threads, 1)
        check_int("prefetch", prefetch, 1)
        self.dataset, self.batch_size, self.num_threads = dataset, batch_size, num_threads
        self.sampler, self.prefetch = sampler, prefetch
        # page-locking needs CUDA; quiet here: the ladder, which builds these per rung, decides
        self.pin_memory = pin_memory_for(pin_memory, try_gpu(), announce=False)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def _batch(self, indices: Sequence[int]) -> Any:
        batch = default_collate([self.dataset[i] for i in indices])
        if self.pin_memory:  # in the loader thread, off the training loop's path
            batch = [x.pin_memory() if isinstance(x, torch.Tensor) else x for x in batch]
        return batch

    def __iter__(self) -> Iterator[Any]:
        order = list(self.sampler) if self.sampler is not None else range(len(self.dataset))
        chunks = (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
        pending: collections.deque[Future] = collections.deque()
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="d2lopt-loader")
        try:
            for chunk in chunks:  # keep num_threads * prefetch batches in flight
                pending.append(pool.submit(self._batch, chunk))
                if len(pending) >= self.num_threads * self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an early `break`: drop the queued batches, finish the running ones
            pool.shutdown(wait=True, cancel_futures=True)


def _check_images(images: Any, labels: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError("images: expected a uint8 tensor [N, C, H, W]")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"labels: expected a tensor of shape ({images.shape[0]},)")


@dataclass(frozen=True)
class DecodedImages:
    """Every image of a data set, decoded once: ``uint8 [N, C, H, W]`` and the labels."""

    images: torch.Tensor
    labels: torch.Tensor
    seconds: float  # the one-time cost: reading and decoding every file

    @property
    def mib(self) -> float:
        return self.images.numel() * self.images.element_size() / 2**20


def _image_samples(samples: Any, name: str) -> list[tuple[str, int]]:
    if not isinstance(samples, Sequence) or not samples:
        raise ValueError(f"{name}: expected a non-empty list of (path, label) pairs")
    return [(os.fspath(p), int(y)) for p, y in samples]


def decode_images(
    samples: Sequence[tuple[str, int]], device: torch.device | str = "cpu"
) -> DecodedImages:
    """Read and decode image files once into one ``uint8`` tensor on ``device``.

    ``samples`` are ``(path, label)`` pairs, e.g. ``ImageFolder(...).samples``; every image
    must have the same size (they are stacked). Decoded by PIL as RGB, as ``ImageFolder``
    does, so the pixels equal the per-sample pipeline's.
    How much memory it takes is ``DecodedImages.mib``: check it fits before caching a big
    data set (:func:`d2lopt.lab.ladder` does).
    """
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    def decode(path: str) -> torch.Tensor:
        with Image.open(path) as img:  # the decoder ImageFolder uses: same pixels
            return pil_to_tensor(img.convert("RGB"))

    pairs = _image_samples(samples, "samples")
    start = time.perf_counter()
    decoded = [decode(p) for p, _ in pairs]
    shapes = {tuple(x.shape) for x in decoded}
    if len(shapes) > 1:
        raise ValueError(
            f"samples: images of {len(shapes)} different sizes cannot be stacked; resize them "
            "once on disk, or decode per sample"
        )
    images = torch.stack(decoded).to(as_device(device))
    labels = torch.tensor([y for _, y in pairs], dtype=torch.long, device=images.device)
    return DecodedImages(images, labels, time.perf_counter() - start)


class _BatchedImages:
    """Shuffle, batch and transform ``uint8`` images already in memory (shared by the two)."""

    def __init__(self, n: int, batch_size: int, size: int, train: bool, seed: int) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("size", size, 1)
        check_bool("train", train)  # True: augment and shuffle
        self.n, self.batch_size, self.size, self.train = n, batch_size, size, train
        # one generator for the whole run: a new order and new crops every epoch, reproducible
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def _augment_generator(self, device: torch.device) -> torch.Generator:
        """The generator the crops are drawn from, on the batch's own device.

        On the CPU it is :attr:`generator` itself (the order and the crops from one stream,
        as before); on a GPU a generator on that device, so the random numbers are drawn
        there and no per-batch host-to-device copy waits for the queued step.
        """
        if device.type == "cpu":
            return self.generator
        if device not in self._device_generators:
            self._device_generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._device_generators[device]

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _order(self) -> torch.Tensor:
        if self.train:
            return torch.randperm(self.n, generator=self.generator)
        return torch.arange(self.n)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, C, H, W]`` -> normalized float32 batch (augmented when training)."""
        if self.train:  # each sample its own crop and flip, in one kernel (06_cpu_compute)
            gen = self._augment_generator(x.device)
            return batched_augment(x, self.size, mean=MEAN, std=STD, generator=gen)
        out = x.float().div_(255)
        if out.shape[-2:] != (self.size, self.size):
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear", antialias=True)
        return out.sub_(MEAN).div_(STD)


class DeviceAugmentLoader(_BatchedImages):
    """Batches from decoded ``uint8`` images: gathered and augmented on their device.

    Training (``train=True``): a seeded shuffle per epoch, then a random resized crop and
    flip per sample as one batched kernel. Evaluation: in order, normalized only. The
    images stay ``uint8`` until the batch is built, on whatever device holds them.

    Example:
        >>> imgs = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
        >>> [tuple(X.shape) for X, _ in DeviceAugmentLoader(imgs, torch.arange(10),
        ...                                                 batch_size=4, size=8)]
        [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        size: int,
        train: bool = True,
        seed: int = 0,
    ) -> None:
        _check_images(images, labels)
        super().__init__(len(images), batch_size, size, train, seed)
        self.images, self.labels = images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order().to(self.images.device)
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.transform(self.images[idx]), self.labels[idx]


@dataclass(frozen=True)
class EncodedImages:
    """The encoded bytes of every image file, read once (decoded per batch later)."""

    data: list[torch.Tensor]  # one uint8 tensor of file bytes per image
    labels: torch.Tensor
    seconds: float

    @property
    def mib(self) -> float:
        return sum(d.numel() for d in self.data) / 2**20


def read_encoded(samples: Sequence[tuple[str, int]]) -> EncodedImages:
    """Read the files of ``(path, label)`` pairs into memory, still encoded."""
    pairs = _image_samples(samples, "samples")
    start = time.perf_counter()
    data = []
    for p, _ in pairs:
        with open(p, "rb") as f:
            data.append(torch.frombuffer(bytearray(f.read()), dtype=torch.uint8))
    labels = torch.tensor([y for _, y in pairs], dtype=torch.long)
    return EncodedImages(data, labels, time.perf_counter() - start)


class GpuDecodeLoader(_BatchedImages):
    """Batches decoded from JPEG bytes by one batched ``decode_jpeg`` call on ``device``.

    On CUDA the decode runs on the GPU (nvJPEG), and so does the augmentation; the host
    only hands over the compressed bytes. ``device="cpu"`` runs the same code on the CPU
    (for tests and comparisons; the ladder's rung needs CUDA).
    """

    def __init__(
        self,
        encoded: EncodedImages,
        *,
        batch_size: int,
        size: int,
        train: bool = True,
        seed: int = 0,
        device: torch.device | str = "cuda",
    ) -> None:
        if not isinstance(encoded, EncodedImages):
            raise TypeError(f"encoded: expected read_encoded(...), got {type(encoded).__name__}")
        super().__init__(len(encoded.data), batch_size, size, train, seed)
        self.encoded, self.device = encoded, as_device(device)
        self.labels = encoded.labels.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        order = self._order()
        # the epoch's order goes to the device once, not once per batch: a blocking copy from
        # pageable memory is cudaMemcpyAsync + cudaStreamSynchronize (pytorch/pytorch
        # aten/src/ATen/native/cuda/Copy.cu, copy_kernel_cuda -> memcpy_and_sync), so a
        # per-batch copy would wait for the training step queued before it
        order_on_device = order.to(self.device)
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size]
            files = [self.encoded.data[j] for j in idx.tolist()]
            if self.device.type == "cuda":
                wait_for_queued_work(self.device)
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders for TorchCodec's; decode_jpeg is
                # still the batched nvJPEG entry point, and the one this lesson measures
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        module="torchvision")  # fmt: skip
                # one call for the whole batch: nvJPEG decodes the images together
                x = torch.stack(decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device))
            yield self.transform(x), self.labels[order_on_device[i : i + self.batch_size]]


def wait_for_queued_work(device: torch.device) -> None:
    """Block the host until the work queued on ``device``'s current stream has run.

    A sync point, on purpose, before every CUDA ``decode_jpeg``. torchvision's decoder
    (pytorch/vision ``torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp``, read at
    torchvision 0.29: ``CUDAJpegDecoder::decode_images``) allocates its outputs from the
    caching allocator on the caller's stream, then decodes on its *own* pool stream after
    synchronizing only that one; nvJPEG's hardware path writes the outputs without waiting
    for the caller's queued kernels. A block the previous training step freed while its
    kernels are still queued can be handed to the decoder and overwritten under them
    (pytorch/vision PR 9606, reproduced on H100, not on A100; meta-pytorch/torchcodec
    PR 1634 adds the same barrier). Until a torchvision release carries that fix, the
    caller drains its stream first. The decoder already blocks the host until its own
    stream is done, so the decode gives up no overlap it had; the wait for the queued step
    shows up in the loader's time (a stall, see :class:`~d2lopt.lab.ladder.Timed`).
    """
    torch.cuda.current_stream(device).synchronize()
