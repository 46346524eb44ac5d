"""Data sets that fail on purpose, and a wrapper that names the failing sample (test helpers).

``tests/test_workers.py`` checks with them what ``03_dataset_dataloader`` teaches. Real
pipelines meet corrupt files, stalled network mounts and DataLoader workers killed by the
kernel's OOM killer. Each data set here wraps a real one and injects one fault at one chosen
index, so a lesson (or a test) can show what the loader does about it:

- :class:`RaiseAt`: ``__getitem__`` raises; the error reaches the main process, re-raised
  by the DataLoader with the worker's traceback.
- :class:`HangAt`: ``__getitem__`` never returns; only ``DataLoader(timeout=...)`` turns
  that into an error instead of a silent hang.
- :class:`KillWorkerAt`: the worker process dies by a signal; the main process gets a
  ``RuntimeError`` naming the worker's pid and the signal.

:class:`WithSampleIndex` wraps any map-style data set so that whatever its ``__getitem__``
raises is re-raised as :class:`SampleError` naming the sample index, the original error
chained: "sample 41237: OSError: image file is truncated" finds the bad file at once.
:func:`d2lopt.batches.iterate` is ``for batch in loader`` that, when the loader fails, names a
worker killed by a signal and shuts the workers down at once.
They live in a module, not in a test function, so ``spawn``/``forkserver`` workers can
unpickle them (a worker inherits ``sys.path``, ``tests/`` included).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from torch.utils.data import Dataset, get_worker_info

__all__ = ["SampleError", "WithSampleIndex", "RaiseAt", "HangAt", "KillWorkerAt"]


class SampleError(RuntimeError):
    """Loading one sample failed; the message names its index and the original error.

    Takes only a message, so the DataLoader can rebuild it in the main process.
    """


def _check_dataset(dataset: Any) -> None:
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"dataset: expected a map-style Dataset with __getitem__ and __len__, "
            f"got {type(dataset).__name__}"
        )


class WithSampleIndex(Dataset):
    """``dataset`` whose loading errors name the sample: ``SampleError("sample 7: ...")``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = WithSampleIndex(RaiseAt(TensorDataset(torch.arange(10)), 7, OSError("bad")))
        >>> data[7]
        Traceback (most recent call last):
        ...
        faults.SampleError: sample 7: OSError: bad
    """

    def __init__(self, dataset: Dataset) -> None:
        _check_dataset(dataset)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            raise SampleError(f"sample {index}: {type(exc).__name__}: {exc}") from exc


class _FaultAt(Dataset):
    """``dataset`` unchanged except at ``index``, where :meth:`_fault` runs instead."""

    def __init__(self, dataset: Dataset, index: int) -> None:
        _check_dataset(dataset)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if not 0 <= index < len(dataset):
            raise ValueError(
                f"index: must be in [0, {len(dataset)}) for this data set, got {index}"
            )
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index == self.index:
            self._fault(index)
        return self.dataset[index]

    def _fault(self, index: int) -> None:
        raise NotImplementedError


class RaiseAt(_FaultAt):
    """Raise ``error`` when sample ``index`` is loaded (a corrupt record).

    Args:
        dataset: the data set to wrap.
        index: the failing sample.
        error: the exception to raise; by default a ``ValueError`` that names the index.
            Pass one that does not (``OSError("image file is truncated")``, as PIL says) to
            see why :class:`WithSampleIndex` helps.
    """

    def __init__(self, dataset: Dataset, index: int, error: Exception | None = None) -> None:
        super().__init__(dataset, index)
        if error is not None and not isinstance(error, Exception):
            raise TypeError(f"error: expected an exception instance, got {type(error).__name__}")
        self.error = error

    def _fault(self, index: int) -> None:
        if self.error is None:
            raise ValueError(f"sample {index}: corrupt record (fault injected by RaiseAt)")
        raise self.error


class HangAt(_FaultAt):
    """Block for ``seconds`` when sample ``index`` is loaded (a stalled network mount).

    Only meaningful with ``num_workers >= 1`` and ``DataLoader(timeout=...)``: the main
    process then raises ``RuntimeError: DataLoader timed out``. In the main process
    (``num_workers=0``) nothing can time out: the loop just waits.
    """

    def __init__(self, dataset: Dataset, index: int, seconds: float = 3600.0) -> None:
        super().__init__(dataset, index)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"seconds: must be a number > 0, got {seconds!r}")
        self.seconds = seconds

    def _fault(self, index: int) -> None:
        time.sleep(self.seconds)


class KillWorkerAt(_FaultAt):
    """Kill the DataLoader worker that loads sample ``index`` with ``signum`` (OOM killer).

    Refuses to run in the main process (``num_workers=0``), which it would kill instead.
    """

    def __init__(self, dataset: Dataset, index: int, signum: int = signal.SIGKILL) -> None:
        super().__init__(dataset, index)
        try:
            self.signum = signal.Signals(signum)
        except ValueError:
            raise ValueError(f"signum: {signum!r} is no signal; use e.g. signal.SIGKILL") from None

    def _fault(self, index: int) -> None:
        if get_worker_info() is None:
            raise RuntimeError(
                f"KillWorkerAt: sample {index} was loaded in the main process, which it would "
                "kill; use it with DataLoader(num_workers >= 1)"
            )
        os.kill(os.getpid(), self.signum)
