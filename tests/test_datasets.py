"""Tests for d2lopt.lab.datasets: the lesson data sets of 03_dataset_dataloader."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from d2lopt.lab import datasets
from d2lopt.lab.datasets import (
    LazyImageFiles,
    NumberStream,
    SlowDataset,
    VariableLengthSequences,
    WorkerProbe,
    pad_collate,
    shard_stream,
)


@pytest.fixture
def image_root(tmp_path):
    """Two classes, five 8x6 images each, every pixel set to a per-file value."""
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(5):
            value = 20 * i + 100 * label
            Image.new("RGB", (8, 6), (value, value, value)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    return tmp_path


# ----------------------------------------------------------------------------- LazyImageFiles
def test_lazy_image_files_opens_no_file_when_defined(image_root, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a file was opened while defining the data set")

    monkeypatch.setattr(Image, "open", forbidden)
    ds = LazyImageFiles(image_root)
    assert len(ds) == 10  # notes.txt is skipped
    assert ds.classes == ["cat", "dog"]
    assert ds.files_read == 0


def test_lazy_image_files_reads_one_file_per_item(image_root):
    ds = LazyImageFiles(image_root)
    x, label = ds[7]  # dog/2.png
    assert (x.shape, x.dtype, label) == (torch.Size([3, 6, 8]), torch.float32, 1)
    assert torch.allclose(x, torch.full_like(x, 140 / 255))
    assert ds.files_read == 1
    ds[0]
    assert ds.files_read == 2


def test_lazy_image_files_transform_gets_uint8(image_root):
    ds = LazyImageFiles(image_root, transform=lambda x: (x.dtype, x.shape))
    assert ds[0][0] == (torch.uint8, torch.Size([3, 6, 8]))


def test_lazy_image_files_batches_through_a_dataloader(image_root):
    batches = list(DataLoader(LazyImageFiles(image_root), batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == [0] * 5 + [1] * 5


def test_lazy_image_files_rejects_bad_roots(tmp_path):
    with pytest.raises(ValueError, match="root: .* is not a folder"):
        LazyImageFiles(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no .* files"):
        LazyImageFiles(tmp_path)


# ----------------------------------------------------------------------------- collate_fn
def test_variable_length_sequences_are_deterministic_and_in_range():
    a = VariableLengthSequences(50, min_len=3, max_len=9, vocab=20, seed=1)
    b = VariableLengthSequences(50, min_len=3, max_len=9, vocab=20, seed=1)
    c = VariableLengthSequences(50, min_len=3, max_len=9, vocab=20, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.sequences, b.sequences, strict=True))
    assert not all(
        len(x) == len(y) and torch.equal(x, y)
        for x, y in zip(a.sequences, c.sequences, strict=True)
    )
    lengths = {len(seq) for seq, _ in (a[i] for i in range(len(a)))}
    assert lengths <= set(range(3, 10)) and len(lengths) > 1
    for seq, label in (a[i] for i in range(len(a))):
        assert seq.dtype == torch.int64 and seq.min() >= 1 and seq.max() < 20
        assert label == int(len(seq) > 6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"n": 5, "min_len": 0}, "min_len"),
        ({"n": 5, "min_len": 4, "max_len": 3}, "max_len"),
        ({"n": 5, "vocab": 1}, "vocab"),
    ],
)
def test_variable_length_sequences_validates(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        VariableLengthSequences(**kwargs)


def test_pad_collate_pads_to_the_longest_and_keeps_lengths():
    batch = [(torch.tensor([5, 6]), 0), (torch.tensor([7, 8, 9, 1]), 1), (torch.tensor([2]), 1)]
    padded, lengths, labels = pad_collate(batch, padding_value=-1)
    assert padded.tolist() == [[5, 6, -1, -1], [7, 8, 9, 1], [2, -1, -1, -1]]
    assert lengths.tolist() == [2, 4, 1]
    assert labels.tolist() == [0, 1, 1]


def test_pad_collate_is_needed_and_works_in_a_dataloader():
    ds = VariableLengthSequences(16, min_len=2, max_len=12, seed=0)
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list(DataLoader(ds, batch_size=8))
    for padded, lengths, labels in DataLoader(ds, batch_size=8, collate_fn=pad_collate):
        assert padded.shape == (8, int(lengths.max()))
        for row, length in zip(padded, lengths.tolist(), strict=True):
            assert (row[length:] == 0).all() and (row[:length] > 0).all()
        assert labels.shape == (8,)


def test_pad_collate_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        pad_collate([])


# ----------------------------------------------------------------------------- workers
def test_slow_dataset_items_and_validation():
    ds = SlowDataset(3, delay_s=0)
    assert [ds[i].item() for i in range(3)] == [0, 1, 2]
    assert ds.loaded == 3
    ds.reset()
    assert ds.loaded == 0
    with pytest.raises(IndexError):
        ds[3]
    for bad in (-1, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="^delay_s: "):
            SlowDataset(3, delay_s=bad)
    with pytest.raises(ValueError, match="^n: "):
        SlowDataset(0)


def test_slow_dataset_counts_loads_made_in_workers():
    ds = SlowDataset(12, delay_s=0)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.cat(batches).tolist() == list(range(12))
    assert ds.loaded == 12  # every load happened in a worker, and the parent sees them


class _CountingSampler(Sampler):
    """The indices 0..n-1 in order, counting how many the loader has asked for."""

    def __init__(self, n: int) -> None:
        self.n, self.handed_out = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i in range(self.n):
            self.handed_out += 1
            yield i


def _wait_for_loaded(ds: SlowDataset, expected: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s  # generous: workers start slowly on a busy machine
    while ds.loaded < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return ds.loaded


@pytest.mark.parametrize("prefetch_factor", [1, 3])
def test_slow_dataset_shows_what_workers_prefetch(prefetch_factor):
    ds, sampler = SlowDataset(200, delay_s=0), _CountingSampler(200)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2,
                        prefetch_factor=prefetch_factor)  # fmt: skip
    it = iter(loader)
    # before the first next(): the main process has handed each worker prefetch_factor
    # batches of indices, and no more; workers load exactly what they were handed
    quota = 2 * prefetch_factor * 4
    assert sampler.handed_out == quota
    assert _wait_for_loaded(ds, quota) == quota
    assert ds.wait_until_idle(settle_s=0.05) == quota  # nothing more can arrive: settled
    next(it)  # taking one batch hands out one more
    assert sampler.handed_out == quota + 4
    assert _wait_for_loaded(ds, quota + 4) == quota + 4
    del it


def test_wait_until_idle_times_out_when_nothing_loads():
    with pytest.raises(TimeoutError, match="0 samples loaded"):
        SlowDataset(4, delay_s=0).wait_until_idle(settle_s=0.05, timeout_s=0.2)


def test_worker_probe_in_the_main_process():
    sample = WorkerProbe(4)[2]
    assert sample["index"] == 2 and sample["worker"] == -1
    assert set(sample) == {"index", "worker", "pid", "seed", "torch", "random", "numpy"}
    with pytest.raises(IndexError):
        WorkerProbe(4)[4]


def _probe(seed: int | None, num_workers: int = 2) -> list[dict]:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    loader = DataLoader(WorkerProbe(8), batch_size=2, num_workers=num_workers, generator=generator)
    return list(loader)


def test_worker_probe_shows_round_robin_workers_and_their_seeds():
    batches = _probe(seed=0)
    assert [b["worker"].tolist() for b in batches] == [[0, 0], [1, 1], [0, 0], [1, 1]]
    seeds = {b["worker"][0].item(): b["seed"][0].item() for b in batches}
    assert seeds[1] - seeds[0] == 1  # worker seed = base seed + worker id


def test_generator_makes_worker_draws_reproducible():
    a, b, c = _probe(seed=3), _probe(seed=3), _probe(seed=4)
    for key in ("torch", "random", "numpy"):
        draws = [torch.cat([batch[key] for batch in run]) for run in (a, b, c)]
        assert torch.equal(draws[0], draws[1])
        assert not torch.equal(draws[0], draws[2])
        assert len(set(draws[0].tolist())) == 8  # the two workers do not repeat each other


def test_number_stream_is_replayed_by_every_worker_unless_sharded():
    stream = NumberStream(10)
    plain = sorted(x.item() for x in DataLoader(stream, num_workers=2))
    assert plain == sorted(list(range(10)) * 2)
    sharded = sorted(
        x.item() for x in DataLoader(stream, num_workers=2, worker_init_fn=shard_stream)
    )
    assert sharded == list(range(10))


@pytest.mark.parametrize("start, end, workers", [(0, 10, 3), (5, 7, 4), (0, 1, 2), (3, 3, 2)])
def test_shard_stream_covers_every_number_once(monkeypatch, start, end, workers):
    seen = []
    for worker_id in range(workers):
        copy = NumberStream(end, start)  # each worker holds its own copy
        info = SimpleNamespace(dataset=copy, num_workers=workers, id=worker_id)
        monkeypatch.setattr(datasets, "get_worker_info", lambda info=info: info)
        shard_stream(worker_id)
        seen += list(copy)
    assert seen == list(range(start, end))


def test_shard_stream_outside_a_worker_explains_itself():
    with pytest.raises(RuntimeError, match="worker_init_fn"):
        shard_stream(0)
    with pytest.raises(ValueError, match="start <= end"):
        NumberStream(2, start=5)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_lesson_datasets_work_with_spawned_workers(context):
    # spawn/forkserver re-import everything a worker needs: it must all be importable
    slow = SlowDataset(4, delay_s=0)
    batches = list(DataLoader(slow, batch_size=2, num_workers=1, multiprocessing_context=context))
    assert torch.cat(batches).tolist() == [0, 1, 2, 3] and slow.loaded == 4
    seqs = VariableLengthSequences(4)
    loader = DataLoader(
        seqs, batch_size=2, num_workers=1, collate_fn=pad_collate, multiprocessing_context=context
    )
    assert [labels.shape[0] for _, _, labels in loader] == [2, 2]


def test_float_collate_converts_the_batch_like_the_per_sample_transform() -> None:
    import pickle

    from torchvision.transforms import v2

    from d2lopt.lab.datasets import FloatCollate

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    scale = v2.ToDtype(torch.float32, scale=True)
    per_sample = v2.Compose([scale, v2.Normalize([0.5] * 3, [0.25] * 3)])
    collate = pickle.loads(pickle.dumps(FloatCollate()))  # a worker under spawn gets a copy
    X, y = collate([(img, i) for i, img in enumerate(images)])
    assert X.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]
    assert torch.allclose(X, torch.stack([per_sample(img) for img in images]), atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        collate([(img.float(), 0) for img in images])
    with pytest.raises(ValueError, match="std"):
        FloatCollate(std=0)
