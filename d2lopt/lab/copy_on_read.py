"""Data sets that show what DataLoader workers cost in memory (``14_memory``).

Copy-on-read, one of PyTorch's most reported loader problems (pytorch/pytorch#13246,
"DataLoader num_workers > 0 causes CPU memory from parent process to be replicated in all
child processes"): a ``fork``-ed worker shares its parent's pages until either of them
*writes* to one. Reading a Python object writes to it: its reference count lives in the
object's header, and the garbage collector writes to the header of every container it
scans. So a data set held as a Python list of Python objects is copied, page by page, into
every worker that reads it; the same numbers in one NumPy array are a single object whose
data pages nobody writes, and stay shared.

- :class:`PythonObjectsDataset`: samples as a list of ``(list of floats, int)``.
- :class:`ArrayDataset`: the same samples as one ``float32`` array and one label array.
- :class:`PayloadDataset`: a :class:`~d2lopt.lab.datasets.SlowDataset` whose samples carry
  a payload of a given size, to count the bytes prefetching holds.

They live here, not in a notebook cell, so ``spawn`` workers can import them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import check_int
from .datasets import SlowDataset

__all__ = ["PythonObjectsDataset", "ArrayDataset", "PayloadDataset", "make_samples"]


def make_samples(n: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded samples: a ``float32 [n, features]`` array and ``int64`` labels in 0..9."""
    check_int("n", n, 1)
    check_int("features", features, 1)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features), dtype=np.float32), rng.integers(0, 10, n)


class PythonObjectsDataset(Dataset):
    """Samples held as Python objects: a list of ``(list of Python floats, int)``.

    How many data sets start (a list of file names, of parsed JSON records, of captions).
    Every float is a separate 24-byte object with its own reference count; ``__getitem__``
    walks the sample's list, as code that builds a tensor from Python values does, so every
    object it reads gets its count written.
    """

    def __init__(self, n: int, features: int = 64, seed: int = 0) -> None:
        x, y = make_samples(n, features, seed)
        self.samples = [(row.tolist(), int(label)) for row, label in zip(x, y, strict=True)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        values, label = self.samples[index]  # a reference: the tuple's count is written
        return torch.tensor([v for v in values]), label  # and every float's


class ArrayDataset(Dataset):
    """The same samples in two NumPy arrays: three objects, whatever the number of samples.

    ``__getitem__`` slices a row (a view: the array's data pages are only read) and wraps it
    in a tensor without copying; the collate function copies it into the batch.
    """

    def __init__(self, n: int, features: int = 64, seed: int = 0) -> None:
        self.x, self.y = make_samples(n, features, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[index]), int(self.y[index])


class PayloadDataset(SlowDataset):
    """A :class:`SlowDataset` whose samples are ``(index, float32 payload of sample_bytes)``.

    ``loaded`` counts the samples produced in every process, so after ``iter(loader)`` and
    ``wait_until_idle()`` the main process knows how many samples the workers hold ready;
    the payload makes each of them cost ``sample_bytes`` of (shared) memory.
    """

    def __init__(self, n: int, sample_bytes: int = 1 << 16, delay_s: float = 0.0) -> None:
        check_int("sample_bytes", sample_bytes, 1)
        if sample_bytes % 4:
            raise ValueError(f"sample_bytes: must be a multiple of 4 (float32), got {sample_bytes}")
        super().__init__(n, delay_s)
        self.sample_bytes = sample_bytes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        i = super().__getitem__(index)
        return i, torch.ones(self.sample_bytes // 4)
