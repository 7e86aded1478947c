"""The house's layout holds: layer contracts (import-linter), no import cycles, a docstring per module, thin
function entries, and docs/architecture.md (with its picture) describes the packages that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

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


ARCHITECTURE = REPO / "docs" / "architecture.md"
SVG = "{http://www.w3.org/2000/svg}"


def test_the_architecture_picture_is_well_formed_self_contained_and_shown() -> None:
    """docs/architecture.svg parses as SVG, loads nothing from outside (GitHub shows it as an image: no fonts,
    images or links), and architecture.md shows it."""
    root = ElementTree.parse(REPO / "docs" / "architecture.svg").getroot()  # ParseError when not well-formed
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    for element in root.iter():
        assert element.tag not in {f"{SVG}image", f"{SVG}foreignObject", f"{SVG}script"}, element.tag
        for name, value in element.attrib.items():
            assert not name.endswith("href") or value.startswith("#"), (element.tag, name, value)
        assert "@import" not in (element.text or "") and "url(http" not in (element.text or "")
    assert re.search(r"!\[[^\]]+\]\(architecture\.svg\)", ARCHITECTURE.read_text())


def defined_names(module: Path) -> set[str]:
    """What a module defines at its top level: functions, classes, assigned names."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def exists(dotted: str) -> bool:
    """`raiox.a.b` is a package or module under lib/, or a module's top-level name (`raiox.a.b.NAME`)."""
    parts, folder = dotted.split("."), REPO / "lib"
    for position, part in enumerate(parts):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
        elif (folder / f"{part}.py").is_file() and position >= len(parts) - 2:
            return position == len(parts) - 1 or parts[-1] in defined_names(folder / f"{part}.py")
        else:
            return position == len(parts) - 1 and position > 0 and part in defined_names(folder / "__init__.py")
    return True


def test_the_architecture_doc_names_every_top_level_package_and_nothing_that_is_gone() -> None:
    """Every `raiox.<name>` in architecture.md exists, and every package and module right under lib/raiox is named
    there (a new package gets its place in the layers, a removed or renamed one leaves the doc)."""
    named = set(re.findall(r"\braiox(?:\.\w+)+", ARCHITECTURE.read_text()))
    assert not sorted(name for name in named if not exists(name)), "named in architecture.md, but not in lib/"
    lib = REPO / "lib" / "raiox"
    top = {path.stem for path in lib.glob("*.py") if path.stem != "__init__"} | {
        path.name for path in lib.iterdir() if (path / "__init__.py").is_file()}
    assert sorted(top - {name.split(".")[1] for name in named}) == [], "in lib/raiox, but not in architecture.md"


def test_the_exists_check_tells_real_names_from_gone_ones() -> None:
    assert exists("raiox.web.errors.ERROR_STATUSES") and exists("raiox.job_runner") and exists("raiox.shape")
    assert not exists("raiox.nowhere") and not exists("raiox.web.nowhere") and not exists("raiox.web.errors.NOWHERE")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}


def test_links_into_and_out_of_the_architecture_doc_resolve() -> None:
    """architecture.md's relative links reach files (and headings there); links to its headings from README.md and
    the other docs reach one."""
    for target, anchor in re.findall(r"\]\(([\w./-]+\.\w+)(?:#([\w-]+))?\)", ARCHITECTURE.read_text()):
        path = ARCHITECTURE.parent / target
        assert path.is_file(), target
        assert not anchor or anchor in heading_anchors(path.read_text()), f"{target}#{anchor}"
    anchors = heading_anchors(ARCHITECTURE.read_text())
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for anchor in re.findall(r"architecture\.md#([\w-]+)", page.read_text()):
            assert anchor in anchors, f"{page.relative_to(REPO)} links to architecture.md#{anchor}"
