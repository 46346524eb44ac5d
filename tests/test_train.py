"""fit(): the training loop, its outputs, its switches and exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

import d2lopt.data as data_mod
from d2lopt import TrainConfig, cnn, fit, init_weights, make_loader, mlp, synthetic_fashion_mnist
from d2lopt.distributed import Replicas

# what describes the run rather than the training: a resumed run differs only there
TIMING = ("epoch_time", "eval_time", "samples_per_s", "resumed")


@pytest.fixture(scope="module")
def datasets():
    x, y = synthetic_fashion_mnist(1200, seed=0)
    xt, yt = synthetic_fashion_mnist(300, seed=1)
    return TensorDataset(x.float() / 255, y), TensorDataset(xt.float() / 255, yt)


def _run(datasets, config, **kwargs):
    torch.manual_seed(config.seed)
    net = mlp()
    net.apply(init_weights)
    train_iter = make_loader(datasets[0], config, train=True)
    test_iter = make_loader(datasets[1], config, train=False)
    return net, fit(net, train_iter, test_iter, config, progress=False, **kwargs)


def _strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def test_fit_learns_and_reports_every_epoch(datasets) -> None:
    _, history = _run(datasets, TrainConfig(num_epochs=3, batch_size=64, device="cpu"))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.3  # chance is 0.1
    for r in history:  # the rate is every training sample of the epoch over the epoch's time
        assert r["epoch_time"] > 0
        assert r["samples_per_s"] == pytest.approx(len(datasets[0]) / r["epoch_time"])
        assert math.isfinite(r["test_loss"])


def test_fit_is_deterministic_for_a_seed(datasets) -> None:
    cfg = TrainConfig(num_epochs=2, batch_size=64, device="cpu", seed=5)
    assert _strip(_run(datasets, cfg)[1]) == _strip(_run(datasets, cfg)[1])


def test_eval_every_skips_evaluation_but_always_evaluates_last(datasets) -> None:
    cfg = TrainConfig(num_epochs=3, batch_size=128, device="cpu", eval_every=2)
    _, history = _run(datasets, cfg)
    assert [r["test_loss"] is None for r in history] == [True, False, False]


def test_fit_writes_metrics_tensorboard_and_checkpoint(datasets, tmp_path) -> None:
    cfg = TrainConfig(num_epochs=2, batch_size=128, device="cpu")
    _, history = _run(datasets, cfg, out_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["batch_size"] == 128
    assert [r["train_loss"] for r in metrics["epochs"]] == [r["train_loss"] for r in history]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_fit_refuses_to_overwrite_a_run(datasets, tmp_path) -> None:
    cfg = TrainConfig(num_epochs=1, batch_size=256, device="cpu")
    _run(datasets, cfg, out_dir=tmp_path)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        _run(datasets, cfg, out_dir=tmp_path)


def test_resume_continues_exactly_like_an_uninterrupted_run(datasets, tmp_path) -> None:
    full = TrainConfig(num_epochs=4, batch_size=64, device="cpu", seed=3)
    _, reference = _run(datasets, full)
    half = TrainConfig(num_epochs=2, batch_size=64, device="cpu", seed=3)
    _run(datasets, half, out_dir=tmp_path)
    _, resumed = _run(datasets, full, out_dir=tmp_path, resume=True)
    assert _strip(resumed) == _strip(reference)


def test_resume_refuses_a_changed_experiment(datasets, tmp_path) -> None:
    _run(datasets, TrainConfig(num_epochs=1, batch_size=64, device="cpu"), out_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size=64"):
        _run(
            datasets,
            TrainConfig(num_epochs=2, batch_size=32, device="cpu"),
            out_dir=tmp_path,
            resume=True,
        )


def test_amp_bf16_and_channels_last_run_on_cpu(datasets) -> None:
    cfg = TrainConfig(num_epochs=1, batch_size=128, device="cpu", amp="bf16", channels_last=True)
    net = cnn(width=8)
    history = fit(
        net,
        make_loader(datasets[0], cfg, train=True),
        make_loader(datasets[1], cfg, train=False),
        cfg,
        progress=False,
    )
    assert math.isfinite(history[0]["train_loss"])
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_pin_memory_without_cuda_is_announced_once(datasets, capsys, monkeypatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only notice")
    monkeypatch.setattr(data_mod, "_announced", set())  # notice_once's memory of this process
    cfg = TrainConfig(num_epochs=1, batch_size=256, device="cpu", pin_memory=True)
    loader = make_loader(datasets[0], cfg, train=True)
    assert loader.pin_memory is False
    _run(datasets, cfg)
    assert capsys.readouterr().err.count("pin_memory needs CUDA") == 1


def test_workers_follow_the_config(datasets) -> None:
    cfg = TrainConfig(
        num_epochs=1, batch_size=256, device="cpu", num_workers=1, prefetch_factor=3,
        persistent_workers=True,
    )  # fmt: skip
    loader = make_loader(datasets[0], cfg, train=True)
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (1, 3, True)
    _, history = _run(datasets, cfg)
    assert len(history) == 1


def test_fit_type_checks_its_config(datasets) -> None:
    with pytest.raises(TypeError, match="TrainConfig"):
        fit(mlp(), [], None, {"num_epochs": 1})  # type: ignore[arg-type]


def test_accumulating_two_micro_batches_equals_one_batch_of_both(datasets) -> None:
    # fit's accumulation switch (the DDP program's --accumulate), on one process: two
    # micro-batches of 8 in sequence, one optimizer step, are one step on the 16 samples
    sixteen = torch.utils.data.Subset(datasets[0], range(64))
    results = []
    for batch, accumulate in ((16, 1), (8, 2)):
        cfg = TrainConfig(num_epochs=2, batch_size=batch, device="cpu", seed=1)
        torch.manual_seed(1)
        net = mlp()
        net.apply(init_weights)
        loader = torch.utils.data.DataLoader(sixteen, batch_size=batch)  # the same order
        history = fit(net, loader, None, cfg, progress=False,
                      replicas=Replicas(accumulate=accumulate))  # fmt: skip
        results.append((net.state_dict(), history))
    (one, one_history), (acc, acc_history) = results
    for key in one:
        torch.testing.assert_close(acc[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    assert [r["steps"] for r in acc_history] == [r["steps"] for r in one_history] == [4, 4]
    assert acc_history[-1]["train_loss"] == pytest.approx(one_history[-1]["train_loss"])


def test_compile_books_the_first_step_apart_from_the_epoch(datasets, monkeypatch) -> None:
    """Issue 24.8: with --compile the first step (compilation, lazy CUDA start) is timed
    apart: epoch 1's samples/s covers the other steps only. A simulated clock: the first
    forward takes 10 s (compiling), every later one 1 s."""
    import types

    import d2lopt.timing as timing

    clock = {"now": 0.0, "forwards": 0}
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))

    class Slow(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            if self.training:
                clock["now"] += 10.0 if clock["forwards"] == 0 else 1.0
                clock["forwards"] += 1
            return self.net(X)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Slow(model))
    config = TrainConfig(num_epochs=2, batch_size=50, device="cpu", seed=0, compile=True)
    _, (first, second) = _run(datasets, config)
    steps = first["steps"]
    assert first["compile_time"] == 10.0 and second["compile_time"] == 0.0
    assert first["epoch_time"] == steps - 1.0  # the other steps, 1 s each
    assert first["samples_per_s"] == pytest.approx(50.0)  # (N - 50) samples in (steps - 1) s
    assert second["epoch_time"] == steps and second["samples_per_s"] == pytest.approx(50.0)
    _, plain = _run(datasets, TrainConfig(num_epochs=1, batch_size=50, device="cpu", seed=0))
    assert "compile_time" not in plain[0]  # the records without --compile are unchanged
