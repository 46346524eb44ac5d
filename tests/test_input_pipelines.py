"""d2lopt.lab.input_pipelines: thread loader, decode once, batched decode (correctness only)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from d2lopt.data import EpochRandomSampler
from d2lopt.lab.input_pipelines import (
    DeviceAugmentLoader,
    EncodedImages,
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


# ---------------------------------------------------- what the GPU paths ask torch to do
class _HostToDevice(TorchDispatchMode):
    """Record every copy whose tensors sit on two devices (host -> device), no GPU needed."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            tensors = [a for a in (*args, out) if isinstance(a, torch.Tensor)]
            self.copies += len({t.device.type for t in tensors}) > 1
        return out


def _decode_loader_on(device: str, monkeypatch, events: list[str], **kwargs) -> GpuDecodeLoader:
    """A GpuDecodeLoader whose decoder is a stand-in returning images on ``device``."""
    import torchvision.io

    data = [torch.zeros(4, dtype=torch.uint8) for _ in range(10)]
    enc = EncodedImages(data, torch.arange(10), 0.0)
    loader = GpuDecodeLoader(enc, batch_size=4, size=8, device="cpu", **kwargs)

    def decode_jpeg(files, mode, device):
        events.append("decode")
        return [torch.zeros(3, 8, 8, dtype=torch.uint8, device="meta") for _ in files]

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
    loader.device, loader.labels = torch.device(device), loader.labels.to("meta")
    return loader


def test_gpu_decode_copies_the_order_once_per_epoch_not_per_batch(monkeypatch) -> None:
    """Issue 24.4: a per-batch blocking copy of the indices waits for the queued step."""
    events: list[str] = []
    loader = _decode_loader_on("meta", monkeypatch, events, train=False)
    with _HostToDevice() as mode:
        batches = list(loader)
    assert len(batches) == 3 and all(y.device.type == "meta" for _, y in batches)
    assert mode.copies == 1  # the epoch's order, once


def test_gpu_decode_drains_the_callers_stream_before_each_cuda_decode(monkeypatch) -> None:
    """Issue 24.2: torchvision's nvJPEG path writes through its own stream without waiting
    for the caller's: the loader synchronizes the current stream before every decode."""
    import d2lopt.lab.input_pipelines as pipelines

    events: list[str] = []
    loader = _decode_loader_on("cuda", monkeypatch, events, train=False)
    wait_for_queued_work = pipelines.wait_for_queued_work
    monkeypatch.setattr(pipelines, "wait_for_queued_work", lambda dev: events.append("wait"))
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):  # "cuda" lands on meta: the test machine has no GPU
        args = tuple("meta" if str(a).startswith("cuda") else a for a in args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    assert len(list(loader)) == 3
    assert events == ["wait", "decode"] * 3

    synced = []

    class Stream:
        def synchronize(self) -> None:
            synced.append(True)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    wait_for_queued_work(torch.device("cuda", 0))
    assert synced == [True]


def test_device_augmentation_draws_on_the_device_no_copy_per_batch() -> None:
    """Issue 24.4: crops drawn on the images' device; a generator of another device is refused."""
    from d2lopt.lab.loading import batched_augment

    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8, device="meta")
    with _HostToDevice() as mode:
        out = batched_augment(images, 8)
    assert out.device.type == "meta" and mode.copies == 0
    with pytest.raises(ValueError, match="generator: a cpu generator cannot draw"):
        batched_augment(images, 8, generator=torch.Generator())
    loader = DeviceAugmentLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4),
                                 batch_size=2, size=8)  # fmt: skip
    assert loader._augment_generator(torch.device("cpu")) is loader.generator  # CPU: unchanged
