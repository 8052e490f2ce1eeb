"""The package map of docs/development.md holds: imports run one way, with no circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ntp_envs", "experts", "agents", "evaluation")
LAYERS = {  # a module may import its own layer's modules and lower layers only
    "ntp_envs": 0,
    "experts": 1,
    "agents": 2,
    "evaluation.methods": 3,
    "evaluation.divergences": 4,
    "evaluation": 4,  # the package itself re-exports divergence()
    "evaluation.oracle": 5,
    "evaluation.metrics": 5,
    "evaluation.adapters": 5,
    "evaluation.bench": 6,
    "evaluation.score": 7,
    "evaluation.experiments": 7,
    "evaluation.cli": 8,
}
MAX_TOP_LEVEL_MODULES = 6


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Every imported name (``module`` or ``module.attribute``), function-level imports
    included, ``if TYPE_CHECKING:`` blocks excluded (they never run)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the longest module prefix of each name)."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _runtime_imports(ast.parse(path.read_text())):
            parts = imported.split(".")
            target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                           if ".".join(parts[:i]) in modules), None)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def layer(module: str) -> int:
    """The layer of ``module``: that of its longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    return next(LAYERS[".".join(parts[:i])] for i in range(len(parts), 0, -1)
                if ".".join(parts[:i]) in LAYERS)


def test_the_checker_finds_a_planted_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (package / "b.py").write_text("import pkg.c\n")
    (package / "c.py").write_text("from pkg import a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from pkg.e import x\n")
    (package / "e.py").write_text("from pkg.d import y\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_suite_has_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_imports_run_down_the_layers() -> None:
    graph = import_graph(ROOT, PACKAGES)
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if layer(b) > layer(a))
    assert upward == []


@pytest.mark.parametrize("package", ["evaluation"])
def test_few_top_level_modules(package: str) -> None:
    top = sorted(p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
