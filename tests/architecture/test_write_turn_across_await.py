"""No coroutine holds the store's write turn across an await.

A unit of work (``monitor.session()``, ``monitor.unit()``, ``governed_call`` unless ``defer_unit=True``) taken
on the event loop's thread and held over an await stalls every other writer for as long as the awaited work
takes, and the loop's other calls, seeing the turn held by their own thread, join its transaction as if nested
in it (the tool-input fuzz met that as a get_status failing after a probe run). A coroutine that awaits inside
a governed call defers the call's unit to after its last await; a short read of its own closes before it awaits.
"""

from __future__ import annotations

import ast

from support.import_graph import source_modules

UNIT_CALLS = ("session(", "unit(", "session_scope(", "unit_scope(", "unit_of_work(", "governed_call(")


def holds_a_unit(item: ast.withitem) -> bool:
    source = ast.unparse(item.context_expr)
    if not any(call in source for call in UNIT_CALLS):
        return False
    deferred = isinstance(item.context_expr, ast.Call) and any(
        k.arg == "defer_unit" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in item.context_expr.keywords
    )
    return not deferred


def awaits(node: ast.With | ast.AsyncWith) -> bool:
    return any(isinstance(inner, ast.Await) for statement in node.body for inner in ast.walk(statement))


def test_no_unit_of_work_is_held_across_an_await() -> None:
    held: list[str] = []
    for name, path in source_modules().items():
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.With | ast.AsyncWith)
                    and any(holds_a_unit(i) for i in node.items)
                    and awaits(node)
                ):
                    held.append(f"{name}:{node.lineno} ({function.name})")
    assert held == [], "a unit of work held across an await: " + ", ".join(held)


def test_the_check_finds_a_held_unit() -> None:
    # The check itself: an await inside a governed call that takes its unit first is found; deferred, it is not.
    held = ast.parse("async def f():\n    with governed_call(m, p, 'a', {}) as call:\n        await g()\n")
    deferred = ast.parse("async def f():\n    with governed_call(m, p, 'a', {}, defer_unit=True):\n        await g()\n")
    assert [holds_a_unit(i) for n in ast.walk(held) if isinstance(n, ast.With) for i in n.items] == [True]
    assert [holds_a_unit(i) for n in ast.walk(deferred) if isinstance(n, ast.With) for i in n.items] == [False]
