"""Destinations are reached only from the publishing service (DESIGN.md, "Architecture").

The publishing service is service/publishing.py (publish, through the permit and the outbox) and
service/destination_calls.py (a run's status, stop, ping). A module *reaches* an adapter when it imports one
(anything under destinations/ but the I/O-free ``destinations.settings``) or takes one from a monitor's
``destinations`` map. Two other modules hold adapters without calling out, each for the reason given below; any
other module doing either is a failure here. (tests/service/test_publishing.py checks the permit side: only
publishing calls ``.publish(`` and issues permits.)
"""

from __future__ import annotations

import ast

from support.import_graph import PACKAGE, import_graph, source_modules

PUBLISHING_SERVICE = {f"{PACKAGE}.service.publishing", f"{PACKAGE}.service.destination_calls"}
HOLDERS = {
    # Builds the adapters from the config and asks their readiness (no I/O).
    f"{PACKAGE}.service.monitor": "builds the adapters",
    # Dry-run probes wrap each adapter in a stand-in that records instead of sending.
    f"{PACKAGE}.service.governance.probes": "stand-ins for dry runs",
}
ADAPTER_PACKAGE = f"{PACKAGE}.destinations"
SETTINGS = f"{PACKAGE}.destinations.settings"


def adapter_imports(imported: set[str]) -> set[str]:
    return {m for m in imported if m.startswith(ADAPTER_PACKAGE + ".") and m != SETTINGS}


def takes_from_a_monitor(tree: ast.AST) -> bool:
    """``<…monitor>.destinations`` (``monitor``, ``self.monitor``, …), or ``self.destinations`` in class Monitor."""
    in_monitor = {
        id(node)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef) and cls.name == "Monitor"
        for node in ast.walk(cls)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "destinations":
            holder = ast.unparse(node.value)
            if holder.split(".")[-1].endswith("monitor") or (holder == "self" and id(node) in in_monitor):
                return True
    return False


def modules_reaching_an_adapter() -> dict[str, list[str]]:
    graph = import_graph()
    found: dict[str, list[str]] = {}
    for module, path in source_modules().items():
        if module == ADAPTER_PACKAGE or module.startswith(ADAPTER_PACKAGE + "."):
            continue  # the adapters themselves
        how = sorted(adapter_imports(graph.get(module, set())))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_config_model = module == f"{PACKAGE}.config"  # MonitorConfig.destinations is the config list
        if takes_from_a_monitor(tree) and not is_config_model:
            how.append("<monitor>.destinations")
        if how:
            found[module] = how
    return found


def test_only_the_publishing_service_reaches_a_destination() -> None:
    reaching = modules_reaching_an_adapter()

    outside = {m: how for m, how in reaching.items() if m not in PUBLISHING_SERVICE | set(HOLDERS)}
    assert outside == {}, "destinations reached outside the publishing service:\n" + "\n".join(
        f"{m}: {', '.join(how)}" for m, how in sorted(outside.items())
    )
    # Every module named here still does what it is named for (a stale entry would hide a new reach).
    assert set(reaching) == PUBLISHING_SERVICE | set(HOLDERS)


def test_the_check_sees_a_status_call_outside_publishing() -> None:
    """What issue 15's first cut did from service/code_changes.py is caught, both ways."""
    reach = ast.parse("adapter = monitor.destinations.get(destination_id)\nawait adapter.stop(run)\n")
    assert takes_from_a_monitor(reach)
    assert takes_from_a_monitor(ast.parse("self.monitor.destinations[d]"))
    assert not takes_from_a_monitor(ast.parse("[d.id for d in monitor.config.destinations]"))
    assert not takes_from_a_monitor(ast.parse("inventory.destinations"))
    assert takes_from_a_monitor(ast.parse("class Monitor:\n    def f(self):\n        return self.destinations"))
    assert not takes_from_a_monitor(ast.parse("class Page:\n    def f(self):\n        return self.destinations"))
    assert adapter_imports({f"{PACKAGE}.destinations.coding_agent", SETTINGS, f"{PACKAGE}.domain.models"}) == {
        f"{PACKAGE}.destinations.coding_agent"
    }
