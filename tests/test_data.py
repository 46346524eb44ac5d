"""Data: the offline FashionMNIST stand-in, loaders, samplers, image folders on disk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import d2lopt.data as data
from d2lopt import EpochRandomSampler, fashion_mnist, load_fashion_mnist, synthetic_fashion_mnist


def test_synthetic_data_is_deterministic_and_shaped_like_fashion_mnist() -> None:
    x1, y1 = synthetic_fashion_mnist(500, seed=3)
    x2, y2 = synthetic_fashion_mnist(500, seed=3)
    assert x1.shape == (500, 1, 28, 28) and x1.dtype == torch.uint8
    assert y1.dtype == torch.int64 and set(y1.tolist()) == set(range(10))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = synthetic_fashion_mnist(500, seed=4)
    assert not torch.equal(x1, x3)
    counts = torch.bincount(y1, minlength=10)
    assert counts.min() == counts.max() == 50  # balanced classes


def test_synthetic_data_is_learnable_but_not_trivial() -> None:
    """A linear classifier beats chance by far, yet stays clearly below 100 %.

    Small for testing efficiency (3000 images, 5 epochs, one thread); the step size is small
    enough that the run is stable: the same numbers, to the tolerance below, with 1 or 2
    threads and with AVX2 or AVX-512 kernels.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        x, y = synthetic_fashion_mnist(3000, seed=0)
        xt, yt = synthetic_fashion_mnist(2000, seed=1)
        x, xt = x.float().div(255).flatten(1), xt.float().div(255).flatten(1)
        net = nn.Linear(784, 10)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        with torch.no_grad():
            before = nn.functional.cross_entropy(net(x), y).item()
        for _ in range(5):
            for i in range(0, len(x), 200):
                loss = nn.functional.cross_entropy(net(x[i : i + 200]), y[i : i + 200])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            after = nn.functional.cross_entropy(net(x), y).item()
            accuracy = (net(xt).argmax(1) == yt).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert before == pytest.approx(2.331, abs=0.01)  # about ln(10): no better than chance
    assert after == pytest.approx(1.266, abs=0.05)
    assert accuracy == pytest.approx(0.595, abs=0.02)
    assert 0.5 < accuracy < 0.97  # chance is 0.1


def test_offline_fallback_is_announced_once(monkeypatch, capsys) -> None:
    def offline(root, train):
        raise RuntimeError("Error downloading: Name or service not known")

    monkeypatch.setattr(data, "_real_fashion_mnist", offline)
    monkeypatch.setattr(data, "_announced", set())
    monkeypatch.setattr(data, "_unreachable", set())
    images, labels, source = fashion_mnist(True, n=100)
    fashion_mnist(False, n=10)
    assert source == "synthetic" and images.shape == (100, 1, 28, 28) and len(labels) == 100
    err = capsys.readouterr().err
    assert err.count("synthetic stand-in") == 1


def test_real_source_fails_clearly_when_offline(monkeypatch) -> None:
    def offline(root, train):
        raise OSError("no network")

    monkeypatch.setattr(data, "_real_fashion_mnist", offline)
    try:
        fashion_mnist(True, source="real")
    except RuntimeError as exc:
        assert "use the 'synthetic' source" in str(exc)
    else:  # pragma: no cover - only reached if the download unexpectedly succeeded
        raise AssertionError("expected RuntimeError")


def test_synthetic_source_never_touches_the_network(monkeypatch) -> None:
    def forbidden(root, train):
        raise AssertionError("network used")

    monkeypatch.setattr(data, "_real_fashion_mnist", forbidden)
    _, _, source = fashion_mnist(False, source="synthetic", n=5)
    assert source == "synthetic"


def test_load_fashion_mnist_returns_float_batches() -> None:
    train_iter, test_iter = load_fashion_mnist(64, n_train=256, n_test=128, source="synthetic")
    X, y = next(iter(train_iter))
    assert X.shape == (64, 1, 28, 28) and X.dtype == torch.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert sum(len(b[0]) for b in test_iter) == 128


def test_epoch_random_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochRandomSampler(100, seed=1), EpochRandomSampler(100, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(100))
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(a) == list(a)  # iterating twice in the same epoch repeats the order


def test_image_folder_round_trip(tmp_path) -> None:
    from torchvision.datasets import ImageFolder

    root = data.write_image_folder(tmp_path / "imgs", n=40, size=32, fmt="png")
    plain = ImageFolder(str(root))
    assert len(plain) == 40 and len(plain.classes) == 10
    ds = data.image_folder(root, train=True, size=32)
    x, label = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= label < 10
    # a second call with the same parameters reuses the folder
    mtime = (root / "d2lopt-folder.json").stat().st_mtime_ns
    data.write_image_folder(tmp_path / "imgs", n=40, size=32, fmt="png")
    assert (root / "d2lopt-folder.json").stat().st_mtime_ns == mtime


def test_seed_worker_seeds_python_and_numpy() -> None:
    import random

    import numpy as np

    torch.manual_seed(77)
    data.seed_worker(0)
    first = (random.random(), np.random.rand())
    torch.manual_seed(77)
    data.seed_worker(0)
    assert (random.random(), np.random.rand()) == first
