"""Project consistency: one source of truth for dependencies, CI = README, notebooks hygiene."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalize(spec: str) -> tuple[str, str]:
    req = Requirement(spec)
    return req.name.lower().replace("_", "-"), str(req.specifier)


def test_environment_yml_mirrors_pyproject() -> None:
    project = _pyproject()["project"]
    declared = {_normalize(s) for s in project["dependencies"]}
    declared |= {_normalize(s) for s in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = {_normalize(s) for s in pip_section if not s.startswith("-")}
    assert mirrored == declared, (
        f"only in environment.yml: {sorted(mirrored - declared)}; "
        f"only in pyproject.toml: {sorted(declared - mirrored)}"
    )
    assert "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_d2l_is_installed_without_its_pins() -> None:
    project = _pyproject()["project"]
    everything = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert not any(_normalize(s)[0] == "d2l" for s in everything)
    assert re.search(r"pip install .*--no-deps .*d2l==", (ROOT / "Makefile").read_text()) or (
        "--no-deps $(D2L)" in (ROOT / "Makefile").read_text()
    )


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command() -> None:
    commands = [c for c in _readme_commands() if not c.startswith("#")]
    assert len(commands) >= 2
    setup_and_lab, setup_and_test = commands[0], commands[1]
    assert "lab" in setup_and_lab and "test" in setup_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_and_test in ci.splitlines()


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"]["d2lopt"] == "d2lopt.cli:main"


def test_package_exports_are_importable() -> None:
    import d2lopt

    for name in d2lopt.__all__:
        assert hasattr(d2lopt, name), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_and_clean(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code cells"
    for cell in code:
        src = "".join(cell["source"])
        assert not re.search(
            r"^class \w+\((torch\.utils\.data\.)?(Iterable)?Dataset\)", src, re.M
        ), "Datasets live in d2lopt (spawn cannot pickle classes defined in a cell)"
        if cell.get("outputs"):
            assert cell.get("execution_count") is not None, "outputs without an execution count"
        for out in cell.get("outputs", []):
            tags = set(cell.get("metadata", {}).get("tags", []))
            assert out.get("output_type") != "error" or tags & {
                "raises-exception",
                "nbval-raises-exception",
            }, "a stored error output from an unexpected failure"
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"/(work|root|home/\w+)/|/tmp/ipykernel", text), (
                "an output shows a path of the machine that executed it"
            )
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("#"), "notebooks open with a title and learning goals"


def test_notebooks_are_numbered_without_gaps() -> None:
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1))
