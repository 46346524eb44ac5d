"""Collect the verdict tables the notebooks computed, and the README's summary of them.

Usage:
    python benchmarks/collect_verdicts.py > benchmarks/results/verdicts-cpu-2core.md
    python benchmarks/collect_verdicts.py --readme   # rewrite the README's summary block

Reads the committed notebook outputs: nothing is re-measured, and nothing is typed by hand.
``tests/test_project.py`` checks that the README's block is what this script prints.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for readme_blocks
import readme_blocks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"
VERDICT = re.compile(r"\*\*(holds|does not hold|inconclusive|depends|skipped)\*\*")


def verdict_tables(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    tables = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("data", {}).get("text/markdown", ""))
            if text.lstrip().startswith("| claim |"):
                tables.append(text.strip())
    return tables


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def all_tables() -> str:
    lines = ["# Verdicts measured by the notebooks (committed outputs)", ""]
    for path in notebooks():
        for table in verdict_tables(path):
            lines += [f"## {path.stem}", "", table, ""]
    return "\n".join(lines)


def summary() -> str:
    """One row per notebook: how many claims came out which way (from the tables)."""
    kinds = ["holds", "does not hold", "inconclusive", "depends", "skipped"]
    rows = ["| notebook | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for path in notebooks():
        counts = dict.fromkeys(kinds, 0)
        for table in verdict_tables(path):
            for line in table.splitlines()[2:]:
                found = VERDICT.search(line.rsplit("|", 2)[-2] if line.count("|") >= 2 else "")
                if found:
                    counts[found.group(1)] += 1
        if any(counts.values()):
            rows.append(f"| `{path.stem}` | " + " | ".join(str(counts[k]) for k in kinds) + " |")
    return "\n".join(rows)


def readme_block() -> str:
    return f"{BEGIN}\n{summary()}\n{END}"


def main(argv: list[str]) -> int:
    if argv == ["--readme"]:
        readme_blocks.write(BEGIN, END, summary())
        return 0
    if argv:
        print("usage: collect_verdicts.py [--readme]", file=sys.stderr)
        return 2
    print(all_tables())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
