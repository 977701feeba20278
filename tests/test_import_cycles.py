"""The package's modules import each other without cycles (static walk of every import statement)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (("hsenet_search.cli", REPO / "cli"), ("hsenet_search", REPO / "hsenet_search"))


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for prefix, root in PACKAGES:
        for file in root.rglob("*.py"):
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([prefix, *parts])] = file
    return mods


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str, file: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its body (function-level imports included)."""
    base = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(file.read_text())
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_package_modules():
    mods = _modules()
    graph = {name: _imports(name, file, set(mods)) for name, file in mods.items()}
    assert _cycles(graph) == []


QUERY_SIDE = ("hsenet_search.engine", "hsenet_search.locate", "hsenet_search.cli.search", "hsenet_search.cli.locate")


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def test_the_query_side_never_imports_training_code():
    """Search, locate and the service load models and indexes; none of them may pull in the trainer."""
    mods = _modules()
    graph = {name: _imports(name, file, set(mods)) for name, file in mods.items()}
    starts = [*QUERY_SIDE, *(m for m in mods if m.startswith("hsenet_search.service"))]
    for start in starts:
        training = sorted(m for m in _reachable(graph, start) if m.startswith("hsenet_search.train"))
        assert training == [], (start, training)
