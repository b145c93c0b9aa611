"""No import cycle anywhere in src/ (issue 11): the module graph, read from the source with ``ast``.

Every import counts, wherever it stands: module level, inside a function (the usual way a cycle is
dodged), or under ``if TYPE_CHECKING``. A cycle is reported as the chain of modules that closes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from support.import_graph import import_graph, imported_modules


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), as a closed chain."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_chain(graph, set(component)) for component in components]


def _chain(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths: dict[str, list[str]] = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def _describe(cycles: list[list[str]]) -> Iterator[str]:
    for chain in cycles:
        yield " → ".join(chain)


def test_the_finder_sees_module_and_function_level_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text("import pkg.a\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    graph = {
        name: imported_modules(name, tmp_path / (name.replace(".", "/") + ".py"), known)
        for name in ("pkg.a", "pkg.b", "pkg.c", "pkg.d")
    }
    assert graph["pkg.b"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_finder_reads_every_module_of_the_package() -> None:
    graph = import_graph()
    assert "incident_monitor.service.governed" in graph
    assert "incident_monitor.service.monitor" in graph["incident_monitor.service.governed"]


def test_src_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/ (break each one; a function-level import does not):\n" + "\n".join(
        _describe(cycles)
    )
