"""No import circles among the project's own modules: every import, at module level or inside a
function, runs one way (the order docs/architecture.md shows), so any module can be imported
first and a shared type or constant has one home below its users."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("inference_core", "inference_vllm", "inference_hf", "inference_openai")
# An import: (importing module, imported module) -> where the statement is.
Edges = dict[tuple[str, str], str]


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def named(module: str, node: ast.Import | ast.ImportFrom, files: dict[str, Path]) -> list[str]:
    """The modules an import statement names: `from P import n` names P.n where that is a
    module (a submodule import), P otherwise."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package, level-1 packages up
        package = module if files[module].name == "__init__.py" else module.rpartition(".")[0]
        up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(up + ([node.module] if node.module else []))
    subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files]
    return subs + ([base] if len(subs) < len(node.names) else [])


def runs(module: str, target: str) -> list[str]:
    """What importing `target` from `module` executes: target and the packages above it, less
    the packages above `module` (already being imported when `module` runs)."""
    parts = target.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in chain if m != module and not module.startswith(m + ".")]


def import_edges() -> Edges:
    files = module_files()
    edges: Edges = {}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in named(module, node, files):
                for ran in runs(module, target):
                    if ran in files:
                        edges.setdefault((module, ran), f"{path.relative_to(REPO)}:{node.lineno}")
    return edges


def circle(edges: Edges) -> list[str] | None:
    """One circle as `a imports b (file:line)` lines, or None when every import runs one way."""
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        graph.setdefault(importer, set()).add(imported)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        # Each module in the cycle is imported by the next one.
        loop = list(reversed(err.args[1]))
        return [f"{a} imports {b} ({edges[a, b]})" for a, b in zip(loop, loop[1:])]
    return None


def test_every_import_runs_one_way():
    edges = import_edges()
    # The parse sees function-level imports and the implicit package imports.
    assert ("inference_core.config", "inference_core.evaluation.scorers") in edges
    assert ("inference_vllm.engine", "inference_core") in edges
    found = circle(edges)
    if found:
        pytest.fail("import circle:\n  " + "\n  ".join(found), pytrace=False)


def test_a_circle_is_named_with_its_import_lines():
    edges = {("a", "b"): "a.py:3", ("b", "c"): "b.py:5", ("c", "a"): "c.py:9", ("a", "d"): "a.py:4"}
    found = circle(edges)
    assert found is not None and len(found) == 3
    assert {line.split(" (")[0] for line in found} == {"a imports b", "b imports c", "c imports a"}
    assert circle({("a", "b"): "a.py:1", ("b", "c"): "b.py:1"}) is None
