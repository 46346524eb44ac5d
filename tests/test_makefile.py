"""The Makefile gives CI settings to the checking targets only, and ``make experiment`` works.

``make`` runs for real, on a copy of the Makefile in a scratch folder whose ``.venv/bin``
holds stubs that record the environment they were started with: no installation, no test
suite, no JupyterLab, but the exact recipes, prerequisites and exports of the real file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_ENV = {
    "TQDM_DISABLE": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONHASHSEED": "0",
}
# Make's own variables leak into sub-makes: a test run by `make test` must not inherit them.
_SCRUB = (*CI_ENV, "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
STUB = """#!/bin/sh
args=$(printf '%s' "$*" | tr '\\n|' '  ')  # one line per call (`python -c` code spans lines)
printf '%s|%s|%s|%s|%s\\n' "$(basename "$0")" "${TQDM_DISABLE-unset}" "${MPLBACKEND-unset}" \\
  "${PYTHONHASHSEED-unset}" "$args" >> "$STUB_LOG"
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch copy of the Makefile, with an up-to-date stamp and stub tools."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "05_disk_to_memory.ipynb").write_text("{}")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "jupyter", "ruff", "papermill"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "tests" / "browser").mkdir(parents=True)
    (tmp_path / "tests" / "browser" / "ensure_chromium.sh").write_text("true\n")
    stamp = tmp_path / ".venv" / ".d2lopt-installed"
    stamp.write_text("")
    later = time.time() + 60  # newer than pyproject.toml: `make setup` has nothing to do
    os.utime(stamp, (later, later))
    return tmp_path


def _make(project: Path, *args: str) -> list[dict[str, str]]:
    """Run ``make ARGS`` in ``project``; return each stub call with its environment."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["STUB_LOG"] = str(project / "calls.log")
    (project / "calls.log").write_text("")
    proc = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = []
    for line in (project / "calls.log").read_text().splitlines():
        tool, tqdm, mpl, seed, argv = line.split("|")
        calls.append(
            dict(tool=tool, TQDM_DISABLE=tqdm, MPLBACKEND=mpl, PYTHONHASHSEED=seed, args=argv)
        )
    assert calls, f"make {' '.join(args)} ran none of the stub tools"
    return calls


def test_make_lab_keeps_progress_bars(project: Path) -> None:
    calls = _make(project, "lab")
    assert {c["tool"] for c in calls} == {"jupyter"}  # trust, then lab
    assert any(c["args"].startswith("lab ") for c in calls)
    for call in calls:  # the learner's JupyterLab: tqdm on, nothing CI-only exported
        assert all(call[k] == "unset" for k in CI_ENV), call


@pytest.mark.parametrize(
    "target",
    [
        "test",
        "unit",
        "browser",
        "nbval NB=notebooks/05_disk_to_memory.ipynb",
        "nbval-emulated NB=notebooks/05_disk_to_memory.ipynb",
        "execute-notebooks NB=notebooks/05_disk_to_memory.ipynb",
    ],
)
def test_checking_targets_run_with_the_ci_settings(project: Path, target: str) -> None:
    calls = _make(project, *target.split())
    checked = [c for c in calls if "pytest" in c["args"] or "nbconvert" in c["args"]]
    assert checked, calls
    for call in checked:
        assert {k: call[k] for k in CI_ENV} == CI_ENV, call


def test_make_experiment_runs_papermill_into_runs(project: Path) -> None:
    calls = _make(project, "experiment", "NB=notebooks/05_disk_to_memory.ipynb", "SIZE=full")
    (run,) = [c for c in calls if "run_experiment.py" in c["args"]]  # papermill, error demos ok
    assert run["tool"] == "python" and run["args"].split() == [
        "benchmarks/run_experiment.py", "notebooks/05_disk_to_memory.ipynb",
        "runs/05_disk_to_memory-full.ipynb", "full",
    ]  # fmt: skip
    assert (project / "runs").is_dir()
    assert run["TQDM_DISABLE"] == "unset"  # papermill's cell bar: progress of a long run
    assert run["PYTHONHASHSEED"] == "0"


def test_make_experiment_refuses_a_notebook_without_one_parameters_cell(project: Path) -> None:
    import nbformat

    python = project / ".venv" / "bin" / "python"  # the real interpreter runs the check
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('SIZE = "ci"')])
    nbformat.write(nb, project / "notebooks" / "untagged.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["STUB_LOG"] = str(project / "calls.log")
    for nb_arg, found in (("notebooks/untagged.ipynb", "found: 0"), ("", "found: no file")):
        proc = subprocess.run(
            ["make", "experiment", f"NB={nb_arg}"] if nb_arg else ["make", "experiment"],
            cwd=project, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "cell tagged parameters" in proc.stderr and found in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (project / "runs").exists()  # refused before anything ran
