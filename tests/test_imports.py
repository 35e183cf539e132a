"""The package's import graph: no cycle, and data flowing one way (python -c "import ..." of any module works); the
engine (engine/) a lower layer that imports nothing of the app. Imports made for the type checker only (under
`if TYPE_CHECKING:`) count: a layer that names the app's types in its signatures depends on it all the same."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "blocks_rt"

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules `path` imports, at run time or for the type checker."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(filter(None, [base, node.module or ""]))
            for alias in node.names:  # `from . import messages` imports a module; `from . import ZERO` a name
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {name for name in found if name in modules and name != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (one per back edge), as the modules on it."""
    found, state, stack = [], dict.fromkeys(edges, 0), []

    def visit(node: str) -> None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt, 0) == 0:
                visit(nxt)
            elif state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
        state[node], _ = 2, stack.pop()

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    return found


def is_engine(name: str) -> bool:
    return name == "blocks_rt.engine" or name.startswith("blocks_rt.engine.")


def test_the_package_s_modules_import_each_other_without_a_cycle() -> None:
    assert cycles(graph()) == []


def test_the_engine_imports_nothing_of_the_app() -> None:
    """The app hands the engine what it needs of it (answers, admin configuration, hooks) at construction."""
    edges = graph()
    up = {(name, dep) for name, deps in edges.items() if is_engine(name) for dep in deps if not is_engine(dep)}
    assert up == set(), f"arrows from engine/ into the app: {up}"


def test_the_engine_s_two_websockets_do_not_import_each_other() -> None:
    """sockets.py and websocket.py talk through the protocols each declares (sockets.WebSocket, websocket.Socket)."""
    edges = graph()
    assert "blocks_rt.engine.websocket" not in edges["blocks_rt.engine.sockets"]
    assert "blocks_rt.engine.sockets" not in edges["blocks_rt.engine.websocket"]


def test_the_graph_checks_see_the_imports_they_are_about() -> None:
    """The walk resolves relative imports: a known arrow of each kind is found."""
    edges = graph()
    assert "blocks_rt.broker" in edges["blocks_rt.broker.memory"]  # `from . import ...`
    assert "blocks_rt.broker.redis.client" in edges["blocks_rt.broker.redis.history"]  # `from .client import`
    assert "blocks_rt.messages" in edges["blocks_rt.delivery"]  # `from . import messages as msg`
    assert "blocks_rt.engine.deadlines" in edges["blocks_rt.engine.websocket"]  # under `if TYPE_CHECKING:`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
