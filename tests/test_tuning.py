"""Correctness of d2lopt.lab.tuning and `d2lopt tune-loader` (speed is judged in notebooks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

from d2lopt.cli import main
from d2lopt.lab.bench import LoaderRun
from d2lopt.lab.tuning import (
    DEFAULT,
    default_workers,
    load_dataset,
    plot_heatmap,
    standard_dataset,
    sweep_grid,
    tune_loader,
)
from d2lopt.measure import Comparison


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
    assert grid[0] == DEFAULT == {"num_workers": 0}  # workers=0 once, PyTorch's defaults
    assert len({tuple(s.items()) for s in grid}) == len(grid)
    assert grid[1:3] == [
        {"num_workers": 1, "prefetch_factor": 2, "persistent_workers": False},
        {"num_workers": 1, "prefetch_factor": 2, "persistent_workers": True},
    ]
    with_pin = sweep_grid([0, 1], prefetch=[2], persistent=[True], pin=[False, True])
    assert [s.get("pin_memory", False) for s in with_pin] == [False, False, True, True]


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


# ------------------------------------------------------------------------------ the sweep
def test_every_setting_runs_in_the_same_rounds_against_the_default() -> None:
    grid = sweep_grid([0, 1], prefetch=[2], persistent=[False, True])
    seen: list[int] = []
    sweep = tune_loader(_tiny(), grid, batch_size=8, epochs=2, max_seconds=1.0, max_rounds=2,
                        progress=False, step=lambda X, y: seen.append(len(X)))  # fmt: skip
    assert list(sweep.runs) == [
        "num_workers=0",
        "num_workers=1, prefetch_factor=2, persistent_workers=False",
        "num_workers=1, prefetch_factor=2, persistent_workers=True",
    ]
    assert sweep.reference == "num_workers=0" and sweep.runs["num_workers=0"].vs_reference is None
    rounds = sweep.sweep.rounds
    for label, run in sweep.runs.items():
        assert run.samples == 2 * 24  # two full epochs per pass
        assert len(run.seconds) == rounds
        if label != sweep.reference:
            c = run.vs_reference
            assert c.rounds == rounds and (math.isnan(c.ci[0]) or c.ci[0] <= c.speedup <= c.ci[1])
    # every pass trains every batch: (warm-up + rounds) passes x 3 settings x 2 epochs x 3
    assert len(seen) == (1 + rounds) * 3 * 2 * 3
    best = sweep.best()  # the default unless a setting holds against it
    assert best.vs_reference is None or best.vs_reference.verdict == "holds"


def test_max_batches_limits_each_epoch_and_a_single_setting_gets_one_number() -> None:
    sweep = tune_loader(_tiny(), [DEFAULT], batch_size=4, epochs=3, max_batches=2,
                        progress=False)  # fmt: skip
    (run,) = sweep.runs.values()
    assert run.samples == 3 * 2 * 4 and run.vs_reference is None and len(run.seconds) == 3


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(range(4))


def test_sweep_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="IterableDataset"):
        tune_loader(_Stream(), [DEFAULT])
    with pytest.raises(ValueError, match="grid"):
        tune_loader(_tiny(), [])
    with pytest.raises(ValueError, match="epochs"):
        tune_loader(_tiny(), [DEFAULT], epochs=0, progress=False)


def _run(settings: dict, sps: float, verdict: str | None) -> LoaderRun:
    vs = None
    if verdict is not None:
        vs = Comparison("x", 1.2, (1.1, 1.3), 6, verdict, "", 0.05, 0.95, (1.0,) * 6, (1.0,) * 6)
    return LoaderRun("x", settings, 10, (10 / sps,), vs_reference=vs)


def test_heatmap_has_one_column_per_worker_count_and_stars_what_holds() -> None:
    grid = sweep_grid([0, 1, 2], [2], [False, True])
    runs = [_run(s, 10.0 + i, None if i == 0 else ("holds" if i == 4 else "inconclusive"))
            for i, s in enumerate(grid)]  # fmt: skip
    ax = plot_heatmap(runs)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["prefetch=2", "prefetch=2 persistent"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["10", "n/a", "11", "12", "13", "14*"]
    )  # workers=0 has no persistent variant; only the setting that holds is starred


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
def user_module(learner_module):
    """A user's data module in the current folder, as `tune-loader mydata:...` would see it."""
    return learner_module(
        "mydata",
        """
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
    """,
    )


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
    code = main(["tune-loader", "--dataset", "mydata:train_set", "--workers", "0,1",
                 "--prefetch", "2", "--max-seconds", "2", "--rounds", "2", "--batch-size", "8",
                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "tune-loader.json").read_text())
    labels = [r["label"] for r in report["results"]]
    assert labels == [
        "num_workers=0",
        "num_workers=1, prefetch_factor=2, persistent_workers=False",
        "num_workers=1, prefetch_factor=2, persistent_workers=True",
    ]
    assert report["reference"] == "num_workers=0" and report["max_seconds"] == 2.0
    memory = report["memory"]  # what each setting costs, measured in untimed passes
    assert list(memory) == labels
    assert memory["num_workers=0"]["workers"] == 0 and memory["num_workers=0"]["prefetched"] == 0
    one = memory["num_workers=1, prefetch_factor=2, persistent_workers=False"]
    assert one["workers"] == 1 and one["uss"] > 0 and one["prefetched"] > 0
    assert "memory each setting costs" in captured.out
    rows = captured.out.splitlines()
    for r in report["results"]:  # one printed row per setting, with its interval and verdict
        (row,) = [line for line in rows if line.startswith(r["label"] + " ")]
        c = r["vs_reference"]
        assert row.endswith("reference" if c is None else c["verdict"])
        assert f" {r['samples_per_s']:.0f} " in row
    best = report["best"]
    verdict = best["vs_reference"]["verdict"] if best["vs_reference"] else None
    assert verdict in (None, "holds")  # the default unless a setting beats it with an interval
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rows[-2].startswith("note: these passes measured the loader alone")
    if not torch.cuda.is_available():  # one clear message, not a warning per loader
        assert captured.err.count("pin_memory needs a CUDA GPU") == 1


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--dataset", "mydata"], "--dataset: expected 'module:attr'"),
        (["--dataset", "mydata:missing"], "--dataset: module 'mydata' has no attribute"),
        (["--dataset", "mydata:stream"], "IterableDataset"),
        (["--dataset", "my-data:x"], "--dataset: 'my-data:x' is not an import path"),
        (["--dataset", "mydata:train_set", "mydata:train_set"], "unrecognized arguments"),
        (["--workers", "a,b"], "--workers"),
        (["--workers", "-1"], "--workers"),
        (["--prefetch", "0"], "--prefetch"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device"),
        (["--image-size", "4"], "--image-size"),
        (["--rounds", "1"], "--rounds"),
        (["--max-seconds", "0"], "--max-seconds"),
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
        [sys.executable, "-m", "d2lopt.cli", "tune-loader", "--dataset", "mydata:broken"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no data here" in lines[0] and "Traceback" not in proc.stderr


def test_cli_takes_the_data_set_by_flag_only(user_module, capsys) -> None:
    from d2lopt.cli import build_parser

    args = build_parser().parse_args(["tune-loader", "--dataset", "mydata:train_set"])
    assert args.dataset == "mydata:train_set"
    with pytest.raises(SystemExit):
        main(["tune-loader", "--help"])
    help_text = capsys.readouterr().out
    assert "--dataset MODULE:ATTR" in help_text and "old_dataset" not in help_text
