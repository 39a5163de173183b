"""The layers point one way, checked over the real import graph.

    shoal (pure core)  <-  connectors (I/O)  <-  flows (the dataflow)  <-  shoal.app (CLI)

The pure core imports nothing above it; connectors never import flows or the app; flows never
import the app; only ``shoal.app`` wires everything. Imports inside functions count too: a
lazy import is still a dependency. And no module imports itself back through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shoal", "connectors", "flows")


def layer(module: str) -> str:
    if module in ("shoal.app", "shoal.__main__") or module.startswith("shoal.app."):
        return "app"  # ``python -m shoal`` is the CLI
    return module.split(".")[0]


ALLOWED = {
    "shoal": {"shoal"},
    "connectors": {"shoal", "connectors"},
    "flows": {"shoal", "connectors", "flows"},
    "app": {"shoal", "connectors", "flows", "app"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def known(name: str, modules: set[str]) -> str | None:
    """The project module ``name`` refers to (a module, or the package holding a name)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        me = module_name(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = known(name, modules)
                if target is not None and target != me:
                    deps.add(target)
        graph[me] = deps
    return graph


def test_dependencies_point_one_way() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the project
    wrong = sorted(
        f"{src} -> {dst}"
        for src, deps in graph.items() for dst in deps
        if layer(dst) not in ALLOWED[layer(src)]
        # A package's __init__ may name its own submodules.
        and not dst.startswith(src + ".")
    )
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    # Package __init__ files importing their submodules are not cycles of code.
    edges = {src: {d for d in deps if not src.startswith(d + ".")} for src, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_checker_sees_a_wrong_arrow() -> None:
    """The walk itself works: the app does import flows, which the core may not."""
    graph = import_graph()
    assert "flows.ingest" in graph["shoal.app.cli"]
    assert layer("flows.ingest") not in ALLOWED["shoal"]
