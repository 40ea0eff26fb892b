"""The package's import graph: no cycles, not even through imports inside functions.

Every ``import``/``from ... import`` of a ``quant`` module anywhere in a file (module level or
inside a function) is an edge. Two graphs are checked: between modules, and between the units
one level below ``quant`` (a subpackage such as ``quant.kernels`` counts as one unit), so that a
subpackage and a module cannot lean on each other either (``__main__`` entry points aside).
``quant.cli`` (the command line) may be imported only by ``__main__`` modules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in (ROOT / "quant").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def import_edges() -> set[tuple[str, str]]:
    """``(importer, imported)`` module pairs, resolved to the most specific ``quant`` module."""
    modules = _modules()
    edges = set()
    for name, (path, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            edges.update((name, t) for t in targets if t in modules and t != name)
    return edges


def find_cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph, as a list of nodes, or ``None``."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_find_cycle_finds_cycles():
    assert find_cycle({("a", "b"), ("b", "c")}) is None
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == ["a", "b", "c", "a"]


def test_the_edges_see_lazy_imports():
    edges = import_edges()
    # quant.api imports quant.checkpoint inside load_pipeline: such imports are edges too
    assert ("quant.api", "quant.checkpoint") in edges
    assert ("quant.run", "quant.stages") in edges


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_edges())
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_between_subpackages():
    # __main__ modules are entry points that nothing imports, so they close no cycle; the names
    # of quant/__init__ are looked up lazily by name
    edges = {(_unit(a), _unit(b)) for a, b in import_edges() if not a.endswith(".__main__")}
    edges = {(a, b) for a, b in edges if a != b and b != "quant"}
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("module", ["quant.cli"])
def test_the_cli_is_imported_only_by_main_modules(module):
    importers = {a for a, b in import_edges() if _unit(b) == module and _unit(a) != module}
    assert importers and all(a.endswith("__main__") for a in importers), sorted(importers)
