"""The inventory's sections fed by other parts of the system: intake keys (a table), projects and
MCP-tool destinations (config) — names, bindings and allowlists only, never key hashes, commands,
URLs or headers."""

from __future__ import annotations

from incident_monitor.server.tools import tool_catalog
from incident_monitor.service import intake_keys
from incident_monitor.service.governance.inventory import get_authority_inventory
from support.monitors import OPERATOR, MonitorFactory, flow_config

PROJECTS = [
    {
        "id": "shop",
        "name": "Shop",
        "sources": ["ci", "checkout"],
        "default_route_tags": ["runtime-failure"],
        "allowed_destinations": ["ops-webhook"],
    }
]
MCP_DESTINATIONS = [
    {
        "id": "memory",
        "kind": "mcp_tool",
        "server": "memory",
        "command": "canary-command",
        "args": ["--token", "canary-arg"],
        "tool": "create_entities",
        "allowed_tools": ["create_entities"],
        "arguments": {"entities": "$draft.title"},
    },
    {
        "id": "tracker",
        "kind": "mcp_tool",
        "server": "tracker",
        "url": "https://mcp.example.com/canary-path",
        "tool": "create_issue",
        "allowed_tools": [],
        "arguments": {"title": "$draft.title"},
    },
]


def test_intake_keys_projects_and_outbound_servers_are_listed_without_config_values(
    make_monitor: MonitorFactory,
) -> None:
    config = flow_config(projects=PROJECTS)
    config["destinations"] += MCP_DESTINATIONS
    monitor = make_monitor(config)
    bound = intake_keys.create_intake_key(monitor, OPERATOR, project_id="shop", source_id="ci")
    unbound = intake_keys.create_intake_key(monitor, OPERATOR, project_id="shop")
    intake_keys.disable_intake_key(monitor, OPERATOR, unbound.key.key_id)

    view = get_authority_inventory(monitor, OPERATOR, tool_catalog())

    assert [(k.key_id, k.project_id, k.source_id, k.status, k.scopes) for k in view.intake_keys] == [
        (bound.key.key_id, "shop", "ci", "active", ["incident_monitor:report"]),
        (unbound.key.key_id, "shop", None, "disabled", ["incident_monitor:report"]),
    ]
    assert [(p.project_id, p.sources, p.allowed_destinations) for p in view.projects] == [
        ("shop", ["ci", "checkout"], ["ops-webhook"])
    ]
    assert [(s.destination_id, s.transport, s.allowed_tools) for s in view.outbound_mcp_servers] == [
        ("memory", "stdio", ["create_entities"]),
        ("tracker", "http", []),
    ]
    dumped = view.model_dump_json()
    for secret in (bound.secret, unbound.secret, "canary"):
        assert secret not in dumped
