"""d2lopt.input_pipelines: thread loader, decode once, batched decode (correctness only)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2lopt.data import EpochRandomSampler
from d2lopt.lab.input_pipelines import (
    DeviceAugmentLoader,
    GpuDecodeLoader,
    ThreadLoader,
    decode_images,
    read_encoded,
)
from d2lopt.lab.tuning import standard_dataset

DS = TensorDataset(torch.arange(60.0).view(30, 2), torch.arange(30))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """The standard test split: 24 JPEGs of 16 px (eval transform: decode + normalize)."""
    return standard_dataset(24, 16, train=False, root=tmp_path_factory.mktemp("jpegs"))


def _loader_threads() -> int:
    return sum(t.name.startswith("d2lopt-loader") for t in threading.enumerate())


def test_thread_loader_gives_the_dataloaders_batches_in_the_samplers_order() -> None:
    sampler = EpochRandomSampler(len(DS), seed=3)
    sampler.set_epoch(1)
    ours = list(ThreadLoader(DS, batch_size=8, num_threads=3, sampler=sampler))
    theirs = list(DataLoader(DS, batch_size=8, sampler=sampler))
    assert len(ours) == len(theirs) == 4
    for (x1, y1), (x2, y2) in zip(ours, theirs, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_thread_loader_stops_its_threads_after_an_early_break() -> None:
    loader = ThreadLoader(DS, batch_size=2, num_threads=2, prefetch=3)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert _loader_threads() == 0
    assert len(loader) == 15 and sum(len(y) for _, y in loader) == 30


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0, "num_threads": 1}, "batch_size"),
        ({"batch_size": 2, "num_threads": 0}, "num_threads"),
        ({"batch_size": 2, "num_threads": 1, "prefetch": True}, "prefetch"),
    ],
)
def test_thread_loader_rejects_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ThreadLoader(DS, **kwargs)
    with pytest.raises(TypeError, match="dataset"):
        ThreadLoader(42, batch_size=2, num_threads=1)


def test_decode_once_then_evaluate_equals_the_per_sample_pipeline(jpegs) -> None:
    cache = decode_images(jpegs.samples)
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (24, 3, 16, 16)
    assert cache.mib == 24 * 3 * 16 * 16 / 2**20
    assert cache.labels.tolist() == jpegs.targets
    batches = list(DeviceAugmentLoader(cache.images, cache.labels, batch_size=10, size=16,
                                       train=False))  # fmt: skip
    X = torch.cat([b[0] for b in batches])
    reference = torch.stack([jpegs[i][0] for i in range(len(jpegs))])
    torch.testing.assert_close(X, reference, atol=1e-6, rtol=0)  # same decoder, same numbers
    assert [len(b[1]) for b in batches] == [10, 10, 4]


def test_batched_decode_gives_the_same_images_as_decode_once(jpegs) -> None:
    cache = decode_images(jpegs.samples)
    encoded = read_encoded(jpegs.samples)
    assert encoded.labels.tolist() == cache.labels.tolist()
    ours = list(GpuDecodeLoader(encoded, batch_size=8, size=16, train=False, device="cpu"))
    ref = list(DeviceAugmentLoader(cache.images, cache.labels, batch_size=8, size=16,
                                   train=False))  # fmt: skip
    for (x1, y1), (x2, y2) in zip(ours, ref, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_training_batches_are_reshuffled_and_augmented_each_epoch_reproducibly() -> None:
    images = torch.arange(12 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8)
    images = images.view(12, 3, 8, 8)
    labels = torch.arange(12)

    def epochs(seed: int) -> list[list[torch.Tensor]]:
        loader = DeviceAugmentLoader(images, labels, batch_size=5, size=6, seed=seed)
        orders = [[y for _, y in loader] for _ in range(2)]
        return orders, [X for X, _ in loader]

    (first, second), xs = epochs(0)
    (again, _), xs_again = epochs(0)
    assert sorted(torch.cat(first).tolist()) == list(range(12))  # every sample once per epoch
    assert torch.cat(first).tolist() != torch.cat(second).tolist()  # a new order each epoch
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded
    assert xs[0].shape == (5, 3, 6, 6) and xs[0].dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(xs, xs_again, strict=True))


def test_decode_rejects_mixed_sizes_and_empty_input(tmp_path) -> None:
    from PIL import Image

    for i, side in enumerate((8, 9)):
        Image.new("RGB", (side, side)).save(tmp_path / f"{i}.jpg")
    samples = [(str(tmp_path / "0.jpg"), 0), (str(tmp_path / "1.jpg"), 1)]
    with pytest.raises(ValueError, match="2 different sizes"):
        decode_images(samples)
    with pytest.raises(ValueError, match="samples"):
        decode_images([])
    with pytest.raises(ValueError, match="images"):
        DeviceAugmentLoader(torch.zeros(2, 3, 4, 4), torch.arange(2), batch_size=1, size=4)
