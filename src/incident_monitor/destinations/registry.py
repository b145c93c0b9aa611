"""Destination kinds → adapter classes. A new destination is one module and one line here."""

from __future__ import annotations

from pathlib import Path

from incident_monitor.destinations.base import DestinationAdapter, DestinationConfig
from incident_monitor.destinations.github import GitHubAdapter
from incident_monitor.destinations.linear import LinearAdapter
from incident_monitor.destinations.mcp_tool import McpToolAdapter
from incident_monitor.destinations.telemetry import TelemetryAdapter
from incident_monitor.destinations.webhook import WebhookAdapter

ADAPTER_KINDS: dict[str, type[DestinationAdapter]] = {
    WebhookAdapter.kind: WebhookAdapter,
    TelemetryAdapter.kind: TelemetryAdapter,
    GitHubAdapter.kind: GitHubAdapter,
    LinearAdapter.kind: LinearAdapter,
    McpToolAdapter.kind: McpToolAdapter,
}


def build_adapters(configs: list[DestinationConfig], data_dir: Path) -> dict[str, DestinationAdapter]:
    return {c.id: ADAPTER_KINDS[c.kind](c, data_dir=data_dir) for c in configs}
