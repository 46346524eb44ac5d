"""Correctness of d2lopt.lab.peers: the ladder's peers as their own book and docs run them.

Tiny tensors on the CPU: each test checks settings or that training happened, never speed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from d2lopt.lab import peers

CPU = torch.device("cpu")


def _two_blobs(n: int = 64, seed: int = 0) -> TensorDataset:
    """Two classes of 1x4x4 images, means -2 and +2: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    X = torch.randn(n, 1, 4, 4, generator=g) + (4.0 * y - 2.0).view(-1, 1, 1, 1)
    return TensorDataset(X, y)


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))


def _filled(net: nn.Module, value: float = 0.125) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


# ------------------------------------------------------------------------------------- d2l
@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
def test_the_book_loaders_have_exactly_d2ls_settings() -> None:
    d2l = pytest.importorskip("d2l.torch")
    train, test = peers.d2l_book_loaders(_two_blobs(), _two_blobs(seed=1), 16)
    for loader in (train, test):
        assert loader.num_workers == d2l.get_dataloader_workers()
        assert loader.batch_size == 16 and not loader.pin_memory
        assert not loader.persistent_workers and loader.prefetch_factor == 2  # defaults
    assert type(train.sampler) is RandomSampler and type(test.sampler) is SequentialSampler


def test_the_books_train_ch6_learns_a_learnable_set_with_finite_metrics() -> None:
    pytest.importorskip("d2l.torch")
    train = DataLoader(_two_blobs(), 16, shuffle=True)
    test = DataLoader(_two_blobs(seed=1), 16)
    out = peers.d2l_book_train(_tiny_cnn(), train, test, num_epochs=3, lr=0.1, device=CPU)
    assert set(out) == {"train_loss", "train_acc", "test_acc", "examples_per_s"}
    assert all(math.isfinite(v) for v in out.values())
    assert out["test_acc"] >= 0.9 and out["examples_per_s"] > 0


def test_the_book_reinitializes_linear_and_conv_weights_the_loop_copy_does_not() -> None:
    pytest.importorskip("d2l.torch")
    data = DataLoader(_two_blobs(16), 8)
    # lr=0: the weights move only by (re-)initialization
    book = _filled(_tiny_cnn())
    peers.d2l_book_train(book, data, data, num_epochs=1, lr=0.0, device=CPU)
    loop = _filled(_tiny_cnn())
    peers.d2l_train_ch6(loop, data, data, 1, 0.0, CPU, 0.9, init=False)
    for m in (book[0], book[3]):  # xavier on weights only, as train_ch6's init_weights
        assert not torch.all(m.weight == 0.125) and torch.all(m.bias == 0.125)
    assert all(torch.all(p == 0.125) for p in loop.parameters())


# ------------------------------------------------------------------------------- Lightning
@pytest.fixture
def fabric_data(monkeypatch):
    pytest.importorskip("lightning")
    import lightning.fabric.utilities.data as fabric_data

    return fabric_data


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 1), (8, 7)])
def test_the_guide_on_a_cpu_keeps_fp32_and_takes_the_warnings_worker_count(
    monkeypatch, fabric_data, cpus, workers
) -> None:
    monkeypatch.setattr(fabric_data, "_num_cpus_available", lambda: cpus)
    monkeypatch.setattr(peers, "_start_method", lambda: "fork")
    guide = peers.lightning_guide(CPU)
    assert guide["precision"] == "32-true" and guide["num_workers"] == workers
    assert guide["pin_memory"] is False and guide["persistent_workers"] is False
    assert set(guide["why"]) == {"precision", "num_workers", "pin_memory", "persistent_workers"}
    assert all(isinstance(w, str) and w for w in guide["why"].values())


def test_the_guide_asks_for_persistent_workers_only_where_workers_spawn(
    monkeypatch, fabric_data
) -> None:
    monkeypatch.setattr(peers, "_start_method", lambda: "spawn")
    assert peers.lightning_guide(CPU)["persistent_workers"] is True


@pytest.mark.parametrize("bf16, precision", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_the_guide_on_cuda_picks_mixed_precision_and_pinned_memory(
    monkeypatch, fabric_data, bf16, precision
) -> None:
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["including_emulation"] = including_emulation
        return bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    guide = peers.lightning_guide(torch.device("cuda"))
    assert guide["precision"] == precision and guide["pin_memory"] is True
    assert asked == {"including_emulation": False}  # real bf16 units, not emulation


def test_the_lightning_loaders_take_the_guides_settings(monkeypatch, fabric_data) -> None:
    monkeypatch.setattr(peers, "_start_method", lambda: "spawn")
    guide = peers.lightning_guide(CPU)
    train, val = peers.lightning_loaders(_two_blobs(), _two_blobs(seed=1), 16, guide)
    for loader in (train, val):
        assert loader.num_workers == guide["num_workers"] > 0 and loader.batch_size == 16
        assert loader.persistent_workers and not loader.pin_memory
    assert type(train.sampler) is RandomSampler and type(val.sampler) is SequentialSampler


def _fit(root, defaults: bool):
    train = DataLoader(_two_blobs(), 16, shuffle=True)
    val = DataLoader(_two_blobs(seed=1), 16)
    net = _tiny_cnn()
    before = [p.detach().clone() for p in net.parameters()]
    trainer = peers.lightning_fit(
        net, train, val, max_epochs=2, lr=0.1, momentum=0.9, device=CPU,
        precision="32-true", root_dir=root, defaults=defaults,
    )  # fmt: skip
    moved = any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    return trainer, moved


def test_lightning_fit_with_defaults_checkpoints_and_logs_under_root_dir(
    tmp_path, monkeypatch
) -> None:
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    trainer, moved = _fit(root, defaults=True)
    assert moved and trainer.global_step == 2 * 4 and trainer.current_epoch == 2
    assert list(root.rglob("*.ckpt")), "the default ModelCheckpoint saved nothing"
    logs = [p for p in (root / "lightning_logs").rglob("*") if p.is_file()]
    assert any(p.suffix != ".ckpt" for p in logs), "the default logger wrote nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing in the cwd


def test_lightning_fit_without_defaults_writes_nothing(tmp_path, monkeypatch) -> None:
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    trainer, moved = _fit(tmp_path / "root", defaults=False)
    assert moved and trainer.global_step == 2 * 4
    assert trainer.logger is None and trainer.checkpoint_callback is None
    assert list(tmp_path.iterdir()) == []
