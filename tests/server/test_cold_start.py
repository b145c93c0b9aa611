"""What ``incident-monitor serve --transport stdio`` loads before it answers (issue 6, stdio cold start).

The benchmark measures the time; these tests guard the cause: the modules a stdio server start imports
and the work it does before serving. They assert modules and state, never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from incident_monitor.config import Settings
from incident_monitor.egress import transport
from incident_monitor.egress.rules import EgressPolicy
from incident_monitor.server.tools import TOOL_ANNOTATIONS
from support.monitors import WEBHOOK_SECRET_VARIABLE, new_webhook_secret

# Modules the stdio server has no use for. The HTTP transport's own stack (uvicorn, starlette) is not
# listed: the mcp SDK imports it for every server, the no-op floor included.
NOT_ON_THE_STDIO_PATH = (
    "incident_monitor.server.http_app",
    "incident_monitor.server.auth",
    "incident_monitor.server.jwt_verifier",
    "incident_monitor.server.intake_endpoint",
    "incident_monitor.server.rate_limit",
    "jwt",  # PyJWT, for HTTP bearer tokens
    # The egress transport (httpcore2, h11, the CA store), loaded by the first publish. A webhook is
    # configured below, so this also shows its config validation does without it.
    "httpcore2",
    "h11",
    "incident_monitor.egress.transport",
)

CONFIG_TOML = """
[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "http://127.0.0.1:9/hooks/incident"
secret = "env:INCIDENT_MONITOR_WEBHOOK_SECRET"
allow_insecure_http = true
allow_private_networks = true

[[destinations]]
id = "telemetry"
kind = "telemetry"
path = "telemetry.jsonl"

[default_destination]
destination_id = "telemetry"
"""

# Runs the real start-up (cli → serve_stdio: config, store, token check, recovery, tool schemas) and, where
# the server would start reading stdin, reports what got loaded instead.
START_UP_PROBE = """
import json, sys
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool

derived = []
derive = Tool.from_function.__func__

def counted(cls, fn, *args, **kwargs):
    derived.append(kwargs.get("name"))
    return derive(cls, fn, *args, **kwargs)

Tool.from_function = classmethod(counted)

def report(self, *args, **kwargs):
    transport = sys.modules.get("incident_monitor.egress.transport")
    print(json.dumps({
        "modules": sorted(sys.modules),
        "tls_context_built": transport is not None and transport.tls_context.cache_info().currsize > 0,
        "tools_derived": derived,
    }))

async def report_async(self, *args, **kwargs):
    report(self)

MCPServer.run = report
import incident_monitor.server.stdio as stdio
stdio.run_stdio = report_async  # serve_stdio runs it inside the downstream sessions' scope
from incident_monitor.cli import main
sys.exit(main(["serve", "--transport", "stdio"]))
"""


def start_up(tmp_path: Path, **env: str) -> dict[str, object]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_TOML)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")},
        "INCIDENT_MONITOR_CONFIG": str(config),
        "INCIDENT_MONITOR_DATA_DIR": str(tmp_path / "data"),
        WEBHOOK_SECRET_VARIABLE: new_webhook_secret(),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", START_UP_PROBE], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "serving stdio as local-agent" in done.stderr
    return json.loads(done.stdout)


def test_stdio_start_up_loads_neither_the_http_stack_nor_the_egress_client(tmp_path: Path) -> None:
    loaded = start_up(tmp_path)
    modules = set(loaded["modules"])  # type: ignore[arg-type]
    assert {"incident_monitor.server.stdio", "incident_monitor.server.tools", "sqlmodel"} <= modules
    assert sorted(modules.intersection(NOT_ON_THE_STDIO_PATH)) == []


def test_stdio_start_up_builds_no_tls_context_until_something_is_sent(tmp_path: Path) -> None:
    """A webhook is configured, but nothing is published at start-up: the CA store is not loaded."""
    assert start_up(tmp_path)["tls_context_built"] is False


def test_stdio_start_up_derives_each_tool_once(tmp_path: Path) -> None:
    """Deriving a tool (its arguments model and schemas, Tool.from_function) is most of what start-up does of its
    own: each tool is derived once, its output compacted after (issue 18); the toolsnaps show the schemas unchanged."""
    derived = start_up(tmp_path)["tools_derived"]
    assert isinstance(derived, list)
    assert sorted(derived) == sorted(TOOL_ANNOTATIONS)


def test_every_egress_transport_shares_one_tls_context() -> None:
    first = transport.GuardedTransport(EgressPolicy())
    second = transport.GuardedTransport(EgressPolicy(allow_private_networks=True))
    assert first.ssl_context is second.ssl_context is transport.tls_context()


# --- Settings: read from the environment (pydantic-settings), a flag wins ------------------


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INCIDENT_MONITOR_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("INCIDENT_MONITOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INCIDENT_MONITOR_TOKEN", "imt_abc")
    monkeypatch.setenv("INCIDENT_MONITOR_WEBHOOK_SECRET", "whsec_not_a_setting")  # other variables: ignored
    settings = Settings()
    assert settings.config == tmp_path / "config.toml"
    assert settings.data_dir == tmp_path / "data"
    assert settings.token == "imt_abc"
    assert "imt_abc" not in repr(settings)


def test_settings_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INCIDENT_MONITOR_DATA_DIR", str(tmp_path / "from-env"))
    assert Settings(data_dir=tmp_path / "from-flag").data_dir == tmp_path / "from-flag"


def test_settings_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INCIDENT_MONITOR_CONFIG", "INCIDENT_MONITOR_DATA_DIR", "INCIDENT_MONITOR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    # Nothing made up: locations.find_locations falls back to the init location or refuses.
    assert (settings.config, settings.data_dir, settings.token) == (None, None, None)


def test_settings_a_set_but_empty_token_is_kept_so_start_up_can_refuse_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCIDENT_MONITOR_TOKEN", "")
    assert Settings().token == ""
