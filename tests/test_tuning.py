"""Correctness of d2lopt.tuning and `d2lopt tune-loader` (speed is judged in notebooks)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

from d2lopt.cli import main
from d2lopt.tuning import (
    DEFAULT,
    LoaderSetting,
    SweepResult,
    best_of,
    default_workers,
    load_dataset,
    plot_heatmap,
    standard_dataset,
    sweep_grid,
    sweep_loader,
)


def _tiny(n: int = 24) -> TensorDataset:
    return TensorDataset(torch.randn(n, 3, 8, 8), torch.arange(n) % 10)


# ------------------------------------------------------------------------------ the grid
@pytest.mark.parametrize(
    "cores, expected",
    [(1, [0, 1]), (2, [0, 1, 2]), (3, [0, 1, 2, 3]), (16, [0, 1, 2, 4, 8, 16])],
)
def test_default_workers_double_up_to_the_cores(cores, expected) -> None:
    assert default_workers(cores) == expected


def test_sweep_grid_varies_prefetch_and_persistence_only_with_workers() -> None:
    grid = sweep_grid([0, 1, 2], prefetch=[2, 4], persistent=[False, True])
    assert len(grid) == 1 + 2 * 2 * 2
    assert grid[0] == DEFAULT  # workers=0 once, with PyTorch's defaults
    assert len(set(grid)) == len(grid)
    assert all(
        s.prefetch_factor is None and not s.persistent_workers for s in grid if s.num_workers == 0
    )
    with_pin = sweep_grid([0, 1], prefetch=[2], persistent=[True], pin=[False, True])
    assert {s.pin_memory for s in with_pin} == {False, True} and len(with_pin) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"workers": []}, "workers"),
        ({"workers": [-1]}, "workers"),
        ({"workers": [True]}, "workers"),
        ({"workers": [1], "prefetch": [0]}, "prefetch"),
        ({"workers": [1], "persistent": []}, "persistent"),
    ],
)
def test_sweep_grid_rejects_bad_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        sweep_grid(**kwargs)


def test_loader_kwargs_drop_worker_only_options_without_workers() -> None:
    kw = LoaderSetting(0, None, False).loader_kwargs()
    assert kw["prefetch_factor"] is None and kw["persistent_workers"] is False
    kw = LoaderSetting(2, 4, True).loader_kwargs()
    assert kw["num_workers"] == 2 and kw["prefetch_factor"] == 4 and kw["persistent_workers"]
    assert LoaderSetting(2, 4, True, True).label() == "workers=2 prefetch=4 persistent pin"


# ------------------------------------------------------------------------------ the sweep
def test_sweep_measures_every_setting_and_best_is_one_of_them() -> None:
    settings = [DEFAULT, LoaderSetting(1, 2, False), LoaderSetting(1, 2, True)]
    seen: list[int] = []
    results = sweep_loader(
        _tiny(),
        settings,
        batch_size=8,
        epochs=2,
        rounds=2,
        consume=lambda X, y: seen.append(len(X)),
    )
    assert [r.setting for r in results] == settings
    for r in results:
        assert r.samples == 2 * 24  # two full passes
        assert len(r.seconds) == 2 and r.samples_per_s > 0
    # warm-up (one pass) + 3 settings x 2 rounds x 2 passes, 3 batches each
    assert len(seen) == 3 + 3 * 2 * 2 * 3
    best = best_of(results)
    assert best in results
    assert best.samples_per_s == max(r.samples_per_s for r in results)


def test_max_batches_limits_each_pass() -> None:
    (r,) = sweep_loader(_tiny(), [DEFAULT], batch_size=4, epochs=3, max_batches=2, rounds=1)
    assert r.samples == 3 * 2 * 4


def test_best_of_breaks_ties_towards_fewer_workers() -> None:
    a = SweepResult(LoaderSetting(2, 2, False), 100.0, [1.0])
    b = SweepResult(DEFAULT, 100.0, [1.0])
    assert best_of([a, b]).setting == DEFAULT
    with pytest.raises(ValueError, match="results"):
        best_of([])


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(range(4))


@pytest.mark.parametrize(
    "dataset, kwargs, error",
    [
        (_Stream(), {}, TypeError),
        (_tiny(), {"epochs": 0}, ValueError),
        (_tiny(), {"batch_size": True}, ValueError),
    ],
)
def test_sweep_rejects_bad_input(dataset, kwargs, error) -> None:
    with pytest.raises(error):
        sweep_loader(dataset, [DEFAULT], **kwargs)
    with pytest.raises(ValueError, match="settings"):
        sweep_loader(_tiny(), [])


def test_heatmap_has_one_column_per_worker_count() -> None:
    results = [
        SweepResult(s, 10.0 + i, [1.0])
        for i, s in enumerate(sweep_grid([0, 1, 2], [2], [False, True]))
    ]
    ax = plot_heatmap(results)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    texts = [t.get_text() for t in ax.texts]
    assert "n/a" in texts and "14" in texts  # workers=0 has no prefetch/persistent variants


def test_standard_dataset_labels_follow_the_fixed_class_order(tmp_path) -> None:
    from d2lopt.data import FASHION_MNIST_CLASSES, fashion_mnist

    test = standard_dataset(16, 8, train=False, root=tmp_path)  # 16 images miss some classes
    _, labels, _ = fashion_mnist(False, source="synthetic", n=16)
    assert len(set(labels.tolist())) < 10  # the case this guards against
    assert sorted(test.targets) == sorted(labels.tolist())
    assert test.classes == list(FASHION_MNIST_CLASSES)
    x, y = test[0]
    assert x.shape == (3, 8, 8) and y == test.targets[0]


# ------------------------------------------------------------------------------ import paths
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's data module in the current folder, as `tune-loader mydata:...` would see it."""
    (tmp_path / "mydata.py").write_text(
        textwrap.dedent("""
        import torch
        from torch.utils.data import Dataset, IterableDataset, TensorDataset

        train_set = TensorDataset(torch.randn(32, 3, 8, 8), torch.arange(32) % 10)

        def make_dataset():
            return TensorDataset(torch.randn(16, 3, 8, 8), torch.arange(16) % 10)

        def broken():
            raise RuntimeError("no data here")

        class Sets:
            test = TensorDataset(torch.zeros(8, 1), torch.zeros(8))

        class Stream(IterableDataset):
            def __iter__(self):
                return iter(range(3))

        stream = Stream()
        not_data = 42
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "mydata"
    sys.modules.pop("mydata", None)


def test_load_dataset_accepts_instances_factories_and_dotted_names(user_module) -> None:
    assert len(load_dataset("mydata:train_set")) == 32
    assert len(load_dataset("mydata:make_dataset")) == 16  # a zero-argument factory
    assert len(load_dataset("mydata:Sets.test")) == 8


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("mydata", ValueError, "module:attr"),
        ("mydata:", ValueError, "module:attr"),
        ("no_such_module_xyz:data", ValueError, "cannot import"),
        ("mydata:missing", ValueError, "no attribute 'missing'"),
        ("mydata:broken", ValueError, "RuntimeError: no data here"),
        ("mydata:stream", TypeError, "IterableDataset"),
        ("mydata:not_data", TypeError, "not a Dataset"),
    ],
)
def test_load_dataset_errors_name_the_problem(user_module, spec, error, match) -> None:
    with pytest.raises(error, match=match):
        load_dataset(spec)


# ------------------------------------------------------------------------------ the CLI
def test_cli_sweeps_a_user_dataset_and_saves_json_and_heatmap(
    user_module, tmp_path, capsys
) -> None:
    out = tmp_path / "tuned"
    code = main(
        [
            "tune-loader",
            "mydata:train_set",
            "--workers",
            "0,1",
            "--prefetch",
            "2",
            "--rounds",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "tune-loader.json").read_text())
    labels = [r["label"] for r in report["results"]]
    assert labels == ["workers=0", "workers=1 prefetch=2", "workers=1 prefetch=2 persistent"]
    assert report["best"]["label"] in labels
    assert report["best"]["samples_per_s"] == max(r["samples_per_s"] for r in report["results"])
    assert (out / "heatmap.png").stat().st_size > 0
    assert f"best: {report['best']['label']}" in captured.out
    if not torch.cuda.is_available():  # one clear message, not a warning per loader
        assert captured.err.count("pin_memory needs a CUDA GPU") == 1


@pytest.mark.parametrize(
    "args, flag",
    [
        (["mydata"], "module:attr"),
        (["mydata:missing"], "missing"),
        (["mydata:stream"], "IterableDataset"),
        (["--workers", "a,b"], "--workers"),
        (["--workers", "-1"], "--workers"),
        (["--prefetch", "0"], "--prefetch"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device"),
        (["--image-size", "4"], "--image-size"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(user_module, capsys, args, flag) -> None:
    try:
        code = main(["tune-loader", *args])
    except SystemExit as exc:  # argparse rejects the flag before any command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err


def test_cli_error_under_python_m_has_no_traceback(user_module, cli_env) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "d2lopt.cli", "tune-loader", "mydata:broken"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no data here" in lines[0] and "Traceback" not in proc.stderr
