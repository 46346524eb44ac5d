"""TensorBoard events of a training run, read back with TensorBoard's own reader (issue 8).

A user opens a run with ``tensorboard --logdir <out>/tb`` (the command ``d2lopt train``
prints). These tests read the events with the ``EventAccumulator`` that TensorBoard's
scalar dashboard uses, so "written" means "TensorBoard can show it": the expected tags,
one point per epoch, the values of ``metrics.json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from d2lopt import TrainConfig, fit, init_weights, make_loader, mlp, synthetic_fashion_mnist

TRAIN_TAGS = ("train_loss", "samples_per_s")  # logged every epoch
EVAL_TAGS = ("test_loss", "test_acc")  # logged on evaluation epochs


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard's scalar dashboard loads them."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    assert list(log_dir.glob("events.out.tfevents.*")), f"no event files in {log_dir}"
    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every point
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_events_match_metrics(log_dir: Path, metrics_file: Path) -> None:
    """Every epoch of ``metrics.json`` is in the events, at step = epoch, with its value."""
    epochs = json.loads(metrics_file.read_text())["epochs"]
    scalars = read_scalars(log_dir)
    assert set(scalars) == {*TRAIN_TAGS, *EVAL_TAGS}
    for tag in (*TRAIN_TAGS, *EVAL_TAGS):
        expected = [(e["epoch"], e[tag]) for e in epochs if e[tag] is not None]
        steps = [step for step, _ in scalars[tag]]
        assert steps == [step for step, _ in expected], f"{tag}: one point per logged epoch"
        for (step, value), (_, want) in zip(scalars[tag], expected, strict=True):
            # events store float32: compare at float32 precision
            assert value == pytest.approx(want, rel=1e-6), f"{tag} at epoch {step}"


def test_fit_events_read_back_by_tensorboard(tmp_path: Path) -> None:
    x, y = synthetic_fashion_mnist(512, seed=0)
    xt, yt = synthetic_fashion_mnist(128, seed=1)
    train_set, test_set = TensorDataset(x.float() / 255, y), TensorDataset(xt.float() / 255, yt)
    # eval_every=2 over 3 epochs: evaluation after epochs 2 and 3 (the last) only
    config = TrainConfig(num_epochs=3, batch_size=128, device="cpu", eval_every=2)
    net = mlp()
    net.apply(init_weights)
    history = fit(
        net,
        make_loader(train_set, config, train=True),
        make_loader(test_set, config, train=False),
        config,
        out_dir=tmp_path,
        progress=False,
    )
    assert [r["test_loss"] is None for r in history] == [True, False, False]
    assert_events_match_metrics(tmp_path / "tb", tmp_path / "metrics.json")
    scalars = read_scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["train_loss"]] == [1, 2, 3]
    assert [step for step, _ in scalars["test_acc"]] == [2, 3]
    assert all(0.0 <= v <= 1.0 for _, v in scalars["test_acc"])


def test_fit_log_dir_overrides_the_default(tmp_path: Path) -> None:
    x, y = synthetic_fashion_mnist(256, seed=0)
    data = TensorDataset(x.float() / 255, y)
    config = TrainConfig(num_epochs=2, batch_size=128, device="cpu")
    fit(
        mlp(),
        make_loader(data, config, train=True),
        make_loader(data, config, train=False),
        config,
        out_dir=tmp_path / "run",
        log_dir=tmp_path / "board",
        progress=False,
    )
    assert not (tmp_path / "run" / "tb").exists()
    assert_events_match_metrics(tmp_path / "board", tmp_path / "run" / "metrics.json")


def test_cli_train_events_are_where_the_printed_command_points(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "d2lopt.cli", "train", "--epochs", "2", "--n-train", "512",
         "--n-test", "128", "--batch-size", "128", "--data", "synthetic", "--out", str(out),
         "--no-progress"],
        capture_output=True, text=True, env=cli_env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the run tells the user how to open it: `tensorboard --logdir <folder>`
    match = re.search(r"tensorboard --logdir (\S+)", proc.stdout)
    assert match, f"no TensorBoard command in the output:\n{proc.stdout}"
    log_dir = Path(match.group(1))
    assert log_dir.resolve() == (out / "tb").resolve()
    assert_events_match_metrics(log_dir, out / "metrics.json")
    assert [step for step, _ in read_scalars(log_dir)["test_loss"]] == [1, 2]
    assert torch.isfinite(torch.tensor([v for _, v in read_scalars(log_dir)["train_loss"]])).all()
