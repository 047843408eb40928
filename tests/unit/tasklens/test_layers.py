"""The package's import graph points one way: no cycle inside tasklens, and the layers contract holds."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "plugins" / "tasklens"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """tasklens -> tasklens imports, top-level and function-local alike (``TYPE_CHECKING`` blocks excluded)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_checking = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_checking:
                graph[module].update(_imported(module, path.name == "__init__.py", node, known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_function_local_cycle():
    """The finder counts imports inside functions, so a cycle hidden behind a local import is still a cycle."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_tasklens():
    """No tasklens module reaches itself through other tasklens modules, top-level or function-local imports."""
    graph = import_graph()
    assert "tasklens.pipeline" in graph and "tasklens.store" in graph["tasklens.pipeline"]
    assert cycles(graph) == []


def test_layers_contract_holds():
    """`lint-imports` (import-linter, .importlinter) passes: every module imports only from the layers below it."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    result = subprocess.run([str(LINT_IMPORTS), "--config", str(PACKAGE.parents[1] / ".importlinter")],
                            cwd=PACKAGE.parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
