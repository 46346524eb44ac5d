"""Small data sets that make each ``DataLoader`` parameter visible (``03_dataset_dataloader``).

Every class here is importable on purpose: a ``DataLoader`` worker started with ``spawn`` or
``forkserver`` re-imports the dataset, the ``collate_fn`` and the ``worker_init_fn`` by
name, and cannot find anything that was defined in a notebook cell.

- :class:`LazyImageFiles`: a custom ``Dataset`` that lists files when defined and reads one
  file per ``__getitem__`` (defining a data set loads nothing).
- :class:`VariableLengthSequences` and :func:`pad_collate`: samples the default collate
  cannot stack, and the ``collate_fn`` that pads them.
- :class:`SlowDataset`: a fixed delay per sample (stands in for disk or network latency) and
  a load counter shared with worker processes (``timeout``, ``num_workers``,
  ``prefetch_factor``, ``persistent_workers``).
- :class:`WorkerProbe`: reports which worker produced a sample and its random draws
  (``generator``, per-worker seeds).
- :class:`NumberStream` and :func:`shard_stream`: an ``IterableDataset`` that every worker
  would replay in full, and the ``worker_init_fn`` that gives each worker its own shard.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset, get_worker_info

from ..errors import ParamError, check_int, check_number

__all__ = [
    "IMAGE_EXTENSIONS",
    "LazyImageFiles",
    "VariableLengthSequences",
    "pad_collate",
    "FloatCollate",
    "SlowDataset",
    "WorkerProbe",
    "NumberStream",
    "shard_stream",
    "tiny_image_set",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_WORKER_SLOTS = 256  # SlowDataset counts loads per worker; more workers share slots


def _check_delay(delay_s: Any) -> None:
    check_number("delay_s", delay_s, minimum=0)  # seconds


# ----------------------------------------------------------------------------- files on disk
class LazyImageFiles(Dataset):
    """Images stored as ``root/<class>/<name>.jpg``, read one file per ``__getitem__``.

    ``__init__`` only lists file names (a few bytes per sample), so defining the data set
    costs the same for 100 images or 100 million; the pixels are read and decoded when a
    sample is asked for, in whichever process asks (a ``DataLoader`` worker, usually).
    ``files_read`` counts the reads made *in this process*: workers read into their own
    copy of the data set, so the parent's counter does not move when workers load.

    Args:
        root: a folder of class sub-folders, e.g. written by :func:`d2lopt.write_image_folder`.
        transform: applied to the decoded ``uint8 [C, H, W]`` tensor; the default scales
            it to ``float32`` in ``[0, 1]``.

    Example:
        >>> ds = LazyImageFiles(root)  # doctest: +SKIP
        >>> ds.files_read, len(ds)  # doctest: +SKIP
        (0, 200)
    """

    def __init__(
        self, root: str | os.PathLike, transform: Callable[[torch.Tensor], Any] | None = None
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(
                f"root: {root} is not a folder; write one with d2lopt.write_image_folder(root)"
            )
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        # the only work done at definition: file names and labels, no file is opened
        self.samples: list[tuple[Path, int]] = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise ValueError(
                f"root: no {'/'.join(IMAGE_EXTENSIONS)} files under {root}/<class>/; "
                "write some with d2lopt.write_image_folder(root)"
            )
        self.transform = transform
        self.files_read = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        path, label = self.samples[index]
        with Image.open(path) as img:  # the one file read of this sample
            x = pil_to_tensor(img.convert("RGB"))
        self.files_read += 1
        x = self.transform(x) if self.transform is not None else x.float().div_(255)
        return x, label


# ----------------------------------------------------------------------------- collate_fn
class FloatCollate:
    """``collate_fn``: stack ``uint8`` image samples, then convert the *batch* to float, normalized.

    It runs where the collate runs, i.e. in the loader worker: the conversion is once per
    batch, as in the main process, but before the batch crosses to the main process. It
    separates two changes ``06_cpu_compute`` measures one at a time: converting per sample
    vs per batch (both in the worker), and converting before vs after the worker-to-main
    trip (``float32`` or ``uint8`` crosses). ``(x / 255 - mean) / std``, like
    ``image_transform``'s ``ToDtype`` + ``Normalize``.
    """

    def __init__(self, mean: float = 0.5, std: float = 0.25) -> None:
        if not std > 0:
            raise ValueError(f"std: must be > 0, got {std!r}")
        self.mean, self.std = float(mean), float(std)

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.utils.data import default_collate

        X, y = default_collate(samples)
        if X.dtype != torch.uint8:
            raise TypeError(f"samples: FloatCollate converts uint8 images, got {X.dtype}")
        return X.float().div_(255).sub_(self.mean).div_(self.std), y


class VariableLengthSequences(Dataset):
    """``n`` token sequences of different lengths, each with a binary label.

    The default ``collate_fn`` stacks samples into one tensor and fails on these; see
    :func:`pad_collate`. The label (is the sequence longer than the middle length?) makes
    the length itself the signal, so padding without ``lengths`` would hide it.

    Args:
        n: number of sequences.
        min_len, max_len: sequence lengths are drawn uniformly from this range.
        vocab: tokens are in ``[1, vocab)``; ``0`` is left free for padding.
        seed: the data set is a pure function of its arguments.
    """

    def __init__(
        self, n: int, *, min_len: int = 2, max_len: int = 12, vocab: int = 100, seed: int = 0
    ) -> None:
        check_int("n", n, 1)
        check_int("min_len", min_len, 1)
        check_int("max_len", max_len, 1)
        if max_len < min_len:
            raise ParamError("max_len", f"must be >= min_len ({min_len}), got {max_len}")
        if not isinstance(vocab, int) or vocab < 2:
            raise ParamError(
                "vocab", f"must be an int >= 2 (0 is the padding token), got {vocab!r}"
            )
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
        self.sequences = [torch.randint(1, vocab, (length,), generator=g) for length in lengths]
        self.labels = [int(length > (min_len + max_len) / 2) for length in lengths]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sequences[index], self.labels[index]


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, int]], padding_value: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``collate_fn`` for ``(sequence, label)`` samples of different lengths.

    Returns ``(padded [B, T_max], lengths [B], labels [B])``: the sequences right-padded
    with ``padding_value`` to the longest one in *this* batch, and the true lengths so a
    model (or ``pack_padded_sequence``) can ignore the padding.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate: got an empty batch; check the sampler or batch_sampler")
    sequences, labels = zip(*batch, strict=True)
    padded = torch.nn.utils.rnn.pad_sequence(
        list(sequences), batch_first=True, padding_value=padding_value
    )
    lengths = torch.tensor([len(s) for s in sequences])
    return padded, lengths, torch.tensor(labels)


# ----------------------------------------------------------------------------- workers
class SlowDataset(Dataset):
    """Sample ``i`` is ``tensor(i)``, delivered after ``delay_s`` seconds of waiting.

    The wait stands in for latency (a network file system, a remote bucket): it costs no
    CPU, so workers overlap it even on a busy two-core machine. ``loaded`` counts the
    samples produced by *every* process (a shared-memory counter), which lets the main
    process see how far ahead the workers have loaded (``prefetch_factor``).

    Args:
        n: number of samples.
        delay_s: seconds each ``__getitem__`` waits.
    """

    def __init__(self, n: int, delay_s: float = 0.01) -> None:
        check_int("n", n, 1)
        _check_delay(delay_s)
        self.n, self.delay_s = n, float(delay_s)
        # counters in shared memory, one slot per process (main + workers) so that no lock
        # is needed; torch passes shared tensors to workers under fork, spawn and forkserver
        self._loaded = torch.zeros(1 + _WORKER_SLOTS, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.n:
            raise IndexError(f"SlowDataset index {index} out of range [0, {self.n})")
        time.sleep(self.delay_s)
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % _WORKER_SLOTS
        self._loaded[slot] += 1  # only this process writes this slot
        return torch.tensor(index)

    @property
    def loaded(self) -> int:
        """Samples produced so far, by the main process and all workers."""
        return int(self._loaded.sum())  # a CPU tensor: no device sync

    def wait_until_idle(self, settle_s: float = 1.0, timeout_s: float = 30.0) -> int:
        """Wait until some samples were loaded and no new one arrived for ``settle_s`` seconds.

        After ``iter(loader)``, workers load ahead on their own until their prefetch quota
        is full; this returns :attr:`loaded` once they have stopped.
        """
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            now, loaded = time.monotonic(), self.loaded
            if loaded != last:
                last, last_change = loaded, now
            elif loaded > 0 and now - last_change >= settle_s:
                return loaded
            time.sleep(settle_s / 10)
        raise TimeoutError(
            f"wait_until_idle: {last} samples loaded and not settled after {timeout_s} s; "
            "create the loader's iterator first, or raise timeout_s"
        )

    def reset(self) -> None:
        """Set :attr:`loaded` back to 0 (while no worker is loading)."""
        self._loaded.zero_()


class WorkerProbe(Dataset):
    """Each sample reports where it was made: index, worker id, process id, random draws.

    ``worker`` is ``-1`` in the main process (``num_workers=0``). The three draws come from
    the three generators a data pipeline typically uses (``torch``, ``random``, NumPy), so
    a notebook can see how PyTorch seeds each worker and what ``generator`` changes.
    """

    def __init__(self, n: int) -> None:
        check_int("n", n, 1)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"WorkerProbe index {index} out of range [0, {self.n})")
        info = get_worker_info()
        return {
            "index": index,
            "worker": info.id if info is not None else -1,
            "pid": os.getpid(),
            "seed": torch.initial_seed(),
            "torch": torch.rand(()).item(),  # CPU tensor in a worker: no device sync
            "random": random.random(),
            "numpy": float(np.random.random()),
        }


class NumberStream(IterableDataset):
    """Streams ``start, start + 1, ..., end - 1``: an ``IterableDataset`` with no ``len``.

    A ``DataLoader`` hands a *copy of the whole stream* to every worker, so with two workers
    each number arrives twice. :func:`shard_stream` (a ``worker_init_fn``) narrows each
    worker's copy to its own slice.
    """

    def __init__(self, end: int, start: int = 0) -> None:
        if not isinstance(start, int) or not isinstance(end, int) or end < start:
            raise ValueError(f"NumberStream: need ints with start <= end, got {start}, {end}")
        self.start, self.end = start, end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))


def shard_stream(worker_id: int) -> None:
    """``worker_init_fn`` that gives each worker a contiguous slice of a :class:`NumberStream`.

    Runs once in each worker, after it starts and before it loads anything;
    ``get_worker_info().dataset`` is that worker's own copy of the data set.
    """
    info = get_worker_info()
    if info is None:
        raise RuntimeError("shard_stream: is a worker_init_fn; pass it to DataLoader(...)")
    stream = info.dataset
    per_worker = math.ceil((stream.end - stream.start) / info.num_workers)
    stream.start = stream.start + worker_id * per_worker
    stream.end = min(stream.start + per_worker, stream.end)


def tiny_image_set(n: int = 1000, seed: int = 0) -> TensorDataset:
    """A learner's data set as ``--dataset`` sees it: ``(image, class index)`` tensor pairs.

    ``12_putting_it_together`` points ``load_user_data`` at it the way a learner points
    ``d2lopt ladder --dataset mydata:train_set`` at their own module: a zero-argument call
    returning a map-style ``Dataset`` (here ``n`` seeded synthetic FashionMNIST-like
    images scaled to [0, 1]).
    """
    from ..synthetic import synthetic_fashion_mnist

    images, labels = synthetic_fashion_mnist(n, seed)
    return TensorDataset(images.float() / 255, labels)
