"""Correctness of d2lopt.lab.loading (no wall-clock thresholds: speed is judged in notebooks)."""

import multiprocessing
import os
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from d2lopt.data import image_transform, write_image_folder
from d2lopt.lab import loading
from d2lopt.lab.loading import (
    TensorImageDataset,
    batched_augment,
    build_loader,
    consume,
    decode_image_folder,
    knee,
    num_threads,
    plateau,
    steps,
    warm_loaders,
)


def _images(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return images, torch.arange(n) % 10


def _no_children() -> bool:
    return not multiprocessing.active_children()


# ----------------------------------------------------------------------------- data sets
def test_tensor_image_dataset_without_transform_returns_the_stored_sample():
    images, labels = _images()
    ds = TensorImageDataset(images, labels)
    x, y = ds[3]
    assert len(ds) == 8
    assert torch.equal(x, images[3]) and y == labels[3]


def test_tensor_image_dataset_applies_the_transform_per_sample():
    images, labels = _images(size=32)
    ds = TensorImageDataset(images, labels, image_transform(train=True, size=24))
    x, _ = ds[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32


@pytest.mark.parametrize(
    "images, labels",
    [
        (torch.zeros(4, 28, 28), torch.zeros(4)),  # no channel dimension
        (torch.zeros(4, 1, 28, 28), torch.zeros(3)),  # one label missing
        ([[0]], torch.zeros(1)),
    ],
)
def test_tensor_image_dataset_rejects_bad_shapes(images, labels):
    with pytest.raises(ValueError, match="images|labels"):
        TensorImageDataset(images, labels)


def test_decode_image_folder_matches_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.v2.functional import pil_to_tensor

    root = write_image_folder(tmp_path / "imgs", n=100, size=16, fmt="png")  # no empty class
    images, labels = decode_image_folder(root)
    folder = ImageFolder(str(root))
    assert images.shape == (100, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == folder.targets
    assert torch.equal(images[5], pil_to_tensor(folder[5][0]))


# ----------------------------------------------------------------------------- build_loader
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"prefetch_factor": 2}, "prefetch_factor"),  # without workers
        ({"num_workers": 1, "prefetch_factor": 0}, "prefetch_factor"),
        ({"persistent_workers": True}, "persistent_workers"),
    ],
)
def test_build_loader_rejects_bad_settings_naming_the_parameter(kwargs, name):
    ds = TensorDataset(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=name):
        build_loader(ds, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_build_loader_drops_pin_memory_without_cuda_and_warns_nothing():
    ds = TensorDataset(torch.zeros(4, 2), torch.zeros(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = build_loader(ds, batch_size=2, pin_memory=True)
        assert consume(loader)[0] == 4
    assert loader.pin_memory is False


def test_more_workers_than_cores_run_without_the_pytorch_warning():
    ds = TensorDataset(torch.arange(12.0).view(6, 2), torch.zeros(6))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    loader = build_loader(ds, batch_size=2, num_workers=cores + 1)  # PyTorch would warn here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert consume(loader)[0] == 6
    del loader
    assert _no_children()


# ----------------------------------------------------------------------------- measuring
class _Clock:
    """A fake ``time.perf_counter`` that only moves when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _TimedLoader:
    """Batches of 2 samples; starting a pass costs ``startup`` seconds, each batch
    ``per_batch`` seconds, all on ``clock``."""

    def __init__(self, clock, batches, *, startup=4.0, per_batch=1.0):
        self.clock, self.batches = clock, batches
        self.startup, self.per_batch = startup, per_batch

    def __iter__(self):
        self.clock.now += self.startup  # workers start
        return self._batches()

    def _batches(self):
        for _ in range(self.batches):
            self.clock.now += self.per_batch  # the batch is loaded
            yield torch.zeros(2, 1), torch.zeros(2)


def test_consume_counts_samples_stops_at_max_batches_and_calls_step():
    loader = build_loader(TensorDataset(torch.zeros(10, 2), torch.zeros(10)), batch_size=4)
    seen = []
    samples, _ = consume(loader, lambda X, y: seen.append(len(X)))
    assert samples == 10 and seen == [4, 4, 2]
    assert consume(loader, max_batches=2)[0] == 8


def test_consume_counts_the_wait_for_batches_but_not_the_step(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(loading.time, "perf_counter", clock)

    def step(X, y):
        clock.now += 100.0  # the consumer's work: not a wait for data

    loader = _TimedLoader(clock, batches=3, startup=0.0)
    assert consume(loader, step) == (6, 3.0)
    assert consume(loader, step, max_batches=2) == (4, 2.0)


# ----------------------------------------------------------------------------- warm loaders
def test_warm_loaders_build_once_keep_workers_and_shut_them_down():
    ds = TensorDataset(torch.arange(8.0), torch.zeros(8))
    built = []

    def make(workers):
        def build():
            built.append(workers)
            return build_loader(ds, batch_size=2, num_workers=workers,
                                persistent_workers=workers > 0)  # fmt: skip

        return build

    with warm_loaders({"w0": make(0), "w1": make(1)}) as loaders:
        assert built == [0, 1]  # every loader built once, up front
        assert loaders["w1"]() is loaders["w1"]()
        assert [consume(loaders["w1"]())[0] for _ in range(3)] == [8, 8, 8]
        pids = {p.pid for p in multiprocessing.active_children()}
        consume(loaders["w1"]())
        assert {p.pid for p in multiprocessing.active_children()} == pids  # no restart
    assert built == [0, 1] and _no_children()


def test_warm_loaders_refuse_workers_that_would_restart_every_pass():
    ds = TensorDataset(torch.arange(4.0))
    with pytest.raises(ValueError, match=r"factories\['w1'\].*persistent_workers=True"):
        with warm_loaders({"w1": lambda: build_loader(ds, num_workers=1)}):
            pass
    assert _no_children()


# ----------------------------------------------------------------------------- steps, knee
def test_steps_compare_each_setting_with_the_one_before_on_the_same_rounds():
    from d2lopt.measure import Comparison, Sweep

    # per-round times of a finished sweep: b is twice as fast as a, c as fast as b
    seconds = {"a": [2.0, 2.2, 1.9, 2.1, 2.0, 2.05], "b": [1.0, 1.1, 0.95, 1.05, 1.0, 1.02]}
    seconds["c"] = [t * 1.001 for t in seconds["b"]]
    vs_a = Comparison("vs a", 1.0, (1.0, 1.0), 6, "holds", "", 0.05, 0.95, (), ())  # settings
    sweep = Sweep("a", seconds, {"b": vs_a, "c": vs_a}, elapsed=1.0)
    ab, bc = steps(sweep, ["a", "b", "c"])
    assert ab.label == "b vs a" and ab.speedup == pytest.approx(2.0, rel=0.05)
    assert ab.verdict == "holds" and ab.rounds == 6
    assert bc.label == "c vs b" and bc.verdict == "does not hold"
    with pytest.raises(ValueError, match="order"):
        steps(sweep, ["a"])
    with pytest.raises(ValueError, match="candidate"):
        steps(sweep, ["a", "nope"])


def test_knee_is_the_last_setting_reached_by_proven_gains():
    assert knee([0, 1, 2, 4], ["holds", "inconclusive", "holds"]) == 1
    assert knee([0, 1, 2, 4], ["holds", "holds", "does not hold"]) == 2
    assert knee([0, 1, 2, 4], ["holds"] * 3) == 4
    assert knee([1, 2], ["does not hold"]) == 1  # more workers only hurt


@pytest.mark.parametrize(
    "order, verdicts, name",
    [([1], [], "verdicts"), ([1, 2], [], "verdicts"), ([1, 2], ["faster"], "verdicts")],
)
def test_knee_and_plateau_reject_bad_input(order, verdicts, name):
    for judge in (knee, plateau):
        with pytest.raises(ValueError, match=name):
            judge(order, verdicts)


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["holds", "does not hold", "does not hold"], "holds"),
        (["holds", "holds", "does not hold"], "holds"),
        (["does not hold", "holds", "holds"], "does not hold"),
        (["inconclusive", "holds", "does not hold"], "inconclusive"),
        (["holds", "inconclusive", "does not hold"], "inconclusive"),
        (["holds", "does not hold", "holds"], "inconclusive"),
        (["holds", "holds", "holds"], "inconclusive"),  # still gaining: no plateau seen
    ],
)
def test_plateau_needs_a_proven_gain_then_proven_flat_steps(verdicts, expected):
    verdict, reason = plateau([1, 2, 4, 8], verdicts)
    assert verdict == expected and reason


def test_num_threads_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with num_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        with num_threads(0):
            pass


# ----------------------------------------------------------------------------- batched_augment
def _normalized(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - 0.5) / 0.25


def test_batched_augment_with_a_full_crop_and_no_flip_is_plain_normalization():
    images, _ = _images()
    out = batched_augment(images, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    assert out.dtype == torch.float32 and out.shape == (8, 3, 16, 16)
    torch.testing.assert_close(out, _normalized(images), atol=1e-4, rtol=0)


def test_batched_augment_flip_mirrors_every_sample():
    images, _ = _images()
    out = batched_augment(images, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    torch.testing.assert_close(out, _normalized(images.flip(-1)), atol=1e-4, rtol=0)


def test_batched_augment_draws_a_different_crop_for_each_sample_reproducibly():
    image = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).div(4).to(torch.uint8)
    batch = image.expand(6, 3, 32, 32)  # six copies of one image
    a = batched_augment(batch, 16, scale=(0.2, 0.5), generator=torch.Generator().manual_seed(0))
    b = batched_augment(batch, 16, scale=(0.2, 0.5), generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, 3, 16, 16)
    assert torch.equal(a, b)
    assert len({tuple(s.flatten().tolist()) for s in a}) == 6  # six different crops


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.9, 0.5)}, "scale"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"flip_p": 1.5}, "flip_p"),
    ],
)
def test_batched_augment_rejects_bad_parameters(kwargs, name):
    images, _ = _images()
    with pytest.raises(ValueError, match=name):
        batched_augment(images, 8, **kwargs)
    with pytest.raises(ValueError, match="images"):
        batched_augment(images[0], 8)
