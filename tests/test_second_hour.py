"""The learner's second hour (issue 22): their own data, their own mistakes, a machine they
cannot crash. One test (or a few) per item of the issue; the command-line cases run real
processes, as a learner types them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import d2lopt
from d2lopt import TrainConfig, envinfo, fit, mlp, synthetic_fashion_mnist
from d2lopt.cli import ddp as ddp_cli
from d2lopt.cli import main
from d2lopt.cli.torchrun_output import RankOutput
from d2lopt.cli.train import resume_command
from d2lopt.errors import ParamError

ROOT = Path(__file__).resolve().parents[1]


def _cli(env: dict[str, str], *argv: str, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "d2lopt.cli", *argv],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ------------------------------------------------------------------ 1. ranks the machine can hold
def test_ddp_refuses_more_cpu_ranks_than_the_machine_holds_before_any_rank_starts(
    cli_env, tmp_path
) -> None:
    out = tmp_path / "x"
    start = time.monotonic()
    proc = _cli(cli_env, "ddp", "--nproc-per-node", "64", "--device", "cpu", "--epochs", "1",
                "--out", str(out), timeout=120)  # fmt: skip
    took = time.monotonic() - start
    assert proc.returncode == 2
    line = _one_line(proc)  # no torchrun banner: torchrun never started
    assert line.startswith("d2lopt ddp: error: --nproc-per-node: 64 CPU processes")
    assert "--oversubscribe" in line and "use --nproc-per-node" in line
    assert not out.exists(), "a refused run left its --out folder"
    print(f"refused in {took:.1f} s")  # a liveness check, not a speed target: see timeout


def test_capacity_counts_memory_too_and_oversubscribe_goes_ahead(monkeypatch, tmp_path) -> None:
    import psutil

    class Memory:
        available = 1024**3  # 1 GB: less than two ranks of the full data set

    class Process:  # the command's own pages, as a fresh `d2lopt ddp` has them: not pytest's
        def memory_full_info(self):
            return type("Info", (), {"uss": 400 * 1024**2})()

    monkeypatch.setattr(envinfo, "usable_cores", lambda: 64)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory())
    monkeypatch.setattr(psutil, "Process", Process)
    with pytest.raises(Exception, match=r"--nproc-per-node: 4 CPU processes .* 1\.0 GB avail"):
        ddp_cli.check_capacity("4", "cpu", None, None)
    ddp_cli.check_capacity("1", "cpu", 256, 64)  # a small run fits
    ddp_cli.check_capacity("4", "cuda", None, None)  # GPU ranks: not this check's business
    launched = []
    monkeypatch.setattr(ddp_cli.os, "execve", lambda path, argv, env: launched.append(argv))
    code = main(["ddp", "--nproc-per-node", "4", "--device", "cpu", "--oversubscribe",
                 "--epochs", "1", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 0 and len(launched) == 1
    supervisor = [sys.executable, "-m", "d2lopt.cli.torchrun_output", sys.executable]
    assert launched[0][:4] == supervisor  # torchrun runs under a PyTorch-free supervisor
    assert "--oversubscribe" not in launched[0]  # a launch flag: not the program's


def test_rank_memory_estimate_is_in_the_range_issue_22_measured() -> None:
    # in a fresh process, as `d2lopt ddp` makes it: this pytest process has grown its own pages
    # over hundreds of tests, and the estimate counts the caller's pages
    code = (
        "from d2lopt.cli import ddp; ddp.cpu_ranks('2', 'cpu'); print(ddp.rank_memory(None, None))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    gb = int(out.stdout) / 1024**3
    assert 0.3 < gb < 1.5, gb  # issue 22: about 0.6 GB per rank with the full data set


# ------------------------------------------------------------------ 3. gpu without CUDA
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_ddp_nproc_gpu_without_cuda_is_one_line(cli_env, tmp_path) -> None:
    proc = _cli(cli_env, "ddp", "--nproc-per-node", "gpu", "--epochs", "1", "--out",
                str(tmp_path / "x"), timeout=120)  # fmt: skip
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("d2lopt ddp: error: --nproc-per-node: gpu") and "--device cpu" in line
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ 6. the ranks' words first
TORCHRUN_FAILURE = """\
W1203 12:36:02.140000 9265 torch/distributed/run.py:766]
W1203 12:36:02.140000 9265 torch/distributed/run.py:766] *****************************************
W1203 12:36:02.140000 9265 torch/distributed/run.py:766] Setting OMP_NUM_THREADS environment var
W1203 12:36:02.140000 9265 torch/distributed/run.py:766] *****************************************
d2lopt ddp: error: --strategy: the checkpoint was written with --strategy fsdp; use it
W1203 12:36:03.140000 9265 torch/distributed/elastic/api.py:1028] Sending closing signal SIGTERM
E1203 12:36:03.200000 9265 torch/distributed/elastic/api.py:900] failed (exitcode: 2) local_rank: 0
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/venv/site-packages/torch/distributed/run.py", line 1129, in run
    elastic_launch(
  File "/venv/site-packages/torch/distributed/launcher/api.py", line 386, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
d2lopt.ddp FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-03_12:36:15
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 2 (pid: 9296)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_rank_output_puts_the_ranks_error_first_and_last() -> None:
    sink = io.StringIO()
    out = RankOutput(sink)
    for line in TORCHRUN_FAILURE.splitlines(keepends=True):
        out.feed(line)
    out.finish(1)
    lines = sink.getvalue().splitlines()
    error = "d2lopt ddp: error: --strategy: the checkpoint was written with --strategy fsdp"
    assert lines[0].startswith(error) and lines[-1].startswith(error)
    assert len(lines) == 3, lines
    assert "--torchrun-report" in lines[1] and "rank 0 exit code 2" in lines[1]
    assert "ChildFailedError" not in sink.getvalue() and "OMP_NUM_THREADS" not in sink.getvalue()


def test_rank_output_passes_a_ranks_traceback_through() -> None:
    sink = io.StringIO()
    out = RankOutput(sink)
    rank = (
        'Traceback (most recent call last):\n  File "/x/d2lopt/loop.py", line 3\nValueError: bad\n'
    )
    for line in rank.splitlines(keepends=True):
        out.feed(line)
    out.finish(0)
    assert sink.getvalue() == rank


def test_ddp_failure_shows_the_ranks_line_not_torchruns_report(cli_env, tmp_path) -> None:
    """A mismatch only the ranks can see (the data's size, known once loaded), for real."""
    out = str(tmp_path / "run")
    common = ["ddp", "--nproc-per-node", "2", "--device", "cpu", "--strategy", "fsdp",
              "--n-test", "64", "--batch-size", "64", "--out", out]  # fmt: skip
    first = _cli(cli_env, *common, "--n-train", "256", "--epochs", "1", "--data", "auto")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("FashionMNIST is not reachable") <= 1  # rank 0 alone says it
    proc = _cli(cli_env, *common, "--n-train", "128", "--epochs", "2", "--data", "auto",
                "--resume")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    notices = [n for n in proc.stderr.splitlines() if n.startswith("d2lopt: ")]  # offline data
    lines = [n for n in proc.stderr.strip().splitlines() if n not in notices]
    assert lines[0].startswith("d2lopt ddp: error: --resume: checkpoint was trained on 256")
    assert lines[-1] == lines[0]
    assert "ChildFailedError" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("FashionMNIST is not reachable") <= 1


def test_notices_are_said_by_rank_0_alone(monkeypatch, capsys) -> None:
    from d2lopt import data

    monkeypatch.setattr(data, "_announced", set())
    monkeypatch.setenv("RANK", "1")
    data.notice_once("issue-22", "said once per job")
    monkeypatch.setenv("RANK", "0")
    data.notice_once("issue-22", "said once per job")
    assert capsys.readouterr().err == "d2lopt: said once per job\n"


# ------------------------------------------------------------------ 5. resume
def test_resume_hint_is_the_command_typed_with_resume() -> None:
    typed = ["train", "--model", "cnn", "--epochs", "5", "--out", "runs/my cnn"]
    assert resume_command(typed) == (
        "d2lopt train --model cnn --epochs 5 --out 'runs/my cnn' --resume"
    )
    assert resume_command([*typed, "--resume"]).count("--resume") == 1


def test_interrupted_train_prints_the_exact_command(monkeypatch, tmp_path, capsys) -> None:
    import signal

    import d2lopt.train as train_module

    def interrupted(*args, **kwargs):
        raise train_module.TrainingInterrupted(signal.SIGINT, tmp_path / "checkpoint.pt")

    monkeypatch.setattr(train_module, "fit", interrupted)
    argv = ["train", "--model", "cnn", "--epochs", "3", "--n-train", "64", "--n-test", "32",
            "--data", "synthetic", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"Continue with: d2lopt {' '.join(argv)} --resume"), err


def test_resume_with_the_other_model_names_model_whole(cli_env, tmp_path) -> None:
    out = str(tmp_path / "run")
    flags = ["--n-train", "128", "--n-test", "64", "--data", "synthetic", "--out", out]
    assert _cli(cli_env, "train", "--model", "cnn", "--epochs", "1", *flags).returncode == 0
    proc = _cli(cli_env, "train", "--epochs", "2", *flags, "--resume")  # --model mlp: default
    assert proc.returncode == 2
    assert _one_line(proc) == (
        f"d2lopt train: error: --model: the checkpoint in {out} was trained with --model cnn; "
        "use --model cnn to continue it, or a new --out"
    )


def test_a_mismatched_net_is_described_whole(tmp_path) -> None:
    x, y = synthetic_fashion_mnist(64, seed=0)
    loader = DataLoader(TensorDataset(x.float() / 255, y), batch_size=32)
    fit(mlp(), loader, None, TrainConfig(num_epochs=1, batch_size=32), out_dir=tmp_path,
        progress=False)  # fmt: skip
    with pytest.raises(ParamError) as info:
        fit(mlp(hidden=64), loader, None, TrainConfig(num_epochs=2, batch_size=32),
            out_dir=tmp_path, resume=True, progress=False)  # fmt: skip
    text = str(info.value)
    assert "differ in shape" in text and text.endswith("(same --model) or choose a new out_dir")
    assert "Missing key" not in text and "size mismatch" not in text  # ours, whole: not cut


def test_fewer_ranks_say_how_the_global_batch_changes() -> None:
    from d2lopt.checkpoint import batch_change

    config = TrainConfig(batch_size=64)
    state = {"config": {"batch_size": 64}, "global_batch": 128, "world_size": 2, "accumulate": 1}
    note = batch_change(state, config, world_size=1)
    assert "trained 128 samples per optimizer step" in note and "takes 64" in note
    assert note.endswith("to keep 128, use --accumulate 2")
    assert batch_change(state, config, world_size=1, accumulate=2) is None
    assert batch_change(state, config, world_size=2) is None


# ------------------------------------------------------------------ 4. progress within an epoch
def test_fit_progress_moves_with_every_batch(capsys) -> None:
    x, y = synthetic_fashion_mnist(256, seed=0)
    loader = DataLoader(TensorDataset(x.float() / 255, y), batch_size=32)
    fit(mlp(), loader, None, TrainConfig(num_epochs=2, batch_size=32), progress=True)
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"[\r\n]", err) if f.strip()]
    assert any(f.startswith("epoch 1/2") for f in frames)
    last = frames[-1]  # the closed bar: every batch of the run, samples/s and the result
    assert last.startswith("epoch 2/2: 100%") and " 16/16 [" in last, last
    assert "batch/s" in last and "samples/s" in last and "train_loss" in last


# ------------------------------------------------------------------ 2. and 10. the learner's data
USER_MODULE = """
import torch
from torch.utils.data import Dataset

class DictSet(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return {"image": torch.rand(3, 8, 8), "label": i % 10}

class FloatLabels(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return torch.rand(3, 8, 8), float(i % 10)

class Pairs(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return torch.rand(3, 8, 8), i % 10

dict_set = DictSet()
float_set = FloatLabels()
pairs = Pairs()
"""


@pytest.fixture
def learner(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "mydata.py").write_text(USER_MODULE)
    yield tmp_path
    sys.modules.pop("mydata", None)  # the next test's mydata is another module


@pytest.mark.parametrize("command", ["tune-loader", "ladder"])
def test_a_dataset_of_dicts_is_refused_saying_what_it_found(cli_env, learner, command) -> None:
    proc = _cli(cli_env, command, "--dataset", "mydata:dict_set", "--out", "o", cwd=learner)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith(f"d2lopt {command}: error: --dataset: an item of mydata:dict_set is a "
                           "dict with keys 'image', 'label'; expected an (x, y) pair")  # fmt: skip
    assert "__getitem__ returns (x, y)" in line and "collate_fn" in line
    assert not (learner / "o").exists()


def test_labels_and_missing_names(learner, monkeypatch) -> None:
    from d2lopt.lab.ladder import load_user_data
    from d2lopt.lab.specs import resolve

    monkeypatch.chdir(learner)
    with pytest.raises(ParamError, match=r"y of an item of mydata:float_set is a float"):
        load_user_data("mydata:float_set")
    assert len(load_user_data("mydata:pairs")[0]) > 0
    with pytest.raises(ParamError) as info:
        resolve("mydata:missing_attr", "dataset", from_cwd=True)
    assert str(info.value).endswith(
        "no attribute 'missing_attr'; it defines: DictSet, FloatLabels, Pairs, dict_set, "
        "float_set, pairs"
    )  # not torch or Dataset, which it only imported


def test_tune_loader_explains_its_columns(learner, monkeypatch, capsys) -> None:
    monkeypatch.chdir(learner)
    code = main(["tune-loader", "--dataset", "mydata:pairs", "--workers", "0",
                 "--max-seconds", "1", "--device", "cpu", "--out", "t"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "waiting: the share of a pass spent waiting for the next batch" in out


# ------------------------------------------------------------------ 7. ladder.md
def test_ladder_reproduce_line_and_hints_name_the_flags() -> None:
    from d2lopt.lab.ladder import LadderSettings, reproduce_command
    from d2lopt.lab.ladder_report import _in_flags

    s = LadderSettings.preset(True, "cpu", dataset="mydata:pairs", model="mymodels:Net")
    result = {"settings": vars(s) | {"n_train": 100}, "device": "cpu: x86"}
    assert reproduce_command(result) == (
        "d2lopt ladder --quick --device cpu --dataset mydata:pairs --model mymodels:Net "
        "--n-train 100 --out DIR"
    )
    reason = "only 3 round(s) in 9.8 s, and a 95% interval needs 6: raise max_seconds"
    assert _in_flags(reason).endswith("raise --budget")


# ------------------------------------------------------------------ 8. the package's face
def test_dir_d2lopt_is_the_api() -> None:
    names = set(dir(d2lopt))
    assert not names & {"Any", "TYPE_CHECKING", "importlib", "sys", "types"}
    assert set(d2lopt.__all__) <= names


def test_readme_core_table_names_what_d2lopt_exports() -> None:
    """A plain name in the core rows is on ``d2lopt``; ``module.name`` is in that module."""
    import importlib
    import importlib.util

    readme = (ROOT / "README.md").read_text()
    core = readme.split("| **`d2lopt/`**", 1)[1].split("| **`d2lopt/lab/`**", 1)[0]
    for row in core.strip().splitlines()[1:]:
        modules, text = row.strip("|").split("|", 1)
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", text):
            head = name.split(".", 1)[0]
            if head in ("torch", "d2l", "d2lopt"):
                continue
            if "." in name:
                module, attr = name.rsplit(".", 1)
                assert hasattr(importlib.import_module(f"d2lopt.{module}"), attr), name
            elif importlib.util.find_spec(f"d2lopt.{name}") is None:  # not a module's name
                assert name in d2lopt.__all__, f"README core table: {name} is not on d2lopt"


# ------------------------------------------------------------------ 9. the explorer's chart
def test_explorer_chart_leaves_the_bars_most_of_the_width() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from d2lopt import plot

    label = "data=disk, num_workers={}, batch_size=64, prefetch_factor=2, pin_memory=False"
    for n in (1, 2, 8):
        shown = [(label.format(i), 1234.5 * (i + 1)) for i in range(n)]
        fig = plot._results_chart(shown, "samples/s", "{:,.0f}")
        renderer = fig._get_renderer()
        fig.draw(renderer)
        ax = fig.axes[0]
        box = ax.get_window_extent(renderer)
        assert box.width / fig.bbox.width >= 0.5, f"{n} bars: axes {box.width} px of 800"
        for text in ax.texts:  # every value label inside the axes
            extent = text.get_window_extent(renderer)
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (n, text.get_text())
        ticks = [t.get_text() for t in ax.get_yticklabels()]
        if n > 1:  # the settings every bar shares are said once, above the chart
            assert ticks[0] == "num_workers=0" and "prefetch_factor=2" in fig._suptitle.get_text()
        assert all(len(line) <= plot.LABEL_WIDTH + 1 for t in ticks for line in t.split("\n"))


# ------------------------------------------------------------------ 11. and 12. the Makefile
pytestmark_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytestmark_make
def test_make_setup_takes_the_torch_index_from_a_variable() -> None:
    def dry(*args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        return subprocess.run(["make", "-n", "-B", "setup", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip

    cpu = "https://download.pytorch.org/whl/cpu"
    assert f"pip install --quiet --index-url {cpu} torch torchvision" in dry(f"TORCH_INDEX={cpu}")
    assert "--index-url" not in dry()
    assert f"TORCH_INDEX={cpu}" in (ROOT / "README.md").read_text()


@pytestmark_make
def test_make_lab_opens_a_git_ignored_working_copy(tmp_path) -> None:
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    (tmp_path / "pyproject.toml").write_text("")
    nbs, bin_dir = tmp_path / "notebooks", tmp_path / ".venv" / "bin"
    nbs.mkdir()
    bin_dir.mkdir(parents=True)
    (nbs / "01_a.ipynb").write_text("course 1")
    (bin_dir / "jupyter").write_text('#!/bin/sh\necho "jupyter $*" >> "$0.log"\n')
    (bin_dir / "jupyter").chmod(0o755)
    stamp = tmp_path / ".venv" / ".d2lopt-installed"
    stamp.write_text("")
    later = time.time() + 60
    os.utime(stamp, (later, later))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}

    def lab() -> str:
        done = subprocess.run(["make", "--no-print-directory", "lab"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    said = lab()
    work = tmp_path / "my-notebooks"
    assert "made my-notebooks/, your working copy of notebooks/ (git-ignored)" in said
    assert (work / "01_a.ipynb").read_text() == "course 1"
    call = (bin_dir / "jupyter.log").read_text()
    assert "--ServerApp.root_dir=my-notebooks" in call
    # the settings that save widget state with a notebook (test_browser.py checks their effect)
    assert f"--LabApp.app_settings_dir={tmp_path}/jupyterlab-settings" in call
    (work / "01_a.ipynb").write_text("my run")  # the learner's outputs
    (nbs / "02_b.ipynb").write_text("course 2")  # git pull brought a new notebook
    said = lab()
    assert (work / "01_a.ipynb").read_text() == "my run"  # never overwritten
    assert (work / "02_b.ipynb").read_text() == "course 2"
    assert "opening my-notebooks/" in said
    ignored = subprocess.run(["git", "check-ignore", "-q", "my-notebooks/01_a.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0, "my-notebooks/ must be git-ignored"


def test_readme_says_how_the_commands_now_behave() -> None:
    readme = (ROOT / "README.md").read_text()
    for text in ("--oversubscribe", "--torchrun-report", "my-notebooks/", "samples/s and the",
                 "--accumulate` that keeps"):  # fmt: skip
        assert text in textwrap.dedent(readme).replace("\n", " ") or text in readme, text


def test_the_ddp_program_alone_prints_its_exact_resume_command(monkeypatch, tmp_path, capsys):
    import signal

    from d2lopt.dist import ddp
    from d2lopt.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGTERM, tmp_path / "checkpoint.pt")

    monkeypatch.setattr(ddp, "train", interrupted)
    argv = ["--device", "cpu", "--data", "synthetic", "--n-train", "64", "--out", str(tmp_path)]
    assert ddp.main(argv) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"continue with: python -m d2lopt.ddp {' '.join(argv)} --resume")


def test_a_package_lists_what_its_submodules_define_and_no_repr_is_cut() -> None:
    from d2lopt.lab.specs import _describe, resolve

    with pytest.raises(ParamError) as info:
        resolve("torchvision.datasets:NoSuchSet", "dataset")
    assert "it defines: CIFAR10, CIFAR100" in str(info.value)  # defined in its submodules
    with pytest.raises(ParamError) as info:
        resolve("torch.nn:NoNet", "model")
    assert "it defines: AdaptiveAvgPool1d" in str(info.value) and "more)" in str(info.value)

    class Image:  # a PIL image's repr carries its address: the type alone is said
        pass

    assert _describe(Image()) == f"a {__name__}.Image"
    assert _describe("x" * 60) == f"a str ('{'x' * 36}...)"  # 37 characters of the repr
