"""``incident-monitor serve --transport http`` as users run it: the console script on a real socket.

Outside checkers run against it: the official MCP conformance suite and the MCP Inspector CLI.
Also: unsafe binds refused with what to configure, DNS-rebinding protection, health probes,
per-principal rate limits, and ``logging/setLevel``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from incident_monitor.errors import ConfigError
from incident_monitor.policy.principal import LOCAL_AGENT, local_operator
from incident_monitor.policy.scopes import ACTION_SCOPES, DEFAULT_AGENT_SCOPES
from incident_monitor.server.http_app import HttpOptions, build_http_app
from incident_monitor.server.tools import TOOL_ANNOTATIONS, build_mcp_server
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from support.databases import database_url_env
from support.http_helpers import http_server
from support.monitors import WEBHOOK_SECRET_VARIABLE, MonitorFactory, flow_config, new_webhook_secret
from support.paths import EXAMPLES

SCRIPT = Path(sys.executable).with_name("incident-monitor")
CONFORMANCE_SCENARIOS = ["server-initialize", "ping", "tools-list", "dns-rebinding-protection", "logging-set-level"]
AGENT_TOOLS = {name for name in TOOL_ANNOTATIONS if ACTION_SCOPES[name] <= DEFAULT_AGENT_SCOPES}


def child_env(node_bin: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")} | database_url_env()
    env[WEBHOOK_SECRET_VARIABLE] = new_webhook_secret()
    if node_bin is not None:
        env["PATH"] = f"{node_bin}{os.pathsep}{env.get('PATH', '')}"  # Node 22 first
    return env


@contextmanager
def served(data_dir: Path, *extra: str, env: dict[str, str]) -> Iterator[str]:
    """Run the console script with --port 0; yields the base URL it prints."""
    args = [str(SCRIPT), "serve", "--transport", "http", "--port", "0", "--data-dir", str(data_dir)]
    args += ["--config", str(EXAMPLES / "config.toml"), *extra]
    process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)/mcp", line)
        assert found, f"server did not start: {line}{process.stderr.read() if process.poll() is not None else ''}"
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_node(node_bin: Path, script: Path, *args: str, env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(node_bin / "node"), str(script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


# --- outside checkers --------------------------------------------------------------------------------


def test_the_official_conformance_suite_passes(tmp_path: Path, node_bin: Path) -> None:
    """Run as the suite expects: no token, so on loopback with --no-auth (callers are the local agent)."""
    env = child_env(node_bin)
    suite = node_bin.parent / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    with served(tmp_path / "data", "--no-auth", env=env) as url:
        outputs = {
            name: run_node(node_bin, suite, "server", "--url", f"{url}/mcp", "--scenario", name, env=env)
            for name in CONFORMANCE_SCENARIOS
        }
    for name, output in outputs.items():
        print(output)  # the report quotes these
        assert output.startswith("exit 0"), output
        passed = re.search(r"Passed: (\d+)/(\d+), 0 failed", output)
        assert passed and passed.group(1) == passed.group(2), f"{name}:\n{output}"


def test_the_inspector_cli_lists_our_tools_over_stdio_and_http(tmp_path: Path, node_bin: Path) -> None:
    env = child_env(node_bin)
    data_dir = tmp_path / "data"
    inspector = node_bin.parent / "@modelcontextprotocol" / "inspector-cli" / "build"
    created = subprocess.run(
        [
            str(SCRIPT),
            "tokens",
            "create",
            "--name",
            "inspector",
            "--scopes",
            "read,report",
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip()

    def tool_names(output: str) -> set[str]:
        assert output.startswith("exit 0"), output
        document = json.loads(output[output.index("{") : output.rindex("}") + 1])
        return {tool["name"] for tool in document["tools"]}

    stdio = run_node(
        node_bin,
        inspector / "cli.js",
        "--cli",
        # serve needs a config (it never makes one up); the Inspector takes --config as its own flag.
        "-e",
        f"INCIDENT_MONITOR_CONFIG={EXAMPLES / 'config.toml'}",
        str(SCRIPT),
        "serve",
        "--transport",
        "stdio",
        "--data-dir",
        str(data_dir),
        "--method",
        "tools/list",
        env=env,
        cwd=inspector,
    )
    assert tool_names(stdio) == AGENT_TOOLS  # no token on stdio: the local agent's tools
    with served(data_dir, env=env) as url:
        over_http = run_node(
            node_bin,
            inspector / "cli.js",
            "--cli",
            f"{url}/mcp",
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {token}",
            "--method",
            "tools/list",
            env=env,
            cwd=inspector,
        )
        over_sse = run_node(
            node_bin,
            inspector / "cli.js",
            "--cli",
            f"{url}/sse",
            "--transport",
            "sse",
            "--header",
            f"Authorization: Bearer {token}",
            "--method",
            "tools/list",
            env=env,
            cwd=inspector,
        )
    read_and_report = {"get_status", "report_incident", "list_incidents", "get_incident", "list_drafts"}
    read_and_report |= {"get_draft", "list_receipts", "list_sources", "get_code_change", "list_code_changes"}
    assert tool_names(over_http) == read_and_report  # filtered to the token's scopes
    assert tool_names(over_sse) == read_and_report


# --- binding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "flags", "expected"),
    [
        ("0.0.0.0", [], "http.allowed_hosts"),
        ("0.0.0.0", ["--no-auth", "--allowed-host", "monitor.example.com"], "--no-auth is allowed only on a loopback"),
    ],
)
def test_an_unsafe_bind_is_refused_saying_what_to_configure(
    tmp_path: Path, host: str, flags: list[str], expected: str
) -> None:
    done = subprocess.run(
        [
            str(SCRIPT),
            "serve",
            "--transport",
            "http",
            "--host",
            host,
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(EXAMPLES / "config.toml"),
            *flags,
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert expected in done.stderr


def test_a_real_deployment_binds_with_allowed_hosts_and_auth(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config(http={"allowed_hosts": ["monitor.example.com:*"]}))
    app = build_http_app(monitor, HttpOptions(host="0.0.0.0", port=8443))
    assert app.routes
    with pytest.raises(ConfigError):
        build_http_app(monitor, HttpOptions(host="0.0.0.0", port=8443, no_auth=True))


# --- on the wire -----------------------------------------------------------------------------------------


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    return make_monitor(flow_config(http={"rate_limits": {"principal_burst": 3, "principal_per_minute": 1}}))


def initialize_body() -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }


def test_dns_rebinding_protection_refuses_foreign_hosts_and_origins(monitor: Monitor) -> None:
    token = tokens.create_token(monitor, local_operator(), name="a", scopes=sorted(DEFAULT_AGENT_SCOPES)).secret
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    with http_server(monitor) as url:
        port = url.rsplit(":", 1)[1]
        foreign_host = httpx2.post(f"{url}/mcp", json=initialize_body(), headers={**headers, "Host": "evil.example"})
        foreign_origin = httpx2.post(
            f"{url}/mcp", json=initialize_body(), headers={**headers, "Origin": "http://evil.example"}
        )
        local = httpx2.post(
            f"{url}/mcp", json=initialize_body(), headers={**headers, "Origin": f"http://localhost:{port}"}
        )
    assert foreign_host.status_code == 421
    assert foreign_origin.status_code == 403
    assert local.status_code == 200


def test_health_probes_need_no_token_and_reveal_no_secrets(monitor: Monitor, webhook_secret: str) -> None:
    with http_server(monitor) as url:
        health = httpx2.get(f"{url}/healthz")
        ready = httpx2.get(f"{url}/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "destinations_ready": 2,
        "destinations": 2,
        "publish_ready": True,
        "publish_state": "ready",
        "problems": [],
    }
    assert webhook_secret not in ready.text


def test_each_principal_has_its_own_rate_limit(monitor: Monitor) -> None:
    first = tokens.create_token(monitor, local_operator(), name="busy", scopes=["read"]).secret
    second = tokens.create_token(monitor, local_operator(), name="calm", scopes=["read"]).secret
    headers = {"Accept": "application/json, text/event-stream"}
    with http_server(monitor) as url:

        def send(token: str) -> httpx2.Response:
            return httpx2.post(
                f"{url}/mcp", json=initialize_body(), headers={**headers, "Authorization": f"Bearer {token}"}
            )

        statuses = [send(first).status_code for _ in range(3)]
        limited = send(first)
        other = send(second)
    assert statuses == [200, 200, 200]  # burst 3
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 200


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")  # still in 2025-11-25, which we serve
async def test_logging_set_level_is_answered_on_stdio_too(monitor: Monitor) -> None:
    async with Client(build_mcp_server(monitor, lambda: LOCAL_AGENT), mode="legacy") as client:
        assert client.server_capabilities.logging is not None
        result = await client.set_logging_level("warning")
    assert result.model_dump(exclude_none=True) in ({}, {"meta": None})
