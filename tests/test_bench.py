"""d2lopt.lab.bench: one loader result type and one sweep, on d2lopt.measure (correctness only)."""

from __future__ import annotations

import math
import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from d2lopt.lab.bench import (
    LoaderRun,
    measure_loader,
    measure_loaders,
    run_pass,
    sweep_loaders,
)
from d2lopt.measure import setting_label, time_repeats
from d2lopt.verdict import HOLDS


def _no_children() -> bool:
    return not multiprocessing.active_children()


DS = TensorDataset(torch.arange(32.0).view(16, 2), torch.arange(16))


def test_run_pass_counts_every_epoch_and_reports_startup_inside_the_pass():
    seen = []
    p = run_pass(
        lambda: DataLoader(DS, batch_size=4), epochs=2, step=lambda X, y: seen.append(len(X))
    )
    assert p.samples == 32 and seen == [4] * 8
    assert 0 < p.startup <= p.seconds and 0 <= p.waited <= p.seconds


def test_run_pass_caps_each_epoch_and_copies_to_the_device():
    devices = []
    p = run_pass(lambda: DataLoader(DS, batch_size=4), epochs=3, max_batches=1, device="cpu",
                 step=lambda X, y: devices.append(X.device.type))  # fmt: skip
    assert p.samples == 12 and devices == ["cpu"] * 3


def test_measure_loader_reports_the_timed_passes_only():
    batches = [(torch.zeros(5, 2), torch.zeros(5))] * 3
    run = measure_loader(batches, repeats=3, warmup=2, device="cpu")
    assert isinstance(run, LoaderRun)
    assert run.samples == 15 and len(run.seconds) == 3
    assert run.samples_per_s == pytest.approx(15 / sorted(run.seconds)[1])
    assert 0 <= run.wait_fraction <= 1 and run.vs_reference is None


def test_sweep_measures_every_combination_against_the_first_and_leaves_no_worker():
    s = sweep_loaders(DS, {"num_workers": [0, 1], "batch_size": [4, 8]}, max_seconds=3)
    assert list(s.runs) == [
        "num_workers=0, batch_size=4",
        "num_workers=0, batch_size=8",
        "num_workers=1, batch_size=4",
        "num_workers=1, batch_size=8",
    ]
    assert s.reference == "num_workers=0, batch_size=4"
    assert s.runs[s.reference].vs_reference is None
    for label, run in s.runs.items():
        assert run.samples == 16 and len(run.seconds) == s.sweep.rounds
        assert run.settings == {k: int(v) for k, v in (kv.split("=") for kv in label.split(", "))}
        if label != s.reference:
            c = run.vs_reference
            assert c is not None and c.rounds == s.sweep.rounds and c.ci[0] <= c.speedup <= c.ci[1]
    assert _no_children()


def test_persistent_workers_start_once_per_pass_and_exit_with_the_loader():
    s = sweep_loaders(DS, {"prefetch_factor": [1, 2]}, num_workers=1, persistent_workers=True,
                      epochs=2, max_seconds=2)  # fmt: skip
    assert len(s.runs) == 2 and all(r.samples == 32 for r in s.runs.values())
    assert _no_children()


def test_best_is_the_reference_unless_a_setting_holds():
    slow = [(torch.zeros(4, 2), torch.zeros(4))] * 4

    def sluggish():
        for b in slow:
            sum(range(20_000))  # a per-batch cost the fast loader does not pay
            yield b

    s = measure_loaders({"slow": sluggish, "fast": lambda: slow}, reference="slow", max_seconds=3)
    assert s.runs["fast"].vs_reference.verdict == HOLDS and s.best().label == "fast"
    t = measure_loaders({"fast": lambda: slow, "slow": sluggish}, reference="fast", max_seconds=3)
    assert t.best().label == "fast"
    assert "| fast |" in t.table() and "reference" in t.table()


def test_to_dict_is_json_ready():
    import json

    s = sweep_loaders(DS, [{"batch_size": 4}, {"batch_size": 8}], max_seconds=1)
    row = json.loads(json.dumps(s.runs["batch_size=8"].to_dict()))
    assert row["settings"] == {"batch_size": 8} and row["vs_reference"]["rounds"] >= 1
    assert setting_label({}) == "defaults"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sweep_loaders(DS, {}), "grid: give at least one"),
        (lambda: sweep_loaders(DS, []), "grid: give at least one setting"),
        (lambda: sweep_loaders(DS, {"num_workers": [-1]}), "num_workers: must be >= 0"),
        (lambda: measure_loader([], repeats=0), "repeats: must be >= 1, got 0"),
        (lambda: measure_loader([], epochs=0), "epochs: must be >= 1, got 0"),
        (lambda: measure_loader([], max_batches=0), "max_batches: must be >= 1, got 0"),
        (lambda: time_repeats(print, repeats=0), "repeats: must be >= 1, got 0"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_loader_that_is_not_a_factory_is_refused():
    with pytest.raises(TypeError, match=r"loaders\['x'\]: must build a loader"):
        measure_loaders({"x": [1], "y": lambda: []}, reference="y")


def test_an_empty_loader_has_no_startup_beyond_the_pass():
    p = run_pass(lambda: [], epochs=1)
    assert p.samples == 0 and not math.isnan(p.startup)
