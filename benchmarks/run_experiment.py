"""Run one notebook at another size with papermill: ``make experiment NB=... SIZE=full``.

Papermill reports any error output as a failed run, including the cells that show an error
on purpose (tagged ``raises-exception``: the DataLoader misuse demos of 02 and 03, which
nbval checks). Those still run, and their errors are the lesson; any other error fails.

Usage: python benchmarks/run_experiment.py NOTEBOOK OUTPUT SIZE
"""

from __future__ import annotations

import sys

import nbformat
import papermill as pm
from papermill.exceptions import PapermillExecutionError


def unexpected_errors(nb: nbformat.NotebookNode) -> list[str]:
    """Error outputs of cells that are not tagged ``raises-exception``."""
    found = []
    for i, cell in enumerate(nb.cells):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    notebook, output, size = argv
    try:
        pm.execute_notebook(notebook, output, parameters={"SIZE": size}, cwd="notebooks")
    except PapermillExecutionError:
        errors = unexpected_errors(nbformat.read(output, as_version=4))
        if errors:
            print(f"{notebook} at SIZE={size} failed:\n  " + "\n  ".join(errors), file=sys.stderr)
            return 1
    print(f"{notebook} ran at SIZE={size}: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
