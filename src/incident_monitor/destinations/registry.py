"""Destination kinds → adapter classes, imported only when a destination of that kind is built.

A new destination is one config model in ``settings`` and one line here. Nothing imports the adapter modules
directly: importing the config (or the policy layer) loads no adapter, HTTP client or MCP client.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from incident_monitor.destinations.base import DestinationAdapter
from incident_monitor.destinations.settings import DestinationConfig

# kind → "module:class" under incident_monitor.destinations
ADAPTERS: dict[str, str] = {
    "webhook": "webhook:WebhookAdapter",
    "telemetry": "telemetry:TelemetryAdapter",
    "github": "github:GitHubAdapter",
    "linear": "linear:LinearAdapter",
    "mcp_tool": "mcp_tool:McpToolAdapter",
    "coding_agent": "coding_agent:CodingAgentAdapter",
}


def adapter_class(kind: str) -> type[DestinationAdapter[Any]]:
    module, name = ADAPTERS[kind].split(":")
    found: type[DestinationAdapter[Any]] = getattr(
        importlib.import_module(f"incident_monitor.destinations.{module}"), name
    )
    return found


def build_adapter(config: DestinationConfig, data_dir: Path) -> DestinationAdapter[Any]:
    return adapter_class(config.kind)(config, data_dir=data_dir)


def build_adapters(configs: list[DestinationConfig], data_dir: Path) -> dict[str, DestinationAdapter[Any]]:
    return {c.id: build_adapter(c, data_dir) for c in configs}
