"""``for batch in loader``, with a clear error and no workers left when the loader fails.

Taught in ``03_dataset_dataloader`` (with the faults of the test suite's ``tests/faults.py``); every
epoch of :func:`d2lopt.fit` iterates its loaders through :func:`iterate`. When the loader
fails, it names a worker killed by a signal (PyTorch may report only
``ConnectionResetError`` from its half-sent batch) and shuts the workers down at once instead
of whenever the traceback is freed (a notebook keeps tracebacks, and with them the workers).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterable, Iterator

__all__ = ["iterate"]


@contextlib.contextmanager
def _sigchld_paused() -> Iterator[None]:
    """Pause PyTorch's SIGCHLD handler, which raises in the main thread when a worker dies.

    Python runs signal handlers between bytecodes of the main thread only, so elsewhere (and
    on Windows, which has no SIGCHLD) there is nothing to pause.
    """
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL if previous is None else previous)


def _killed_workers(batches: Iterator, wait: float) -> list[tuple[int, str]]:
    """``(pid, signal name)`` of the iterator's workers that a signal ended."""
    workers = getattr(batches, "_workers", [])  # DataLoader's multiprocessing iterator only
    deadline = time.monotonic() + wait
    while True:
        killed = [(w.pid, signal.Signals(-w.exitcode).name) for w in workers
                  if w.exitcode is not None and w.exitcode < 0]  # fmt: skip
        if killed or not workers or time.monotonic() > deadline:
            return killed
        time.sleep(0.05)


def iterate(loader: Iterable) -> Iterator:
    """``for batch in loader``, with a clear error and no workers left when the loader fails.

    When a worker was killed by a signal (the out-of-memory killer sends SIGKILL), the error
    says so whatever PyTorch raised. Workers are shut down before the error propagates, and
    when the generator is closed early (except ``persistent_workers``, which belong to the
    loader): a traceback kept by a notebook would otherwise keep them alive.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.arange(6)), batch_size=4)
        >>> [len(x) for (x,) in iterate(loader)]
        [4, 2]
    """
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader: expected a DataLoader or iterable, got {type(loader).__name__}")
    return _iterate(loader)


def _iterate(loader: Iterable) -> Iterator:
    batches = iter(loader)
    try:
        yield from batches
    except GeneratorExit:  # closed before the end: a `break`, or an error in the loop's body
        _clean_up(loader, batches, None)
        raise
    except (Exception, KeyboardInterrupt) as exc:
        # a dead worker's socket can reset (OSError, EOFError) a hair before its exit status
        wait = 1.0 if isinstance(exc, (OSError, EOFError)) else 0.0
        killed = _clean_up(loader, batches, None if isinstance(exc, KeyboardInterrupt) else wait)
        if killed and "killed by signal" not in str(exc):  # PyTorch's own message is clear
            pid, name = killed[0]
            raise RuntimeError(
                f"DataLoader worker (pid {pid}) was killed by {name} while loading "
                f"({type(exc).__name__}: {exc}); SIGKILL usually means out of memory (see "
                "`dmesg`): lower num_workers, prefetch_factor or batch_size"
            ) from exc
        raise


def _clean_up(loader: Iterable, batches: Iterator, wait: float | None) -> list[tuple[int, str]]:
    """Find killed workers (``wait=None``: don't), shut the others down; ``(pid, signal)``."""
    for _ in range(3):  # a SIGCHLD that arrived before the pause raises once more: retry
        try:
            with _sigchld_paused():
                killed = [] if wait is None else _killed_workers(batches, wait)
                if not getattr(loader, "persistent_workers", False):
                    getattr(batches, "_shutdown_workers", lambda: None)()  # join or terminate
                return killed
        except RuntimeError:
            continue
    return []
