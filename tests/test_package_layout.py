"""The package's shape: no import circle, no module or function too long to read.

Read from the source with `ast` (nothing is imported), so these run on every
backend. An import counts when it runs at module level (inside `if`, `try`
or a class body too); an import inside a function runs when the function is
called and does not count.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import keras_svre

pytestmark = pytest.mark.jax

PACKAGE_DIR = pathlib.Path(keras_svre.__file__).parent
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        else:
            pending.extend(ast.iter_child_nodes(node))


def _imported_modules(name: str, path: pathlib.Path, modules) -> set[str]:
    """The package's modules that importing `name` imports directly.

    `from package import x` is an import of the submodule `package.x` when
    there is one, else of `package` (its `__init__`).
    """
    is_package = path.name == "__init__.py"
    found = set()
    for node in _module_level_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
            continue
        base = node.module or ""
        if node.level:
            anchor = name.split(".")
            if not is_package:
                anchor.pop()
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in modules:
                found.add(submodule)
            elif base in modules:
                found.add(base)
    found.discard(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imported_modules(name, path, modules) for name, path in modules.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as `[a, b, ..., a]`, or `None` (depth-first search)."""
    state = {}  # name -> "open" (on the current path) or "done"
    path = []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for nxt in sorted(graph.get(name, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[name] = "done"
        path.pop()
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_none_where_there_is_none():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_import_graph_sees_module_level_imports_only():
    graph = _import_graph()
    # `from keras_svre.game import alternating, loss_scaling, snapshots`.
    assert {"keras_svre.game.alternating", "keras_svre.game.snapshots"} <= graph[
        "keras_svre.game.core"
    ]
    # `from keras_svre.game.core import UPDATE_POINTS, Game`.
    assert "keras_svre.game.core" in graph["keras_svre.game"]
    # The lazy names of `keras_svre.data` are imported in `__getattr__`.
    assert "keras_svre.data.datasets" not in graph["keras_svre.data"]


def test_no_import_circle_in_the_package():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, (
        "Import circle at module level: " + " -> ".join(cycle) + ". Move what "
        "the modules share into a module that both import, or import inside "
        "the function that needs it."
    )


def _lines(path: pathlib.Path) -> int:
    return len(path.read_text().splitlines())


def _checked_modules():
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_no_module_is_longer_than_the_limit():
    long = {
        p.relative_to(PACKAGE_DIR).as_posix(): _lines(p)
        for p in _checked_modules()
        if _lines(p) > MAX_MODULE_LINES
    }
    assert not long, f"Modules over {MAX_MODULE_LINES} lines: {long}."


def test_no_function_is_longer_than_the_limit():
    long = {}
    for path in _checked_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(PACKAGE_DIR).as_posix()}:{node.name}"
                    long[where] = length
    assert not long, f"Functions over {MAX_FUNCTION_LINES} lines: {long}."
