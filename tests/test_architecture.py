"""The import graph of the package: no cycles, and arrows that run one way between
layers (docs/architecture.md draws them). Imports under ``if TYPE_CHECKING:`` count:
a type-only cycle is still a cycle for a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "taskflow"

# Lower layers first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, list[str]]] = [
    ("ground", ["errors", "exceptions", "_payloads"]),
    ("records and store", ["records", "_store"]),
    ("observers", ["observers"]),
    ("engine", ["_engine"]),
    ("integration", ["_fastapi", "_compat", "schema", "loggers"]),
    ("schedules", ["_schedules", "models", "backends"]),
    ("facade", ["manager", "_facade", "_wiring"]),
    (
        "entry points",
        ["admin", "tasks", "periodic", "executor", "testing", "_worker", "cli", "__init__"],
    ),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The taskflow modules ``path`` imports (``from taskflow.x import y`` counts
    ``taskflow.x.y`` when that is a module, else ``taskflow.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("taskflow")}
        elif isinstance(node, ast.ImportFrom) and _is_taskflow(node.module, node.level):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
            found.add(str(node.module))
    return found


def _is_taskflow(module: str | None, level: int) -> bool:
    return level == 0 and module is not None and module.split(".")[0] == "taskflow"


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    # A package's __init__ is imported on the way to any of its modules; edges to it
    # from inside the package are the package's own business.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its top-level name to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_imports_run_down_the_layers() -> None:
    upward = [
        f"{source} ({LAYERS[_layer(source)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for source, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(source)
    ]
    assert not upward, "\n".join(upward)


# What modules outside the store may take from SQLAlchemy: URL parsing and its exception
# classes. Queries, tables, engines and rows stay inside: the store hands out typed records.
SQLALCHEMY_OUTSIDE_THE_STORE = {
    "sqlalchemy.engine": {"URL", "make_url"},
    "sqlalchemy": {"exc"},
}


def test_only_the_store_speaks_sql() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "_store" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import) and any(
                a.name.startswith("sqlalchemy") for a in node.names
            ):
                found.append(f"{path.name}: import {node.names[0].name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                allowed = SQLALCHEMY_OUTSIDE_THE_STORE.get(node.module or "", set())
                names = {a.name for a in node.names} - allowed
                if names:
                    found.append(f"{path.name}: from {node.module} import {sorted(names)}")
    assert not found, found
