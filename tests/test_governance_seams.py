"""The inventory's seams for work landing with other issues, fed the agreed shapes directly:
intake-key rows (remote issue), `config.projects` (remote issue) and MCP-tool destinations
(destinations issue). When those land, the inventory, posture rules and probes read them as is."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from incident_monitor.service.governance.inventory import (
    intake_key_entries,
    outbound_mcp_servers,
    project_entries,
)

WHEN = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_intake_key_rows_become_entries_without_their_hash() -> None:
    rows = [
        SimpleNamespace(
            key_id="imk_1",
            project_id="shop",
            source_id="ci",
            scopes=["incident_monitor:report"],
            created_at=WHEN,
            disabled_at=None,
            last_used_at=WHEN,
            key_hash="f" * 64,
        ),
        SimpleNamespace(
            key_id="imk_2",
            project_id="shop",
            source_id=None,
            scopes=["incident_monitor:report"],
            created_at=WHEN,
            disabled_at=WHEN,
            last_used_at=None,
            key_hash="e" * 64,
        ),
    ]

    entries = intake_key_entries(rows)

    assert [(e.key_id, e.source_id, e.status) for e in entries] == [
        ("imk_1", "ci", "active"),
        ("imk_2", None, "disabled"),
    ]
    dumped = "".join(e.model_dump_json() for e in entries)
    assert "f" * 64 not in dumped and "e" * 64 not in dumped


def test_mcp_tool_destinations_become_outbound_servers_without_config_values() -> None:
    destinations: list[Any] = [
        SimpleNamespace(kind="webhook", id="ops-webhook"),
        SimpleNamespace(
            kind="mcp_tool",
            id="memory",
            server="memory",
            tool="create_entities",
            allowed_tools=["create_entities"],
            command="npx",
            args=["--token", "canary-arg"],
            url=None,
        ),
        SimpleNamespace(
            kind="mcp_tool",
            id="remote",
            server="tracker",
            tool="create_issue",
            allowed_tools=None,
            command=None,
            url="https://mcp.example.com/canary-path",
        ),
    ]

    servers = outbound_mcp_servers(SimpleNamespace(destinations=destinations))  # type: ignore[arg-type]

    assert [(s.destination_id, s.transport, s.allowed_tools) for s in servers] == [
        ("memory", "stdio", ["create_entities"]),
        ("remote", "http", None),
    ]
    dumped = "".join(s.model_dump_json() for s in servers)
    assert "canary" not in dumped and "npx" not in dumped


def test_projects_are_read_when_the_config_has_them() -> None:
    project = SimpleNamespace(
        id="shop",
        name="Shop",
        sources=["ci", "checkout"],
        default_route_tags=["runtime-failure"],
        allowed_destinations=["ops-webhook"],
    )

    [entry] = project_entries(SimpleNamespace(projects=[project]))  # type: ignore[arg-type]
    assert (entry.project_id, entry.sources, entry.allowed_destinations) == (
        "shop",
        ["ci", "checkout"],
        ["ops-webhook"],
    )
    assert project_entries(SimpleNamespace()) == []  # type: ignore[arg-type]  # this build: no projects yet
