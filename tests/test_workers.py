"""Failing DataLoader workers: clear errors, no hangs, no processes left behind.

The faults come from ``tests/faults.py`` (one bad sample each); timeouts are short, and every
test checks that the worker processes it started are gone afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import session_pids, wait_until_empty
from faults import HangAt, KillWorkerAt, RaiseAt, SampleError, WithSampleIndex
from torch.utils.data import DataLoader, TensorDataset

from d2lopt import TrainConfig, fit, mlp
from d2lopt.batches import iterate

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: tiny models, one thread
]

BAD = 37  # the faulty sample: in the 10th batch of 4, served by the second worker


def _children(pid: int) -> set[int]:
    """Descendants of ``pid`` (zombies included: an unreaped worker is a leak too)."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: walk /proc
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = set(), {pid}
        while frontier:
            frontier = {p for p, pp in parents.items() if pp in frontier} - found
            found |= frontier
        return found
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


@pytest.fixture
def no_leaked_workers():
    """Fail the test if it leaves worker processes behind."""
    before = _children(os.getpid())
    yield
    left = wait_until_empty(lambda: _children(os.getpid()) - before)
    assert not left, f"worker processes left behind: {sorted(left)}"


@pytest.fixture
def quick_shutdown(monkeypatch):
    """Stop a hung worker after a 0.5 s join instead of PyTorch's 5 s (small for testing
    efficiency): the join waits for a worker that will never answer, terminate() follows it
    either way, so what these tests check is unchanged."""
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.5)


@pytest.fixture(scope="module")
def data() -> TensorDataset:
    return TensorDataset(torch.arange(64, dtype=torch.float32).view(64, 1), torch.arange(64))


def _first_error(loader) -> tuple[BaseException, float]:
    """Iterate ``loader`` to its error; the iterator is gone when this returns."""
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        for _ in iterate(loader):
            pass
    return info.value, time.monotonic() - start


def test_worker_error_names_the_sample_and_the_original_error(data, no_leaked_workers) -> None:
    faulty = WithSampleIndex(RaiseAt(data, BAD, OSError("image file is truncated")))
    error, _ = _first_error(DataLoader(faulty, batch_size=4, num_workers=2))
    assert isinstance(error, SampleError)  # rebuilt in the main process from the worker's
    text = str(error)
    assert "DataLoader worker process" in text  # it happened in a worker...
    assert f"sample {BAD}: OSError: image file is truncated" in text  # ...at this sample
    assert "Original Traceback" in text  # with the worker's traceback


def test_default_fault_names_the_index_without_the_wrapper(data, no_leaked_workers) -> None:
    error, _ = _first_error(DataLoader(RaiseAt(data, BAD), batch_size=4, num_workers=2))
    assert isinstance(error, ValueError)  # the error's type survives the trip from the worker
    assert f"sample {BAD}: corrupt record" in str(error)


def test_the_wrapper_chains_the_original_error_in_the_main_process(data) -> None:
    faulty = WithSampleIndex(RaiseAt(data, BAD, KeyError("label")))
    with pytest.raises(SampleError, match=f"sample {BAD}: KeyError") as info:
        for _ in DataLoader(faulty, batch_size=4):
            pass
    assert isinstance(info.value.__cause__, KeyError)


def test_hung_worker_trips_the_timeout_and_is_stopped(
    data, no_leaked_workers, quick_shutdown
) -> None:
    loader = DataLoader(HangAt(data, BAD, seconds=60), batch_size=4, num_workers=2, timeout=1)
    error, elapsed = _first_error(loader)
    assert isinstance(error, RuntimeError) and "timed out after 1 seconds" in str(error)
    assert elapsed < 45  # 1 s timeout + the join before terminate(), with slack


def test_killed_worker_is_a_clear_error(data, no_leaked_workers) -> None:
    error, elapsed = _first_error(DataLoader(KillWorkerAt(data, BAD), batch_size=4, num_workers=2))
    # PyTorch's SIGCHLD check, its liveness check, or a reset socket: each is made explicit
    assert isinstance(error, RuntimeError)
    assert "killed by signal" in str(error) or "killed by SIGKILL" in str(error)
    assert elapsed < 45


def test_kill_fault_refuses_to_kill_the_main_process(data) -> None:
    with pytest.raises(RuntimeError, match="main process"):
        KillWorkerAt(data, 3)[3]


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        (lambda d: HangAt(d, BAD, seconds=60), "timed out"),
        (lambda d: KillWorkerAt(d, BAD), "killed by"),
        (lambda d: WithSampleIndex(RaiseAt(d, BAD)), f"sample {BAD}"),
    ],
    ids=["hang", "kill", "raise"],
)
def test_fit_ends_cleanly_when_a_worker_fails(
    data, fault, match, no_leaked_workers, quick_shutdown
) -> None:
    """Inside fit (checkpointing, so its signal handlers are installed when workers fork)."""
    images = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    loader = DataLoader(fault(images), batch_size=4, num_workers=2, timeout=1)
    config = TrainConfig(num_epochs=1, batch_size=4, device="cpu")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with tempfile.TemporaryDirectory() as out, pytest.raises(Exception, match=match):
        fit(mlp(), loader, None, config, out_dir=out, progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_no_orphans_after_the_process_ends(tmp_path) -> None:
    """A script whose worker hangs ends with one clear error and leaves no process behind."""
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})  # tests/faults.py
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from d2lopt.batches import iterate
        from faults import HangAt
        torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL = 0.5  # as quick_shutdown does
        data = TensorDataset(torch.arange(64.0))
        for _ in iterate(DataLoader(HangAt(data, {BAD}, 600), batch_size=4, num_workers=2,
                                    timeout=1)):
            pass
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == "RuntimeError: DataLoader timed out after 1 seconds"
    left = wait_until_empty(lambda: session_pids(proc.pid))
    assert not left, f"processes of the finished script still alive: {sorted(left)}"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: RaiseAt(d, 64), ValueError, r"index: must be in \[0, 64\)"),
        (lambda d: RaiseAt(d, -1), ValueError, "index"),
        (lambda d: RaiseAt(d, 1.0), TypeError, "index"),
        (lambda d: RaiseAt(d, 1, error="boom"), TypeError, "error"),
        (lambda d: RaiseAt(iter(range(3)), 0), TypeError, "dataset"),
        (lambda d: HangAt(d, 1, seconds=0), ValueError, "seconds"),
        (lambda d: KillWorkerAt(d, 1, signum=12345), ValueError, "signum"),
        (lambda d: WithSampleIndex(42), TypeError, "dataset"),
        (lambda d: iterate(42), TypeError, "loader"),
    ],
)
def test_faults_validate_their_arguments(data, make, error, match) -> None:
    with pytest.raises(error, match=match):
        make(data)
