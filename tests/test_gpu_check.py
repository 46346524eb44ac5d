"""benchmarks/gpu_check.sh and its Python half, checked on any machine (GPU or not).

The GPU work itself needs a GPU; what is checked here is everything around it: the shell
syntax (and shellcheck), the no-GPU exit, the plan, the step runner's bookkeeping
(timeouts, failures, the deadline), the folder name, the test list and the summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HELPER = ROOT / "benchmarks" / "gpu_check.py"
STEPS = ("env", "tests", "bandwidth", "ddp", "fsdp", "parallelism", "nb07", "nb08", "ladder")

_spec = importlib.util.spec_from_file_location("gpu_check", HELPER)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The script's environment: results under tmp_path, no GPU unless a test fakes one, and
    no network: any download would go to a proxy that does not answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(OUT=str(tmp_path / "out"), NVIDIA_SMI=str(tmp_path / "no-such-nvidia-smi"))
    env.update(GPU_CHECK_WORK=str(tmp_path / "work"), GPU_CHECK_WHEELS=str(tmp_path / "wheels"))
    env.update(GPU_CHECK_SITE=str(tmp_path / "site"), PYTHON=str(VENV_PYTHON))
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers there
    env.update(http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead)
    env.update(PIP_NO_INDEX="1")
    env.update(extra)
    return env


def run_script(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=script_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_sourced(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in bash after sourcing the script (its functions, without main)."""
    prelude = (
        f"source {SCRIPT}\ncd {ROOT}\nDIR={tmp_path}\nDEST={tmp_path}/dest\n"
        "mkdir -p $DIR/logs\n: > $DIR/steps.tsv\n"
    )
    return subprocess.run(
        ["bash", "-c", prelude + body],
        env=script_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------- the shell script
@needs_bash
def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_shellcheck_is_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (Debian: apt-get install -y shellcheck)")
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@needs_bash
def test_without_a_gpu_it_exits_2_with_one_message_and_writes_nothing(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no NVIDIA GPU" in lines[0] and "nothing was measured" in lines[0]
    assert "--plan" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def _fake_nvidia_smi(tmp_path: Path) -> str:
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "NVIDIA H200"\n')
    fake.chmod(0o755)
    return str(fake)


@needs_bash
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's torch does use CUDA")
def test_a_gpu_torch_cannot_use_is_not_a_gpu_result(tmp_path):
    done = run_script(tmp_path, NVIDIA_SMI=_fake_nvidia_smi(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"the torch of PYTHON={VENV_PYTHON} cannot use the GPU 'NVIDIA H200'" in done.stderr
    assert "torch.cuda.is_available() is False" in done.stderr  # said plainly, with versions
    work = tmp_path / "work" / "gpu-nvidia-h200"
    summary = json.loads((work / "summary.json").read_text())
    assert summary["all_ok"] is False and "not a GPU result" in summary["note"]
    assert summary["python"] == str(VENV_PYTHON)
    assert [s["name"] for s in summary["steps"]] == ["cuda-check"]  # nothing was measured
    # the results: one folder deep, summary.md beside the packed work folder
    dest = tmp_path / "out" / "gpu-nvidia-h200"
    assert sorted(p.name for p in dest.iterdir()) == ["results.tar.gz", "summary.md"]
    with tarfile.open(dest / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-nvidia-h200/summary.json" in names and "gpu-nvidia-h200/steps.tsv" in names
    assert not (tmp_path / "site").exists()  # nothing installed before the CUDA check


def _wheel(folder: Path, name: str, version: str, module: str) -> Path:
    """A minimal pure-Python wheel (PEP 427) holding ``module``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{module}.py": "VALUE = 1\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{k},,\n" for k in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{dist}.dist-info/RECORD", record)
    return path


@needs_bash
def test_plan_names_the_python_the_wheels_the_budgets_and_the_files_offline(tmp_path):
    _wheel(tmp_path / "wheels", "pytest", "1.0", "pytest_stub")  # the image has pytest
    _wheel(tmp_path / "wheels", "no-such-dist-d2lopt", "2.0", "no_such_module_d2lopt")
    done = run_script(tmp_path, "--plan")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    steps = [line.split()[2] for line in text.splitlines() if line.startswith("step ")]
    assert steps == ["wheels", *STEPS]
    budgets = {line.split()[2]: line.split()[4] for line in text.splitlines()
               if line.startswith("step ")}  # fmt: skip
    assert budgets["ladder"] == "80s" and budgets["nb08"] == "90s"
    assert f"python: PYTHON={VENV_PYTHON} -> {VENV_PYTHON}" in text  # the image's Python
    assert "torch.cuda.is_available()" in text
    assert f"PYTHONPATH={ROOT}:{tmp_path}/site" in text  # the checkout's package, no install
    assert "install no-such-dist-d2lopt 2.0 (no_such_dist_d2lopt-2.0-py3-none-any.whl)" in text
    assert "skip    pytest 1.0: this Python has" in text  # the image's own copy is kept
    assert f"install-wheels {tmp_path}/wheels {tmp_path}/site" in text
    assert "--no-index" in text and "make setup" not in text and ".venv/bin/d2lopt" not in text
    assert "-m pytest -p no:cacheprovider" in text and "--junitxml" in text
    assert "gpu_check.py bandwidth" in text
    assert (f"{VENV_PYTHON} -m torch.distributed.run --standalone --nproc-per-node 1 "
            "-m d2lopt.ddp --device cuda") in text  # fmt: skip
    assert "--backend nccl" in text and "--epochs 1" in text
    assert "07_cpu_to_gpu.ipynb" in text and "08_gpu_compute.ipynb" in text
    assert text.count("-p SIZE gpu") == 2
    assert text.count("needs: papermill nbclient ipykernel matplotlib_inline") == 2
    assert f"{VENV_PYTHON} -m d2lopt.cli ladder --quick --device cuda --budget 60 --out" in text
    assert f"{tmp_path}/work/gpu-SLUG/" in text
    assert (f"results: {tmp_path}/out/gpu-SLUG/summary.md and "
            f"{tmp_path}/out/gpu-SLUG/results.tar.gz") in text  # fmt: skip
    for path in ("out", "work", "site"):
        assert not (tmp_path / path).exists()  # nothing written, nothing installed


@needs_bash
def test_plan_without_a_wheels_folder_says_what_will_be_skipped(tmp_path):
    done = run_script(tmp_path, "--plan", PYTHON="no-such-python-d2lopt")
    assert done.returncode == 0, done.stderr
    assert "PYTHON=no-such-python-d2lopt is not found here" in done.stdout
    assert "make gpu-wheels on a networked machine" in done.stdout
    assert run_script(tmp_path, "--bogus").returncode == 2


@needs_bash
def test_the_old_dry_run_variable_still_prints_the_plan(tmp_path):
    done = run_script(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert done.returncode == 0 and "gpu_check.sh plan (dry run" in done.stdout


def test_the_wheels_go_offline_into_the_site_folder_never_over_the_images(tmp_path):
    _wheel(tmp_path / "wheels", "pytest", "1.0", "pytest_stub")
    _wheel(tmp_path / "wheels", "no-such-dist-d2lopt", "2.0", "no_such_module_d2lopt")
    done = subprocess.run(
        [str(VENV_PYTHON), str(HELPER), "install-wheels", str(tmp_path / "wheels"),
         str(tmp_path / "site")],
        env=script_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "no_such_module_d2lopt.py").is_file()
    assert not (tmp_path / "site" / "pytest_stub.py").exists()  # the image's pytest stays


@needs_bash
def test_a_step_whose_package_is_missing_says_so_and_the_next_runs(tmp_path):
    done = run_sourced(
        tmp_path,
        "MIN_STEP_S=1 RESERVE_S=0\n"
        "run_step 5a nb07 30 'echo ran' 'json no_such_module_d2lopt'\n"
        "run_step 6 after 30 'echo still running'\n",
    )
    assert done.returncode == 0, done.stderr
    skipped, after = gpu_check.read_steps(tmp_path / "steps.tsv")
    assert skipped["status"] == "skipped" and "no_such_module_d2lopt" in skipped["note"]
    assert "json" not in skipped["note"]  # only the missing one is named
    assert "make gpu-wheels" in skipped["note"]
    assert after["status"] == "ok"


def test_make_gpu_wheels_downloads_the_pinned_list_for_the_gpu_images_python():
    reqs = gpu_check.wheel_requirements()
    names = {r.split("==")[0] for r in reqs}
    assert {"papermill", "nbclient", "ipykernel", "matplotlib-inline", "d2l"} <= names
    assert not names & {"torch", "torchvision", "numpy", "pytest", "matplotlib", "pandas"}
    assert len(names) == len(reqs)  # one version of each
    done = subprocess.run(
        ["python3", str(HELPER), "wheels", "--plan", "--dest", "W"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cmd = done.stdout.split()
    assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    assert "--python-version 3.12 --implementation cp" in done.stdout
    assert "--platform manylinux_2_28_x86_64" in done.stdout and "--dest W" in done.stdout
    assert cmd[-len(reqs) :] == reqs


def test_wheel_names_are_read_as_pep_427_says():
    name = gpu_check.wheel_dist("nest_asyncio2-1.7.4-py3-none-any.whl")
    assert name == ("nest-asyncio2", "1.7.4")
    assert gpu_check.wheel_dist("pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl")[0] == "pyzmq"
    with pytest.raises(ValueError, match="not a wheel file name"):
        gpu_check.wheel_dist("papermill.whl")


@needs_bash
def test_ladder_and_ddp_arguments_can_be_set_without_editing(tmp_path):
    done = run_script(
        tmp_path,
        GPU_CHECK_DRY_RUN="1",
        GPU_CHECK_LADDER_ARGS="--device cuda --rounds 2",
        GPU_CHECK_DDP_ARGS="--device cuda --epochs 2",
    )
    assert "-m d2lopt.cli ladder --device cuda --rounds 2 --out" in done.stdout
    assert "-m d2lopt.ddp --device cuda --epochs 2 --out" in done.stdout


@needs_bash
def test_every_step_command_is_valid_bash(tmp_path):
    done = run_sourced(
        tmp_path,
        'run_step() { bash -n -c "$4" || echo "BAD $1 $2"; echo "checked $1"; }\nplan\n',
    )
    assert done.returncode == 0, done.stderr
    assert "BAD" not in done.stdout
    assert done.stdout.count("checked") == len(STEPS)


@needs_bash
def test_run_step_records_each_outcome_and_keeps_going(tmp_path):
    done = run_sourced(
        tmp_path,
        "MIN_STEP_S=1 KILL_GRACE_S=1 RESERVE_S=0 GPU_NAME='NVIDIA H200' STARTED=now\n"
        "run_step 1 hello 30 'echo hello; echo to-stderr >&2'\n"
        "run_step 2 broken 30 'exit 3'\n"
        "run_step 3 slow 1 'sleep 30'\n"
        "run_step 4 after 30 'echo still running'\n"
        "finish 0\n",
    )
    assert done.returncode == 1  # not every step was ok
    rows = gpu_check.read_steps(tmp_path / "steps.tsv")
    assert [(r["name"], r["status"], r["rc"]) for r in rows] == [
        ("hello", "ok", 0),
        ("broken", "failed", 3),
        ("slow", "timeout", 124),
        ("after", "ok", 0),
    ]
    log = (tmp_path / "logs" / "1-hello.log").read_text().splitlines()
    assert log[0] == "$ echo hello; echo to-stderr >&2"
    assert any(line.endswith("] hello") for line in log)  # stamped [HH:MM:SS]
    assert any(line.endswith("] to-stderr") for line in log)
    assert log[-1].startswith("exit code 0 after")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "NVIDIA H200" and summary["all_ok"] is False
    assert "| 3 slow | timeout | 124 |" in (tmp_path / "summary.md").read_text()
    assert "what it wrote so far is kept" in rows[2]["note"]
    dest = tmp_path / "dest"  # the results: summary.md beside the packed work folder
    assert sorted(p.name for p in dest.iterdir()) == ["results.tar.gz", "summary.md"]
    with tarfile.open(dest / "results.tar.gz") as tar:
        packed = tar.getnames()
    assert f"{tmp_path.name}/logs/3-slow.log" in packed  # the stopped step's partial log


@needs_bash
def test_a_step_past_the_deadline_is_skipped_not_run(tmp_path):
    done = run_sourced(
        tmp_path,
        f"DEADLINE_S=0\nrun_step 6 ladder 100 'touch {tmp_path}/ran'\n",
    )
    assert done.returncode == 0, done.stderr
    (row,) = gpu_check.read_steps(tmp_path / "steps.tsv")
    assert row["status"] == "skipped" and row["rc"] is None
    assert "no time left" in row["note"]
    assert not (tmp_path / "ran").exists()


def test_budgets_fit_in_eight_minutes():
    values = {}
    for line in SCRIPT.read_text().splitlines():
        name, _, rest = line.partition("=")
        if name.startswith("BUDGET_") or name in ("RESERVE_S",):
            values[name] = int(rest.split()[0])
    deadline = next(
        line for line in SCRIPT.read_text().splitlines() if line.startswith("DEADLINE_S=")
    )
    assert deadline == "DEADLINE_S=${GPU_CHECK_DEADLINE_S:-480}"
    steps = sum(v for k, v in values.items() if k != "RESERVE_S")
    assert len(values) == len(STEPS) + 2  # every step, the wheels and the reserve
    assert steps + values["RESERVE_S"] <= 480


# ------------------------------------------------------------------- the Python helper
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", "nvidia-h200"),
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("  Tesla V100-SXM2-16GB ", "tesla-v100-sxm2-16gb"),
        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
    ],
)
def test_slug(name, expected):
    assert gpu_check.slug(name) == expected


def test_slug_rejects_a_name_without_letters():
    with pytest.raises(ValueError, match="name: '--' has no letters or digits"):
        gpu_check.slug("--")


def test_slug_command_line():
    done = subprocess.run(
        ["python3", str(HELPER), "slug", "NVIDIA H200"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (0, "nvidia-h200\n")


def test_cuda_test_ids_are_this_suites_cuda_skips():
    ids = gpu_check.cuda_test_ids("tests")
    assert "tests/test_transfer.py::test_copy_bandwidth_measures_on_cuda" in ids
    assert "tests/test_profiling.py::test_cuda_item_is_a_runtime_sync" in ids
    assert "tests/test_transfer.py::test_overlap_ideal_is_the_longer_part" not in ids  # CPU


def test_cuda_test_ids_finds_every_form(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import conftest\nfrom conftest import requires_cuda\n\n"
        "@requires_cuda\ndef test_one(): pass\n\n"
        "def test_cpu(): pass\n\n"
        "@conftest.requires_cuda\ndef test_two(): pass\n\n"
        "class TestGroup:\n    @requires_cuda\n    def test_three(self): pass\n"
        "    def test_cpu_too(self): pass\n\n"
        "@requires_cuda\nclass TestAll:\n    def test_four(self): pass\n"
    )
    (tests / "test_b.py").write_text("pytestmark = [requires_cuda]\n\ndef test_x(): pass\n")
    (tests / "test_c.py").write_text("def test_cpu_only(): pass\n")
    assert gpu_check.cuda_test_ids("tests", root=tmp_path) == [
        "tests/test_a.py::test_one",
        "tests/test_a.py::test_two",
        "tests/test_a.py::TestGroup::test_three",
        "tests/test_a.py::TestAll",
        "tests/test_b.py",
    ]


def test_cuda_tests_command_fails_when_there_are_none(tmp_path):
    (tmp_path / "tests").mkdir()
    done = subprocess.run(
        ["python3", str(HELPER), "cuda-tests", "--tests-dir", str(tmp_path / "tests")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stdout == ""  # never an empty list: pytest runs all
    assert "no @requires_cuda tests" in done.stderr


def _notebook(path: Path, tags: list[list[str]]) -> Path:
    cells = [{"cell_type": "code", "metadata": {"tags": t}, "source": ""} for t in tags]
    path.write_text(json.dumps({"cells": cells}))
    return path


def test_parameters_check(tmp_path):
    good = _notebook(tmp_path / "good.ipynb", [[], ["parameters"], ["nbval-ignore-output"]])
    bad = _notebook(tmp_path / "bad.ipynb", [[], ["nbval-ignore-output"]])
    assert gpu_check.parameters_cells(good) == 1 and gpu_check.parameters_cells(bad) == 0
    ok = subprocess.run(["python3", str(HELPER), "parameters", str(good)], capture_output=True)
    assert ok.returncode == 0
    no = subprocess.run(
        ["python3", str(HELPER), "parameters", str(bad)], capture_output=True, text=True
    )
    assert no.returncode == 1 and "silently run the CI size" in no.stderr
    with pytest.raises(ValueError, match="notebook: .* is not a file"):
        gpu_check.parameters_cells(tmp_path / "missing.ipynb")


def test_pcie_theoretical_bandwidth():
    assert round(gpu_check.pcie_theoretical_gb_per_s(5, 16), 2) == 63.02
    assert round(gpu_check.pcie_theoretical_gb_per_s(4, 16), 2) == 31.51
    assert gpu_check.pcie_theoretical_gb_per_s(2, 8) == 4.0
    with pytest.raises(ValueError, match="gen: PCIe generation"):
        gpu_check.pcie_theoretical_gb_per_s(7, 16)
    with pytest.raises(ValueError, match="width: lane count"):
        gpu_check.pcie_theoretical_gb_per_s(5, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5, 16\n", (5, 16)), ("4, 8", (4, 8)), ("[N/A], [N/A]\n", None), ("", None)],
)
def test_parse_pcie_query(text, expected):
    assert gpu_check.parse_pcie_query(text) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bandwidth_without_cuda_names_the_device_flag(tmp_path):
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(HELPER), "bandwidth"]
        + ["--out", str(tmp_path / "bw.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("gpu_check.py bandwidth: --device:")
    assert not (tmp_path / "bw.json").exists()


def test_bandwidth_markdown_shows_the_interval_and_says_unknown_without_a_link():
    row = {"size_mb": 16, "pageable_gb_per_s": 1.0, "pinned_gb_per_s": 3.0}
    result = {
        "sizes": [
            {
                **row,
                "pinned_over_pageable": 3.0,
                "ci": [2.5, 3.5],
                "rounds": 12,
                "verdict": "holds",
            },
            {
                **row,
                "pinned_over_pageable": 3.0,
                "ci": None,
                "rounds": 2,
                "verdict": "inconclusive",
            },
        ],
        "link": {"theoretical_gb_per_s": None, "theoretical_note": "unknown: no PCIe link"},
    }
    md = gpu_check.bandwidth_markdown(result)
    assert "| 16 MiB | 1.00 | 3.00 | 3.00x [2.50, 3.50], 12 | holds |" in md
    assert "| 16 MiB | 1.00 | 3.00 | 3.00x [no interval], 2 | inconclusive |" in md
    assert md.endswith("Link theoretical bandwidth: unknown: no PCIe link.")


def test_summary_counts_junit_results(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "junit.xml").write_text(
        '<testsuites><testsuite tests="6" failures="1" errors="0" skipped="2"/></testsuites>'
    )
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "4-ddp.log").write_text("world_size=1 backend=nccl device=cuda\n")
    (tmp_path / "steps.tsv").write_text(
        "2\ttests\tfailed\t1\t12\t50\tlogs/2-tests.log\t\tpytest ...\n"
        "4\tddp\tok\t0\t20\t60\tlogs/4-ddp.log\t\ttorchrun ...\n"
    )
    summary = gpu_check.write_summary(tmp_path)
    assert summary["tests"] == {"tests": 6, "failures": 1, "errors": 0, "skipped": 2}
    assert summary["ddp_backend_nccl_seen"] is True and summary["all_ok"] is False
    md = (tmp_path / "summary.md").read_text()
    assert "CUDA-only tests: 6 run, 1 failed, 0 errors, 2 skipped" in md
    assert "| 4 ddp | ok | 0 | 20 | 60 | logs/4-ddp.log |  |" in md


def test_read_steps_rejects_a_malformed_line(tmp_path):
    (tmp_path / "steps.tsv").write_text("1\tenv\tmaybe\t0\t1\t20\tlog\t\tcmd\n")
    with pytest.raises(ValueError, match="unknown status 'maybe'"):
        gpu_check.read_steps(tmp_path / "steps.tsv")


def test_bandwidth_compares_pageable_against_pinned_and_converts_to_gb_per_s(monkeypatch):
    """The bookkeeping of ``measure_bandwidth`` around ``d2lopt.compare`` (no GPU needed)."""
    import importlib
    import types

    from d2lopt.measure import Comparison

    compare_module = importlib.import_module("d2lopt.measure")
    transfer = importlib.import_module("d2lopt.lab.transfer")

    compared = []

    def fake_compare(baseline, candidate, *, device, max_seconds, label):
        compared.append((baseline(), candidate(), max_seconds))
        per_copy = 2**20 / 1e9  # seconds for 1 MiB at 1 GB/s
        return Comparison(
            label, 4.0, (3.5, 4.5), 10, "holds", "", 0.05, 0.95,
            (per_copy,) * 10, (per_copy / 4,) * 10,
        )  # fmt: skip

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    monkeypatch.setattr(transfer, "copy_fn", lambda nbytes, *, mode, device: lambda: (mode, nbytes))
    monkeypatch.setattr(transfer, "cuda_skip_reason", lambda device: "")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace())
    monkeypatch.setattr(gpu_check, "_link_theory", lambda gpu: {"theoretical_gb_per_s": None})
    result = gpu_check.measure_bandwidth([1, 2], max_seconds=3.0)
    assert compared == [
        (("pageable", 2**20), ("pinned", 2**20), 3.0),
        (("pageable", 2**21), ("pinned", 2**21), 3.0),
    ]
    assert result["device"] == "NVIDIA H200"
    one_mib = result["sizes"][0]
    assert (one_mib["pageable_gb_per_s"], one_mib["pinned_gb_per_s"]) == (1.0, 4.0)
    assert one_mib["pinned_over_pageable"] == 4.0 and one_mib["ci"] == [3.5, 4.5]
    assert one_mib["verdict"] == "holds" and one_mib["rounds"] == 10
