"""The installed console script served over stdio to a real MCP client, with a child environment of its own."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from support.databases import database_url_env
from support.mcp_helpers import error_text

SCRIPT = Path(sys.executable).with_name("incident-monitor")
SESSION_TIMEOUT_SECONDS = 60


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any INCIDENT_MONITOR_* leaking in from outside (but the database URL of the
    PostgreSQL pass), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")} | database_url_env()
    env.update(extra)
    return env


@asynccontextmanager
async def served(config: Path, data_dir: Path, env: dict[str, str], errlog: Path) -> AsyncIterator[Client]:
    """A real MCP client connected to ``incident-monitor serve`` over stdio; the server's stderr goes to ``errlog``."""
    params = StdioServerParameters(
        command=str(SCRIPT),
        args=["serve", "--transport", "stdio", "--config", str(config), "--data-dir", str(data_dir)],
        env=env,
    )
    with errlog.open("a", encoding="utf-8") as log, anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with Client(stdio_client(params, errlog=log)) as client:
            yield client


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, f"{tool} refused: {error_text(result)}"
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return result.structured_content
