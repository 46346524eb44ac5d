"""The shape of every lesson: short cells, short printouts (issue 23, "Show the lines that matter").

The anchors (d2l.ai's Computational Performance chapter, PyTorch's Performance Tuning Guide)
show the few lines that matter and one chart. A code cell longer than a screen is bookkeeping
that belongs in ``d2lopt``; a printout longer than a screen is a log the learner scrolls past.
Tables (HTML, Markdown) and charts (images) are what a lesson is for, so they are not counted.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MAX_CELL_LINES = 30
MAX_PRINTED_LINES = 40
# Rich outputs that are a table or a chart: not counted as printed lines.
RICH = ("text/html", "text/markdown", "image/")
# Their verdict cells move into the package on the claims branch (issue 23 §1).


def printed_lines(cell: nbformat.NotebookNode) -> int:
    """Lines a code cell prints: stream text (stdout and stderr) and plain-text results."""
    n = 0
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            n += len(out.text.splitlines())
        elif out.output_type in ("execute_result", "display_data"):
            data = out.get("data", {})
            if not any(k.startswith(RICH) for k in data):
                n += len(data.get("text/plain", "").splitlines())
    return n


def shape_problems(path: Path) -> list[str]:
    """One line per code cell of ``path`` that is too long or prints too much."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = len(cell.source.splitlines())
        if lines > MAX_CELL_LINES:
            problems.append(f"cell {i}: {lines} lines of code (at most {MAX_CELL_LINES})")
        printed = printed_lines(cell)
        if printed > MAX_PRINTED_LINES:
            problems.append(f"cell {i}: prints {printed} lines (at most {MAX_PRINTED_LINES})")
    return problems


def _params() -> list:
    return [pytest.param(path, id=path.stem) for path in sorted(NOTEBOOKS.glob("*.ipynb"))]


def test_there_are_notebooks() -> None:
    assert len(list(NOTEBOOKS.glob("*.ipynb"))) >= 14


@pytest.mark.parametrize("path", _params())
def test_cells_are_short_and_print_little(path: Path) -> None:
    problems = shape_problems(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_rule_sees_a_long_cell_and_a_long_printout(tmp_path: Path) -> None:
    # the check can fail: a notebook that breaks both rules is reported twice
    long_code = nbformat.v4.new_code_cell("\n".join(f"x{i} = {i}" for i in range(31)))
    chatty = nbformat.v4.new_code_cell("print('\\n'.join(map(str, range(41))))")
    chatty.outputs = [nbformat.v4.new_output("stream", text="".join(f"{i}\n" for i in range(41)))]
    table = nbformat.v4.new_code_cell("display(df)")
    table.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/html": "<table/>", "text/plain": "row\n" * 100}
        )
    ]
    nb = nbformat.v4.new_notebook(cells=[long_code, chatty, table])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    assert shape_problems(path) == [
        "cell 0: 31 lines of code (at most 30)",
        "cell 1: prints 41 lines (at most 40)",
    ]
