"""The package layout's rules: arrows point down only, and no module imports itself back.

Layers, top to bottom: the entry points (server, cli, pages, api/), then app/, then agent/, then
tools/ and vectorstore/ side by side, then core/. eval/ runs the product the way a customer does
and sits beside app/. A module may import from its own layer or any layer below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tools", "vectorstore", "agent", "app", "eval", "api")
ENTRY_POINTS = ("server", "cli", "pages")

# What each package may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "tools": {"core"},
    "vectorstore": {"core"},
    "agent": {"core", "tools", "vectorstore"},
    "app": {"core", "tools", "vectorstore", "agent"},
    "eval": {"core", "tools", "vectorstore", "agent", "app"},
    "api": {"core", "tools", "vectorstore", "agent", "app", "pages"},
}
OURS = set(PACKAGES) | set(ENTRY_POINTS)


def _modules() -> dict[str, Path]:
    found = {name: ROOT / f"{name}.py" for name in ENTRY_POINTS}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports at run time (imports for type checkers only are left out)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
                # `from agent import nodes` imports the module agent.nodes.
                names.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in names if name in modules and name.split(".")[0] in OURS}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        home = module.split(".")[0]
        if home not in ALLOWED:
            continue  # the entry points may import anything
        wrong += [
            f"{module} imports {target}"
            for target in sorted(targets)
            if (top := target.split(".")[0]) != home and top not in ALLOWED[home]
        ]
    return wrong


def test_every_import_points_down_the_layers() -> None:
    wrong = _wrong_arrows(_graph())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
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
            connect(node)
    return found


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_see_a_wrong_arrow_and_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _wrong_arrows({"core.pack": {"agent.state"}, "agent.nodes": {"core.pack"}, "server": {"app.x"}}) == [
        "core.pack imports agent.state"
    ]
    graph = _graph()
    # The walk finds real edges, function-level imports included.
    assert "core.errors" in graph["core.pack"]
    assert "app.runtime" in graph["cli"]
