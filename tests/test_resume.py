"""Interrupted training loses nothing: real signals to a real ``d2lopt train``, then --resume.

Runs are subprocesses on a small FashionMNIST-format folder (3000 + 500 synthetic images
written as the idx files torchvision reads, so no run generates the 60k stand-in) with one
torch thread: small for testing efficiency, identical arithmetic in every run.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import session_pids, wait_until_empty
from torch.utils.data import DataLoader, TensorDataset

import d2lopt.checkpoint as ckpt_mod
from d2lopt import TrainConfig, TrainingInterrupted, fit, init_weights, mlp
from d2lopt.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from d2lopt.data import synthetic_fashion_mnist

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: tiny models, one thread
]

# what describes the run rather than the training: a resumed run differs only there
TIMING = ("epoch_time", "eval_time", "samples_per_s", "resumed")
RUN = ["--data", "real", "--epochs", "3", "--batch-size", "32", "--no-progress"]


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Environment of every run: the small data folder, one thread, no progress bars."""
    root = tmp_path_factory.mktemp("d2lopt-data")
    raw = root / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 3000, 0), ("t10k", 500, 1)):
        images, labels = synthetic_fashion_mnist(n, seed=seed)
        header = struct.pack(">IIII", 0x803, n, 28, 28)  # idx3: unsigned bytes, 3 dims
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
        header = struct.pack(">II", 0x801, n)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            header + labels.to(torch.uint8).numpy().tobytes()
        )
    env = dict(os.environ)
    env.update(D2LOPT_DATA=str(root), TQDM_DISABLE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _train(out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "d2lopt.cli", "train", "--out", str(out), *RUN, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _strip(metrics: dict) -> dict:
    epochs = [{k: v for k, v in e.items() if k not in TIMING} for e in metrics["epochs"]]
    return {"config": metrics["config"], "epochs": epochs}


# Runs `d2lopt train` (argv after the first three) with a global optimizer-step hook that,
# at the given step, creates READY and then waits for GO: the test signals the run while it
# is held there, so the signal lands at that exact step on any machine, however loaded.
_PAUSE_AT_STEP = """
import runpy, sys, time
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_post_hook

ready, go, at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
steps = 0

def pause(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == at:
        ready.touch()
        deadline = time.monotonic() + 240
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the signal's Python handler runs in here

register_optimizer_step_post_hook(pause)
sys.argv = ["d2lopt", *sys.argv[4:]]
runpy.run_module("d2lopt.cli", run_name="__main__", alter_sys=True)
"""
STEPS_PER_EPOCH = math.ceil(3000 / 32)  # the data folder's 3000 training images, --batch-size


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> dict:
    """metrics.json of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    proc = _train(out, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    ("signum", "whole_group", "extra"),
    [
        (signal.SIGINT, False, []),
        (signal.SIGTERM, False, []),
        (signal.SIGINT, True, ["--num-workers", "2"]),  # Ctrl-C: the workers get it too
        (signal.SIGTERM, True, ["--num-workers", "2", "--persistent-workers"]),  # cluster stop
    ],
    ids=["SIGINT", "SIGTERM", "SIGINT-group-workers", "SIGTERM-group-workers"],
)
def test_signal_saves_and_resume_matches_an_uninterrupted_run(
    env, reference, tmp_path, signum, whole_group, extra
) -> None:
    out, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    at = STEPS_PER_EPOCH + 5  # the 5th step of epoch 2
    cmd = [sys.executable, "-c", _PAUSE_AT_STEP, str(ready), str(go), str(at),
           "train", "--out", str(out), *RUN, *extra]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,  # its own process group, like a job in a terminal
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # generous: a busy CI machine
        while not ready.exists():  # the run is held at its step: no race with its progress
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"step {at} not reached in time"
            time.sleep(0.05)
        (os.killpg if whole_group else os.kill)(proc.pid, signum)
        go.touch()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    assert proc.returncode == 128 + signum, err  # the shell's convention for "ended by signal"
    assert "Traceback" not in err
    assert f"{signal.Signals(signum).name} received; checkpoint saved" in err
    assert "--resume" in err
    left = wait_until_empty(lambda: session_pids(proc.pid))
    assert not left, f"worker processes outlived the interrupted run: {sorted(left)}"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1, "the signal landed in epoch 2"
    # the step in progress completes and is saved, the next one never starts (even when the
    # signal also ended the workers: nothing more is asked of them)
    assert state["step"] == 5, state["step"]
    assert not list(out.glob(".*.tmp")), "a temporary checkpoint file was left behind"

    resumed = _train(out, env, "--resume", *extra)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((out / "metrics.json").read_text())
    expected = _strip(reference)
    for key in ("num_workers", "persistent_workers"):  # loading only: the order is the
        expected["config"][key] = result["config"][key]  # sampler's, so workers change no number
    assert _strip(result) == expected


# ---------------------------------------------------------------------------- in process
@pytest.fixture(scope="module")
def small() -> tuple[TensorDataset, TensorDataset]:
    x, y = synthetic_fashion_mnist(600, seed=0)
    xt, yt = synthetic_fashion_mnist(200, seed=1)
    return TensorDataset(x.float() / 255, y), TensorDataset(xt.float() / 255, yt)


class _SignalAtStep(torch.nn.Module):
    """A loss that sends SIGINT to this very process at its ``step``-th call (deterministic)."""

    def __init__(self, step: int, times: int = 1) -> None:
        super().__init__()
        self.calls, self.step, self.times = 0, step, times
        self.loss = torch.nn.CrossEntropyLoss(reduction="none")

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.step:
            for _ in range(self.times):
                # to this thread, not the process: a process-directed signal may land on one
                # of torch's worker threads, run its handler late, and two of them merge into
                # one (the kernel does not queue a pending signal twice)
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        return self.loss(out, y)


def _fit_shuffled(small, config, **kwargs):
    """fit on a plain ``DataLoader(shuffle=True)``: its order comes from the global torch RNG."""
    torch.manual_seed(config.seed)
    net = mlp(dropout=0.3)  # dropout draws from the torch RNG during training too
    net.apply(init_weights)
    train_iter = DataLoader(small[0], batch_size=config.batch_size, shuffle=True)
    test_iter = DataLoader(small[1], batch_size=100)
    return fit(net, train_iter, test_iter, config, progress=False, **kwargs)


def test_mid_epoch_resume_restores_every_rng_in_process(small, tmp_path) -> None:
    config = TrainConfig(num_epochs=3, batch_size=50, device="cpu", seed=4)
    reference = _fit_shuffled(small, config)
    with pytest.raises(TrainingInterrupted) as info:
        _fit_shuffled(small, config, out_dir=tmp_path, criterion=_SignalAtStep(12 + 2 + 5))
    assert info.value.signum == signal.SIGINT and info.value.path == tmp_path / "checkpoint.pt"
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 5)  # 12 steps + 2 eval batches + 5 steps
    resumed = _fit_shuffled(small, config, out_dir=tmp_path, resume=True)

    def strip(history):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in history]

    assert strip(resumed) == strip(reference)


class _CountTrainedSamples(torch.nn.Module):
    """The default per-sample loss, counting the samples of training steps (grad enabled)."""

    def __init__(self) -> None:
        super().__init__()
        self.trained = 0
        self.loss = torch.nn.CrossEntropyLoss(reduction="none")

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # evaluation runs under inference_mode
            self.trained += y.shape[0]
        return self.loss(out, y)


def test_resumed_epoch_speed_counts_only_the_samples_trained_after_resuming(
    small, tmp_path
) -> None:
    config = TrainConfig(num_epochs=2, batch_size=50, device="cpu", seed=4)
    with pytest.raises(TrainingInterrupted):  # 12 steps + 2 eval batches + 5 steps of epoch 2
        _fit_shuffled(small, config, out_dir=tmp_path, criterion=_SignalAtStep(12 + 2 + 5))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 5
    counter = _CountTrainedSamples()
    first, resumed = _fit_shuffled(small, config, out_dir=tmp_path, resume=True, criterion=counter)
    assert counter.trained == len(small[0]) - 5 * 50 == 350  # the rest of epoch 2 only
    # samples/s x seconds gives back the samples the rate was computed from: those trained
    # in the timed part (the whole epoch's 600 would inflate the rate by 600/350)
    assert resumed["samples_per_s"] * resumed["epoch_time"] == pytest.approx(counter.trained)
    assert first["samples_per_s"] * first["epoch_time"] == pytest.approx(len(small[0]))
    assert resumed["train_loss"] == pytest.approx(  # the loss still covers the whole epoch
        _fit_shuffled(small, config)[1]["train_loss"]
    )


def test_a_second_signal_stops_at_once_without_saving(small, tmp_path) -> None:
    config = TrainConfig(num_epochs=3, batch_size=50, device="cpu")
    # fit hands the second signal back to the handler it found: make that Python's own
    # Ctrl-C handler, whatever an earlier test in this process left installed
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _fit_shuffled(small, config, out_dir=tmp_path, criterion=_SignalAtStep(19, times=2))
        state = load_checkpoint(tmp_path / "checkpoint.pt")
        assert (state["epoch"], state["step"]) == (1, 0)  # the end of epoch 1 is still there
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, earlier)


def test_checkpoint_holds_model_optimizer_scaler_and_every_rng(small, tmp_path) -> None:
    config = TrainConfig(num_epochs=1, batch_size=100, device="cpu")
    _fit_shuffled(small, config, out_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "optimizer", "scaler", "epoch", "step", "history", "config"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["optimizer"]["state"], "SGD momentum buffers are part of the state"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        assert "cuda" in state["rng"]


def test_rng_state_round_trip() -> None:
    saved = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3).tolist())
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(3).tolist()) == first
    with pytest.raises(ValueError, match="state: expected the dict returned by"):
        set_rng_state({"torch": saved["torch"]})


def _fake_cuda(monkeypatch, gpus: int, current: int) -> dict[str, list]:
    """A CUDA machine of ``gpus`` GPUs as far as rng_state/set_rng_state ask (no GPU needed)."""
    calls: dict[str, list] = {"set": [], "got": []}
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(gpus)]

    def get_rng_state(device="cuda"):
        calls["got"].append(device)
        return states[device]

    def set_rng_state(state, device="cuda"):
        if device >= gpus:  # what torch.cuda.default_generators[idx] raises
            raise IndexError("list index out of range")
        calls["set"].append((device, state.clone()))

    def set_rng_state_all(new_states):
        for i, s in enumerate(new_states):
            set_rng_state(s, i)

    def get_rng_state_all():
        return list(states)

    for name, value in [("is_available", lambda: True), ("is_initialized", lambda: True),
                        ("current_device", lambda: current), ("get_rng_state", get_rng_state),
                        ("set_rng_state", set_rng_state), ("get_rng_state_all", get_rng_state_all),
                        ("set_rng_state_all", set_rng_state_all)]:  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, value)
    return calls


def test_rng_state_saves_only_this_ranks_device_generator(monkeypatch) -> None:
    """Issue 24.7: one state (this rank's GPU), restored into this rank's GPU on a node
    with fewer GPUs; get_rng_state_all/set_rng_state_all would raise IndexError there."""
    calls = _fake_cuda(monkeypatch, gpus=4, current=3)
    saved = rng_state()
    assert isinstance(saved["cuda"], torch.Tensor) and saved["cuda"].shape == (16,)
    assert calls["got"] == [3] and int(saved["cuda"][0]) == 3  # rank 3's generator, alone
    calls = _fake_cuda(monkeypatch, gpus=1, current=0)  # the job moved to a one-GPU node
    set_rng_state(saved)
    assert [(d, int(s[0])) for d, s in calls["set"]] == [(0, 3)]


def test_an_older_checkpoints_list_of_generators_restores_the_current_one(monkeypatch) -> None:
    calls = _fake_cuda(monkeypatch, gpus=1, current=0)
    old = rng_state() | {"cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]}
    set_rng_state(old)
    assert [(d, int(s[0])) for d, s in calls["set"]] == [(0, 0)]
    calls = _fake_cuda(monkeypatch, gpus=8, current=5)
    set_rng_state(old)  # more GPUs than were saved: this one's generator stays as it is
    assert calls["set"] == []


def test_the_loader_generator_state_is_saved(small, tmp_path) -> None:
    config = TrainConfig(num_epochs=1, batch_size=100, device="cpu", seed=2)
    from d2lopt import make_loader

    torch.manual_seed(2)
    loader = make_loader(small[0], config, train=True)
    fit(mlp(), loader, None, config, out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert torch.equal(state["loader_rng"], loader.generator.get_state())


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint", os.urandom(2048), "truncated"],
    ids=["empty", "text", "random", "truncated"],
)
def test_corrupt_checkpoint_is_a_clear_error(small, tmp_path, content) -> None:
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "epoch": 1})
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt") as info:
        load_checkpoint(path)
    assert "delete it" in str(info.value)
    config = TrainConfig(num_epochs=2, batch_size=100, device="cpu")
    with pytest.raises(ValueError, match="corrupt"):
        _fit_shuffled(small, config, out_dir=tmp_path, resume=True)


class _RunsCode:
    """Unpickling this creates a folder: stands for any code a malicious checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the plain pickle
def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path) -> None:
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "code-ran"
    torch.save({"model": {}, "epoch": 1, "x": _RunsCode(marker)}, path)  # bypasses our checks
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(path, "wb") as f:  # a plain pickle, not even a torch file
        pickle.dump({"model": {}, "epoch": _RunsCode(marker)}, f)
    with pytest.raises(ValueError):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_refuses_what_weights_only_loading_would_refuse(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"payload\['stats'\]\['mean'\] is a numpy.float64"):
        save_checkpoint(path, {"model": {}, "epoch": 0, "stats": {"mean": np.float64(0.5)}})
    assert not path.exists()
    payload = {  # everything the check lets through, torch.load(weights_only=True) loads
        "model": {"w": torch.nn.Parameter(torch.ones(2))}, "epoch": 3, "flag": True,
        "gauss": None, "name": "x", "raw": b"\x00", "c": 1j, "shape": torch.Size([2]),
        "dtype": torch.float16, "device": torch.device("cpu"), "seen": {1, 2},
        "pairs": [(1, 2.5)],
    }  # fmt: skip
    save_checkpoint(path, payload)
    assert load_checkpoint(path)["shape"] == torch.Size([2])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"batch_size": 60}, "batch_size=100"),
        ({"lr": 0.1}, "lr=0.05"),
        ({"seed": 1}, "seed=0"),
        ({"num_epochs": 1}, r"TrainConfig.num_epochs: .* set num_epochs >= 2"),
    ],
    ids=["batch_size", "lr", "seed", "fewer-epochs"],
)
def test_resume_with_a_mismatched_config_is_refused(small, tmp_path, change, match) -> None:
    config = TrainConfig(num_epochs=2, batch_size=100, device="cpu")
    _fit_shuffled(small, config, out_dir=tmp_path)
    changed = TrainConfig(**{**config.to_dict(), **change})
    with pytest.raises(ValueError, match=match):
        _fit_shuffled(small, changed, out_dir=tmp_path, resume=True)


def test_resume_with_other_data_or_model_is_refused(small, tmp_path) -> None:
    config = TrainConfig(num_epochs=2, batch_size=100, device="cpu")
    _fit_shuffled(small, TrainConfig(num_epochs=1, batch_size=100, device="cpu"), out_dir=tmp_path)
    fewer = TensorDataset(*small[0][:500])
    with pytest.raises(ValueError, match="trained on 600 samples, this run has 500"):
        fit(mlp(), DataLoader(fewer, batch_size=100), None, config, out_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="do not fit this net.*same --model"):
        fit(mlp(hidden=64), DataLoader(small[0], batch_size=100), None, config,
            out_dir=tmp_path, resume=True)  # fmt: skip
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}, "epoch": 1})
    with pytest.raises(ValueError, match="lacks optimizer.*not written by d2lopt.fit"):
        _fit_shuffled(small, config, out_dir=tmp_path, resume=True)
