"""Imports run one way (issue 11): server/cli → service → policy → domain, store and destinations beneath.

Two checks of the same rule. Statically, no module of a lower layer names a module of a layer it must not
use (every import, function-level ones included, read with ``ast``). Dynamically, importing every module of
a layer in a fresh interpreter loads nothing it must not — which also catches what a third-party import
drags in (the pattern of tests/server/test_cold_start.py). Module lists, never timings.

``config`` is a leaf beside ``domain`` (see its docstring): policy decides over its models, so it may
import only domain, ``errors`` and the I/O-free ``destinations.settings``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.import_graph import import_graph, source_modules
from support.paths import TESTS

PACKAGE = "incident_monitor"
SETTINGS = f"{PACKAGE}.destinations.settings"  # destination config models only: no I/O, no adapter


def layer_of(module: str) -> str:
    """``domain`` for the shared leaves (errors, secret references) too: they import nothing of ours above."""
    part = module.split(".")[1] if "." in module else ""
    return "domain" if part in ("domain", "errors", "secret_ref") else part


# What each layer must not import, by layer (``destinations.settings`` is checked apart: config may use it).
MUST_NOT_IMPORT: dict[str, frozenset[str]] = {
    "domain": frozenset({"config", "policy", "store", "destinations", "service", "server", "cli"}),
    "config": frozenset({"policy", "store", "destinations", "service", "server", "cli"}),
    "policy": frozenset({"store", "destinations", "service", "server", "cli"}),
    "store": frozenset({"policy", "destinations", "service", "server", "cli"}),
    "destinations": frozenset({"store", "service", "server", "cli"}),
    # The egress guard (a transport under every outbound connection): beneath everything that sends.
    "egress": frozenset({"config", "policy", "store", "destinations", "service", "server", "cli"}),
    "service": frozenset({"server", "cli"}),
    "server": frozenset({"cli"}),
    # Leaves beside config: where config and data are (used by service.monitor and cli), and log formatting.
    "locations": frozenset({"config", "policy", "store", "destinations", "egress", "service", "server", "cli"}),
    "logging_setup": frozenset(
        {"domain", "config", "policy", "store", "destinations", "egress", "service", "server", "cli"}
    ),
}


def forbidden_edges() -> list[tuple[str, str]]:
    found = []
    for importer, imported in sorted(import_graph().items()):
        banned = MUST_NOT_IMPORT.get(layer_of(importer), frozenset())
        for target in sorted(imported):
            allowed = target == SETTINGS and layer_of(importer) == "config"
            if layer_of(target) in banned and not allowed:
                found.append((importer, target))
    return found


def test_the_layer_of_every_module_is_known() -> None:
    layers = {layer_of(module) for module in source_modules()} - {""}
    assert layers <= set(MUST_NOT_IMPORT) | {"cli"}, "a new top-level module or package: give it a layer here"


def test_no_module_imports_a_layer_above_it() -> None:
    upward = forbidden_edges()
    assert upward == [], "imports against the layers:\n" + "\n".join(f"{a} → {b}" for a, b in upward)


# --- what importing a layer loads ------------------------------------------------------------------


def ours(*names: str) -> tuple[str, ...]:
    return tuple(f"{PACKAGE}.{name}" for name in names)


# Everything under destinations/ but the I/O-free settings module.
ADAPTERS = ours(
    *(
        f"destinations.{name}"
        for name in ("base", "delivery", "registry", "github", "linear", "mcp_tool", "telemetry", "webhook")
    )
)
HTTP_AND_MCP_CLIENTS = ("mcp.client", "httpx", "httpx2", "httpcore2", "standardwebhooks")
NOT_LOADED_BY: dict[str, tuple[str, ...]] = {
    "domain": ours("config", "policy", "store", "destinations", "service", "server", "cli"),
    "policy": (*ours("store", "service", "server", "cli"), *ADAPTERS, *ours("egress"), *HTTP_AND_MCP_CLIENTS),
    "store": ours("policy", "destinations", "service", "server", "cli"),
    "service": ours("server", "cli"),
}

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(layer: str) -> set[str]:
    modules = sorted(m for m in source_modules() if layer_of(m) == layer and m.split(".")[1] == layer)
    assert modules, f"no modules in layer {layer}"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def unwanted(loaded: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("layer", list(NOT_LOADED_BY))
def test_importing_a_layer_loads_nothing_it_must_not(layer: str) -> None:
    loaded = loaded_by(layer)
    assert f"{PACKAGE}.{layer}" in loaded
    assert unwanted(loaded, NOT_LOADED_BY[layer]) == []


def test_the_load_check_sees_what_an_import_drags_in() -> None:
    """The probe is not vacuous: the service layer does load the policy layer and the store."""
    loaded = loaded_by("service")
    assert unwanted(loaded, (f"{PACKAGE}.policy.route_decision", f"{PACKAGE}.store.engine")) == [
        f"{PACKAGE}.policy.route_decision",
        f"{PACKAGE}.store.engine",
    ]
