"""`make test` runs strict nbval natively; `make nbval-emulated` on emulated hardware.

Float results drift with the CPU's instruction set, the kernels and the thread count, so
the committed outputs must also pass with other kernels and 1 or 2 threads (issue 13): CI
runs `make nbval-emulated` after `make test` (issue 19 keeps `make test` to minutes). These
tests read what make *would* run (`make -n`), so they run nothing heavy.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

EMULATED = ("ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2")


def dry_run(*args: str) -> list[str]:
    """The commands `make -n ARGS` prints, without an outer make's flags or an exported NB."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.pop("NB", None)
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def nbval_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " -m pytest " in line and "--nbval " in line]


XDIST = " -n 2 --dist loadfile"  # two workers; a file (a notebook: one kernel) stays on one


def test_make_test_runs_unit_tests_and_native_nbval_in_one_run_over_two_workers():
    lines = dry_run("test")
    (run,) = nbval_lines(lines)  # no emulated pass: CI runs `make nbval-emulated` after it
    assert " -m pytest tests notebooks/*.ipynb --nbval " in run  # every test, every notebook
    assert not any(var in run for var in EMULATED) and "OMP_NUM_THREADS" not in run
    assert run.endswith(XDIST)
    assert lines.index(".venv/bin/ruff check .") < lines.index(run)  # lint first
    assert dry_run("test", "JOBS=0")[-1].endswith(" -n 0 --dist loadfile")  # no workers


def test_make_unit_runs_the_tests_over_two_workers():
    assert dry_run("unit")[-1].endswith("-m pytest tests" + XDIST)


def test_nbval_emulated_runs_every_notebook_on_other_kernels_with_1_then_2_threads():
    one, two = nbval_lines(dry_run("nbval-emulated"))
    for line, threads in ((one, 1), (two, 2)):
        assert all(var in line for var in EMULATED) and line.endswith(XDIST)
        assert f"OMP_NUM_THREADS={threads} " in line and "notebooks/*.ipynb" in line
    (only,) = nbval_lines(dry_run("nbval-emulated", "THREADS=2"))  # one CI job's share
    assert all(var in only for var in EMULATED) and "OMP_NUM_THREADS=2 " in only


def test_nbval_targets_take_one_notebook():
    nb = "notebooks/02_definition.ipynb"
    for target, count in (("nbval", 1), ("nbval-emulated", 2)):
        runs = nbval_lines(dry_run(target, f"NB={nb}"))
        assert len(runs) == count
        assert all(f" {nb} " in line and "*.ipynb" not in line for line in runs)


STUB = """#!/bin/sh
printf '%s|%s|%s|%s|%s\\n' "${ATEN_CPU_CAPABILITY-unset}" "${ONEDNN_MAX_CPU_ISA-unset}" \\
  "${OMP_NUM_THREADS-unset}" "${TQDM_DISABLE-unset}" "$*" >> "$STUB_LOG"
"""


def test_nbval_runs_get_the_emulated_hardware_and_ci_settings(tmp_path):
    """Run the real recipes against a stub interpreter that records its environment."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(STUB)
    (bin_dir / "python").chmod(0o755)
    stamp = tmp_path / ".venv" / ".d2lopt-installed"
    stamp.write_text("")
    os.utime(stamp, (2**31 - 1, 2**31 - 1))  # newer than pyproject.toml: no set-up
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    for var in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "TQDM_DISABLE"):
        env.pop(var, None)
    env["STUB_LOG"] = str(tmp_path / "calls.log")
    nb = "notebooks/02_definition.ipynb"
    for target in ("nbval", "nbval-emulated", "nbval-emulated THREADS=2"):
        subprocess.run(
            ["make", "--no-print-directory", *target.split(), f"NB={nb}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
    calls = [line.split("|") for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert [c[:4] for c in calls] == [
        ["unset", "unset", "unset", "1"],  # native: this machine's kernels and threads
        ["avx2", "AVX2", "1", "1"],
        ["avx2", "AVX2", "2", "1"],
        ["avx2", "AVX2", "2", "1"],  # THREADS=2: that pass alone
    ]
    assert all(c[4].startswith(f"-m pytest {nb} --nbval ") for c in calls)


def test_make_gpu_wheels_needs_no_venv_and_names_the_gpu_images_python():
    lines = dry_run("gpu-wheels")
    text = " ".join(lines)
    assert "benchmarks/gpu_check.py wheels --dest .gpu-wheels" in text
    assert "--python-version 3.12" in text
    assert ".venv" not in text  # made on any networked machine, for the GPU image
    other = " ".join(dry_run("gpu-wheels", "GPU_PYTHON_VERSION=3.11", "GPU_WHEELS=w"))
    assert "--dest w" in other and "--python-version 3.11" in other
