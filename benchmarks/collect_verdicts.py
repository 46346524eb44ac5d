"""Collect the verdict tables the notebooks computed into one Markdown file.

Usage: python benchmarks/collect_verdicts.py > benchmarks/results/verdicts-cpu.md
Reads the committed notebook outputs (nothing is re-measured or typed by hand).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def verdict_tables(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    tables = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("data", {}).get("text/markdown", ""))
            if text.lstrip().startswith("| claim |"):
                tables.append(text.strip())
    return tables


def main() -> int:
    print("# Verdicts measured by the notebooks (committed outputs)\n")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for table in verdict_tables(path):
            print(f"## {path.stem}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
