"""Re-running a notebook at another size with papermill (README, ``make experiment``).

Every notebook holds its size in one cell tagged ``parameters`` (``SIZE = "ci"``); papermill
injects ``SIZE = "full"`` right after it. These tests run real papermill processes with a
real kernel and read the executed notebooks back.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _papermill(src: Path, out: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``papermill SRC OUT ARGS`` as the README runs it (this interpreter's papermill)."""
    return subprocess.run(
        [sys.executable, "-m", "papermill", str(src), str(out), *args, "--cwd", str(cwd),
         "--no-progress-bar", "--kernel", "python3"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _text(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream"
    )


def _assigned_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics (%, !): not Python, assign nothing we check
        return set()
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_holding_size(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', want one"
    (cell,) = tagged
    assert cell.cell_type == "code"
    tree = ast.parse(cell.source)
    assert len(tree.body) == 1 and _assigned_names(cell.source) == {"SIZE"}, cell.source
    assert ast.literal_eval(tree.body[0].value) == "ci", "committed outputs are the CI size"
    # papermill's value goes right after this cell: a later `SIZE = ...` would overrule it
    for other in nb.cells:
        if other is not cell and other.cell_type == "code":
            assert "SIZE" not in _assigned_names(other.source), other.source


@pytest.mark.slow
def test_papermill_parameter_reaches_the_cells_after_the_parameters_cell(tmp_path) -> None:
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        cells=[
            nbformat.v4.new_code_cell("from d2lopt.sizes import for_size"),
            nbformat.v4.new_code_cell('SIZE = "ci"  # "ci", "full" or "gpu"'),
            nbformat.v4.new_code_cell("print(SIZE, for_size(SIZE, ci=2_048, full=60_000))"),
        ],
    )
    nb.cells[1].metadata["tags"] = ["parameters"]
    src = tmp_path / "sized.ipynb"
    nbformat.write(nb, src)

    proc = _papermill(src, tmp_path / "full.ipynb", "-p", "SIZE", "full", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    done = nbformat.read(tmp_path / "full.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in done.cells]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    assert _text(done.cells[-1]) == "full 60000\n"

    proc = _papermill(src, tmp_path / "huge.ipynb", "-p", "SIZE", "huge", cwd=tmp_path)
    assert proc.returncode != 0  # a bad size stops the run with the fix in the message
    assert "SIZE: expected one of 'ci', 'full', 'gpu', got 'huge'" in proc.stderr


@pytest.mark.slow
def test_papermill_reruns_01_environment_at_full_size(tmp_path) -> None:
    src = ROOT / "notebooks" / "01_environment.ipynb"
    committed = nbformat.read(src, as_version=4)
    if not any("parameters" in c.metadata.get("tags", []) for c in committed.cells):
        pytest.skip("01_environment has no parameters cell yet")
    out = tmp_path / "01_environment-full.ipynb"
    proc = _papermill(src, out, "-p", "SIZE", "full", cwd=ROOT / "notebooks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = nbformat.read(out, as_version=4)
    (injected,) = [c for c in done.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'SIZE = "full"' in injected.source
    # the cells that printed SIZE='ci' in the committed notebook print SIZE='full' now
    executed = {c.get("id"): c for c in done.cells}
    sized = [c for c in committed.cells if "SIZE='ci'" in _text(c)]
    assert sized, "01_environment should print its SIZE-derived knobs"
    for cell in sized:
        text = _text(executed[cell.get("id")])
        assert "SIZE='full'" in text and "SIZE='ci'" not in text, text
    assert json.loads(out.read_text())["metadata"]["papermill"]["parameters"] == {"SIZE": "full"}


def test_experiment_runner_tolerates_only_the_error_demo_cells():
    import importlib.util

    import nbformat

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_experiment.py"
    spec = importlib.util.spec_from_file_location("run_experiment", path)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    error = nbformat.v4.new_output("error", ename="ValueError", evalue="demo", traceback=[])
    demo = nbformat.v4.new_code_cell("raise ValueError", outputs=[error])
    demo.metadata["tags"] = ["raises-exception"]
    bug = nbformat.v4.new_code_cell("1 / 0", outputs=[error])
    nb = nbformat.v4.new_notebook(cells=[demo])
    assert runner.unexpected_errors(nb) == []
    nb.cells.append(bug)
    assert runner.unexpected_errors(nb) == ["cell 1: ValueError: demo"]
