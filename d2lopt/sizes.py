"""Experiment sizes: one knob, ``SIZE``, that every notebook's ``parameters`` cell holds.

The committed notebooks run at ``"ci"`` (small, seeded, what CI re-checks with strict
nbval). ``"full"`` is the bigger experiment a learner re-runs on a CPU, ``"gpu"`` the size
that gives a GPU enough work to measure. Re-run a notebook at another size with papermill
(the ``parameters`` tag is papermill's convention)::

    papermill --cwd notebooks notebooks/05_disk_to_memory.ipynb runs/05-full.ipynb -p SIZE full
    make experiment NB=notebooks/05_disk_to_memory.ipynb SIZE=full
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["SIZES", "for_size"]

SIZES = ("ci", "full", "gpu")

T = TypeVar("T")


def for_size(size: str, *, ci: T, full: T, gpu: T | None = None) -> T:
    """The value of a knob at experiment size ``size`` (``gpu`` defaults to ``full``).

    Example:
        >>> for_size("ci", ci=2_048, full=60_000)
        2048
        >>> for_size("gpu", ci=2_048, full=60_000)
        60000
        >>> for_size("huge", ci=1, full=2)
        Traceback (most recent call last):
        ...
        ValueError: SIZE: expected one of 'ci', 'full', 'gpu', got 'huge'; ...
    """
    if size not in SIZES:
        raise ValueError(
            f"SIZE: expected one of {', '.join(map(repr, SIZES))}, got {size!r}; "
            "set it in the notebook's parameters cell or with papermill -p SIZE full"
        )
    if size == "ci":
        return ci
    if size == "gpu" and gpu is not None:
        return gpu
    return full
