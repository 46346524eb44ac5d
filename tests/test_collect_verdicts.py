"""The README's verdict summary and the results file come from the notebooks' outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "collect", ROOT / "benchmarks" / "collect_verdicts.py"
)
collect = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect)


def test_readme_summary_is_what_the_script_computes_from_the_committed_outputs():
    assert collect.readme_block() in (ROOT / "README.md").read_text(), (
        "README's verdict block is stale: run python benchmarks/collect_verdicts.py --readme"
    )


def test_results_file_is_what_the_script_collects():
    committed = (ROOT / "benchmarks" / "results" / "verdicts-cpu-2core.md").read_text()
    assert committed.strip() == collect.all_tables().strip(), (
        "run python benchmarks/collect_verdicts.py > benchmarks/results/verdicts-cpu-2core.md"
    )


def test_summary_counts_the_verdict_column_only():
    table = "\n".join([
        "| claim | statement | measured here | verdict |",
        "|---|---|---|---|",
        "| C1 | x **holds** in prose | 1.2x [1.1, 1.3], 6 rounds | **does not hold** (2 cores) |",
    ])  # fmt: skip
    line = table.splitlines()[2]
    assert collect.VERDICT.search(line.rsplit("|", 2)[-2]).group(1) == "does not hold"
