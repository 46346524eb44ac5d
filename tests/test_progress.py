"""Progress bars: shown to people, silent for CI (issue 8, item 2).

``fit`` and ``d2lopt train`` draw a tqdm bar; ``progress=False``, ``--no-progress`` and the
environment variable ``TQDM_DISABLE=1`` (set by ``make test`` and the notebook runs, so
strict nbval sees no bar) silence it completely: not one character on stderr.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from torch.utils.data import TensorDataset

from d2lopt import TrainConfig, fit, make_loader, mlp, synthetic_fashion_mnist

# A finished tqdm bar: "epoch: 100%|██████████| 2/2 [00:00<00:00, 9.87it/s]"
FINISHED_BAR = re.compile(r"100%\|[^|\n\r]*\| (\d+)/\1 \[")


@pytest.fixture(scope="module")
def data() -> TensorDataset:
    x, y = synthetic_fashion_mnist(256, seed=0)
    return TensorDataset(x.float() / 255, y)


def _fit(data: TensorDataset, **kwargs) -> None:
    config = TrainConfig(num_epochs=2, batch_size=128, device="cpu")
    loader = make_loader(data, config, train=True)
    fit(mlp(), loader, make_loader(data, config, train=False), config, **kwargs)


# ``fit`` with progress=None (tqdm decides) in a fresh interpreter: tqdm reads ``TQDM_*``
# variables once, when it is imported, so the environment must be set before the process starts.
FIT_SCRIPT = """
from torch.utils.data import TensorDataset
from d2lopt import TrainConfig, fit, make_loader, mlp, synthetic_fashion_mnist
x, y = synthetic_fashion_mnist(256, seed=0)
data = TensorDataset(x.float() / 255, y)
config = TrainConfig(num_epochs=2, batch_size=128, device="cpu")
fit(mlp(), make_loader(data, config, train=True), make_loader(data, config, train=False), config)
"""


def _fit_in_process(cli_env: dict[str, str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in cli_env.items() if k != "TQDM_DISABLE"}  # `make test` sets it
    return subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
    )


def test_fit_shows_a_progress_bar_by_default(cli_env) -> None:
    proc = _fit_in_process(cli_env)
    assert proc.returncode == 0, proc.stderr
    assert FINISHED_BAR.search(proc.stderr), f"no finished tqdm bar on stderr: {proc.stderr!r}"


def test_fit_is_silent_under_tqdm_disable(cli_env) -> None:
    proc = _fit_in_process(cli_env, TQDM_DISABLE="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"TQDM_DISABLE=1 run printed to stderr: {proc.stderr!r}"
    assert proc.stdout == ""


def test_fit_progress_true_shows_a_bar(data, capsys) -> None:
    _fit(data, progress=True)  # explicit: shown even where TQDM_DISABLE=1 is set
    err = capsys.readouterr().err
    assert FINISHED_BAR.search(err), f"no finished tqdm bar on stderr: {err!r}"


def test_fit_progress_false_is_silent(data, capsys) -> None:
    _fit(data, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "", f"progress=False printed to stderr: {captured.err!r}"
    assert captured.out == ""


def _train(cli_env: dict[str, str], tmp_path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in cli_env.items() if k != "TQDM_DISABLE"}  # a user's shell
    return subprocess.run(
        [sys.executable, "-m", "d2lopt.cli", "train", "--epochs", "2", "--n-train", "256",
         "--n-test", "128", "--batch-size", "128", "--data", "synthetic",
         "--out", str(tmp_path / "run"), *flags],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_cli_no_progress_is_silent(cli_env, tmp_path) -> None:
    proc = _train(cli_env, tmp_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"--no-progress printed to stderr: {proc.stderr!r}"
    assert "train_loss" in proc.stdout  # the results table still comes


def test_cli_progress_shows_a_bar(cli_env, tmp_path) -> None:
    proc = _train(cli_env, tmp_path, "--progress")
    assert proc.returncode == 0, proc.stderr
    assert FINISHED_BAR.search(proc.stderr), f"no finished bar on stderr: {proc.stderr!r}"
