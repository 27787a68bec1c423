"""The house rules of `app/`: no import cycles between its packages, a queue library that knows
no domain, and a domain that depends on nothing but the database and small shared modules."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
DOMAIN_PACKAGES = {"borrowing", "alma", "worldshare", "institutions", "workflows", "runtime"}
# What the domain (`borrowing`) may import besides itself.
DOMAIN_MAY_USE = {"db", "timeutil", "errors", "validation"}


def _unit(module: str) -> str | None:
    """`app.borrowing.service` → `borrowing`; `app.db` → `db`; outside `app` → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "app" and len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    """Which top-level units of `app` each unit imports (at any depth, lazy imports included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in APP.rglob("*.py"):
        relative = path.relative_to(APP).with_suffix("")
        source = relative.parts[0]
        if source == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                target = _unit(name)
                if target and target != source:
                    graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target):
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_no_import_cycle_between_the_packages_of_app() -> None:
    assert find_cycle(import_graph()) is None


def test_the_queue_library_imports_no_domain_package() -> None:
    assert import_graph()["jobs"] & DOMAIN_PACKAGES == set()


def test_the_domain_depends_only_on_the_database_and_shared_leaves() -> None:
    assert import_graph()["borrowing"] <= DOMAIN_MAY_USE


def test_only_workflows_and_the_sandbox_reach_the_outbound_clients() -> None:
    clients = {"alma.iso_client", "alma.rest", "worldshare.client", "worldshare.auth"}
    callers = set()
    for path in APP.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.removeprefix("app.") in clients:
                    callers.add(path.relative_to(APP).with_suffix("").parts[0])
    assert callers <= {"workflows", "worldshare", "alma", "runtime", "sandbox"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
