"""The layers of the house, as a table: which top-level package may import which, and no import circle.

Every import counts, also those inside a function (a lazy import is still an arrow). The checks
are functions of a folder, so they are run here on a small broken house first (they must fail on
it) and then on this tree.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# unit -> the units it may import. A unit is a top-level package or module of the extension (or a
# tool beside it); ``tests`` is outside the table. Blender side: stop_request, widgets, pictures,
# scene, jobs, preferences, panels, properties, operators, cli, __init__. Both sides: contract.
# The backend: backend. Beside them: batch (the headless command's arguments only), bench.
ADDON = {"stop_request", "widgets", "settings_map", "pictures", "scene", "jobs", "preferences", "panels",
         "properties", "operators", "cli", "contract"}
ALLOWED = {
    "contract": set(),
    "backend": {"contract"},
    "stop_request": set(),
    "widgets": set(),
    "settings_map": {"contract"},
    "pictures": {"contract", "stop_request"},
    "scene": {"contract", "pictures", "stop_request"},
    "jobs": {"contract", "pictures", "scene", "stop_request"},
    "preferences": {"contract", "jobs", "widgets"},
    "panels": {"preferences", "scene", "settings_map", "widgets"},
    "properties": {"contract", "preferences", "scene", "settings_map"},
    "operators": {"contract", "jobs", "pictures", "preferences", "properties", "scene", "settings_map"},
    "cli": ADDON - {"cli"},
    "__init__": ADDON - {"__init__"},
    "batch": {"contract"},
    "bench": {"backend", "batch", "contract", "pictures", "scene"},
}
SKIP = {"tests", "out", "dist", "build", "docs"}


def python_files(root: Path):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in SKIP or any(part.startswith(".") for part in rel.parts):
            continue
        yield rel


def _imported_modules(rel: Path, tree: ast.AST, modules: set[tuple]) -> set[tuple]:
    """The project modules (as path tuples without ``.py``) one file imports."""
    package = list(rel.parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue
                base = package[:len(package) - node.level + 1]
            else:
                base = []
            stem = base + (node.module.split(".") if node.module else [])
            names = [stem + [alias.name] for alias in node.names] + [stem]
        else:
            continue
        for parts in names:
            for cut in range(len(parts), 0, -1):  # the longest prefix that is a module of ours
                key = tuple(parts[:cut])
                if key in modules:
                    found.add(key)
                    break
    return found


def import_graph(root: Path) -> dict[tuple, set[tuple]]:
    """module -> the modules of ours it imports; a package is its ``__init__``."""
    files = list(python_files(root))
    modules = {}
    for rel in files:
        key = tuple(rel.with_suffix("").parts)
        modules[key[:-1] if key[-1] == "__init__" and len(key) > 1 else key] = rel
    graph = {}
    for key, rel in modules.items():
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), str(rel))
        graph[key] = _imported_modules(rel, tree, set(modules)) - {key}
    return graph


def forbidden_arrows(root: Path) -> list[str]:
    """``a/b.py -> c/d``: every import one unit may not make by the table (and units the table misses)."""
    problems = []
    for key, targets in sorted(import_graph(root).items()):
        unit = key[0]
        if unit not in ALLOWED:
            problems.append(f"{'/'.join(key)}: a top-level unit the layer table does not know")
            continue
        for target in sorted(targets):
            if target[0] != unit and target[0] not in ALLOWED[unit]:
                problems.append(f"{'/'.join(key)} -> {'/'.join(target)}: {unit} may not import {target[0]}")
    return problems


def circles(root: Path) -> list[list[str]]:
    """Every set of modules that import each other in a loop (strongly connected, more than one)."""
    graph = import_graph(root)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan; the house is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append("/".join(member))
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _broken_house(tmp_path: Path) -> Path:
    """A copy of the extension's Python files with one forbidden arrow and one circle added."""
    house = tmp_path / "house"
    for rel in python_files(ROOT):
        (house / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, house / rel)
    with open(house / "backend" / "curves.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _oops():\n    from scene import mesh  # the backend reaching into Blender\n")
    with open(house / "contract" / "cameras.py", "a", encoding="utf-8") as f:
        f.write("\nfrom .protocol import JOB_JSON  # noqa\n")
    with open(house / "contract" / "protocol.py", "a", encoding="utf-8") as f:
        f.write("\nfrom . import cameras  # noqa\n")
    return house


def test_the_checks_find_a_forbidden_arrow_and_a_circle(tmp_path):
    house = _broken_house(tmp_path)
    assert any(p.startswith("backend/curves -> scene/mesh") for p in forbidden_arrows(house))
    assert ["contract/cameras", "contract/protocol"] in circles(house)


def test_every_import_follows_the_layer_table():
    assert forbidden_arrows(ROOT) == []


def test_no_import_circle():
    assert circles(ROOT) == []


def test_the_table_names_only_units_that_exist():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    units = {Path(name).parts[0] if len(Path(name).parts) > 1 else Path(name).stem
             for name in tracked.stdout.split()} - SKIP
    assert set(ALLOWED) <= units, set(ALLOWED) - units
