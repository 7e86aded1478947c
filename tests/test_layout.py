"""The house's layout holds: layer contracts (import-linter), no import cycles, a docstring per module, thin
function entries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from support import REPO


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every cycle of direct imports (each reported once, starting at its smallest module)."""
    cycles: set[tuple[str, ...]] = set()
    state: dict[str, str] = {}  # "active" on the current path, "done" when fully explored
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "active"
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == "active":
                cycle = path[path.index(imported):]
                start = cycle.index(min(cycle))
                cycles.add(tuple(cycle[start:] + cycle[:start]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph.modules):
        if module not in state:
            visit(module)
    return [list(cycle) for cycle in sorted(cycles)]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_raiox_has_no_import_cycle() -> None:
    """Lazy imports inside functions count too: a cycle hidden in a function is still a cycle."""
    assert import_cycles(grimp.build_graph("raiox", cache_dir=None)) == []


def test_layer_contracts_hold() -> None:
    """pyproject.toml's contracts: tooling, then the sweeper, above the steps; the steps in data-flow order and
    independent of each other (save the named reads of embed's rules); HTTP only at the edge."""
    run = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:]


def test_every_module_says_what_belongs_there() -> None:
    for path in sorted((REPO / "lib" / "raiox").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and docstring.strip(), f"{path.relative_to(REPO)} has no module docstring"


def test_function_entries_only_translate() -> None:
    """functions/<name>/*.py import a step's http module or the sweeper's handlers of that very function (a step's
    web calls plus the sweeper's round), and a platform adapter, nothing else of Raiox."""
    for path in sorted((REPO / "functions").glob("*/*.py")):
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raiox")}
        allowed = {"raiox.web.platforms", f"raiox.sweeper.{path.parent.name}"}
        assert imported and all(module.endswith(".http") or module in allowed
                                for module in imported), (path.relative_to(REPO), imported)
