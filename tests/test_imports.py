"""The package's import graph: no cycle, and data flowing one way (python -c "import ..." of any module works)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "blocks_rt"

# Arrows from engine/ up into the app, until the engine takes hooks instead (issue 25, point 2: refusal answers,
# client-event validation and the admin's view of a socket handed in by the app). This list may only shrink.
ENGINE_REACHES_UP = {
    ("blocks_rt.engine.server", "blocks_rt.errors"),
    ("blocks_rt.engine.server", "blocks_rt.messages"),
    ("blocks_rt.engine.admin", "blocks_rt.presence"),
    ("blocks_rt.engine.admin", "blocks_rt.settings"),
    ("blocks_rt.engine.admin", "blocks_rt.metrics"),
    ("blocks_rt.engine.admin", "blocks_rt.guessing"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The package modules `path` imports when it runs (imports under `if TYPE_CHECKING:` are for mypy only)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
               for stmt in block.body for node in ast.walk(stmt)}
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(filter(None, [base, node.module or ""]))
            for alias in node.names:  # `from . import messages` imports a module; `from . import ZERO` a name
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {name for name in found if name in modules and name != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): runtime_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


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


def test_the_engine_reaches_into_the_app_only_where_it_is_known_to() -> None:
    edges = graph()
    up = {(name, dep) for name, deps in edges.items() if is_engine(name) for dep in deps if not is_engine(dep)}
    assert up <= ENGINE_REACHES_UP, f"new arrows from engine/ into the app: {up - ENGINE_REACHES_UP}"


def test_the_graph_checks_see_the_imports_they_are_about() -> None:
    """The walk resolves relative imports: a known arrow of each kind is found."""
    edges = graph()
    assert "blocks_rt.broker" in edges["blocks_rt.broker.memory"]  # `from . import ...`
    assert "blocks_rt.broker.redis.client" in edges["blocks_rt.broker.redis.history"]  # `from .client import`
    assert "blocks_rt.messages" in edges["blocks_rt.delivery"]  # `from . import messages as msg`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
