"""Shared fixtures and markers for the d2lopt test suite."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: the venv's interpreter first, quiet progress bars."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine: one intra-op thread avoids spinning threads.

    Modules of tiny in-process training runs take it with ``pytest.mark.usefixtures``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def learner_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``write(name, source)``: a learner's module in the current folder, importable by name.

    What ``--dataset name:attr`` / ``--model name:attr`` see when a learner passes their own
    code: ``source`` (dedented) is written to ``tmp_path/name.py``, which becomes the current
    folder and the first entry of ``sys.path``; the module is forgotten afterwards, so the
    next test imports its own version.
    """
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.chdir(tmp_path)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------------------- leftover processes
def session_pids(sid: int) -> set[int]:
    """Processes in session ``sid``: what remains of a run started with ``start_new_session``.

    Workers and ranks inherit their parent's session, so this finds them even after the
    parent died and they were re-parented to init (an orphan that ``children()`` misses).
    """
    alive = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    alive.add(int(entry.name))
            except OSError:  # ended while we looked: not left over
                continue
    return alive


def wait_until_empty(probe: Callable[[], set[int]], timeout: float = 60.0) -> set[int]:
    """Poll ``probe()`` until it returns an empty set or ``timeout`` seconds pass; return it.

    Processes take a moment to exit after their parent has: the deadline is generous (a busy
    CI machine), and a clean run returns as soon as the set is empty.
    """
    deadline = time.monotonic() + timeout
    while (left := probe()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
