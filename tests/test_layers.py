"""The package's layers import downward only, and no two modules import each other.

The core (``d2lopt/*.py``) imports no ``dist/``, ``lab/`` or ``cli/``; ``lab/`` and ``dist/``
import no ``cli/``; and no chain of imports leads from a module back to itself. Every
import counts, also one inside a function (a lazy import is still a dependency), read
with ``ast`` from the source: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "d2lopt"

# the documented command names ``python -m d2lopt.ddp`` / ``-m d2lopt.parallelism``: two
# programs' entry points at the top of the house, not core modules (they import nothing else)
COMMANDS = {"d2lopt.ddp", "d2lopt.parallelism"}
LEVEL = {"core": 0, "lab": 1, "dist": 1, "cli": 2}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    if module in COMMANDS:
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LEVEL else "core"


def imports(module: str) -> set[str]:
    """The d2lopt modules ``module`` imports anywhere in its source (functions included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import name``: the submodule pkg.name when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # d2lopt.x.y -> the module d2lopt.x
                target = target.rpartition(".")[0]
            if target.startswith("d2lopt") and target != module:
                found.add(target)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_are_the_ones_the_rules_name():
    assert layer("d2lopt.loop") == layer("d2lopt") == "core"
    assert layer("d2lopt.dist.ddp") == layer("d2lopt.dist") == "dist"
    assert layer("d2lopt.lab.tuning") == "lab"
    assert layer("d2lopt.cli.train") == layer("d2lopt.ddp") == "cli"
    assert "d2lopt.config" in GRAPH["d2lopt.train"]  # the parser sees relative imports
    assert imports("d2lopt.cli.ddp") >= {"d2lopt.dist.ddp"}  # ... and those in functions


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downward_only(module):
    upward = sorted(
        target for target in GRAPH[module]
        if LEVEL[layer(target)] > LEVEL[layer(module)]
        or (LEVEL[layer(target)] == LEVEL[layer(module)] and layer(target) != layer(module))
    )  # fmt: skip
    assert not upward, f"{module} ({layer(module)}) imports {upward}: a layer above or beside it"


def test_no_import_cycle():
    """Package ``__init__`` files re-export their modules: edges into them are left out."""
    graph = {m: {t for t in ts if MODULES[t].name != "__init__.py"} for m, ts in GRAPH.items()}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)
