"""``make run`` (examples/serve_http.py) as a new user meets it: a real process, its banner, a real MCP client.

Every route of examples/config.toml publishes with nothing else running (the example receiver is started
by make run itself), the evidence lands where the banner says, and the demo token survives restarts
and a second instance that cannot bind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from support.http_helpers import http_client
from support.paths import EXAMPLES, ROOT

# `make run` is the single-host demo on the SQLite default (its environment has no database URL): run once.
pytestmark = pytest.mark.sqlite_only

SERVE_HTTP = EXAMPLES / "serve_http.py"
BANNER_END = "Stop this server"


def user_env() -> dict[str, str]:
    """A shell with none of the monitor's variables set, as on a fresh clone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_MONITOR_")}


@dataclass(frozen=True)
class Banner:
    text: str
    url: str
    token: str
    token_kept: bool
    deliveries: Path
    telemetry: Path
    approve_command: str


def parse_banner(text: str) -> Banner:
    url = re.search(r"Streamable HTTP\s+(http://127\.0\.0\.1:\d+)/mcp", text)
    token = re.search(r"^\s+(imt_\S+)$", text, re.MULTILINE)
    deliveries = re.search(r"each verified delivery is appended to (\S+)", text)
    telemetry = re.search(r"telemetry\s+one JSON line per publish in (\S+)", text)
    approve = re.search(r"^\s+(\S+ approvals approve APPROVAL_ID .+)$", text, re.MULTILINE)
    assert url and token and deliveries and telemetry and approve, text
    return Banner(
        text=text,
        url=url.group(1),
        token=token.group(1),
        token_kept="kept from the last run" in text,
        deliveries=Path(deliveries.group(1)),
        telemetry=Path(telemetry.group(1)),
        approve_command=approve.group(1),
    )


@contextmanager
def make_run(data_dir: Path, stderr_path: Path, port: int = 0) -> Iterator[tuple[subprocess.Popen[str], Banner]]:
    """Start examples/serve_http.py from the repository root, as `make run` does; yields it and its banner."""
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(SERVE_HTTP), "--port", str(port), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=user_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        printed = ""
        while BANNER_END not in printed:
            line = process.stdout.readline()
            assert line, f"make run stopped early:\n{printed}\n{stderr_path.read_text()}"
            printed += line
        yield process, parse_banner(printed)
    finally:
        process.terminate()
        process.wait(timeout=30)


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


def approve_as_the_banner_says(banner: Banner, approval_id: str) -> str:
    """Run the banner's operator command exactly as printed (another terminal: no server variables)."""
    command = shlex.split(banner.approve_command.replace("APPROVAL_ID", approval_id))
    done = subprocess.run(command, cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.anyio
async def test_make_run_publishes_every_route_with_nothing_else_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with make_run(data_dir, tmp_path / "stderr.txt") as (_, banner):
        assert 'make inspect ARGS="--method tools/list"' in banner.text  # the pinned Inspector, as this agent
        assert not banner.token_kept
        async with http_client(banner.url, banner.token) as agent:
            status = await call(agent, "get_status", {})
            assert status["caller"]["principal"].startswith("demo-agent-")
            assert status["readiness"]["publish_ready"] is True, status["problems"]
            assert status["problems"] == []

            # A runtime failure: routed to the signed webhook, approval required.
            reported = await call(
                agent,
                "report_incident",
                {
                    "title": "Checkout smoke test failed",
                    "detail": "POST /checkout answered 500 three times in a row.",
                    "source": "ci",
                    "event": "ci.smoke.failed",
                    "level": "error",
                    "route_tags": ["runtime-failure"],
                },
            )
            draft_id = reported["draft_id"]
            await call(agent, "triage_draft", {"draft_id": draft_id})
            refused = await agent.call_tool("publish_draft", {"draft_id": draft_id})
            assert refused.is_error
            requested = await call(agent, "request_approval", {"draft_id": draft_id, "reason": "Checkout is down."})
            assert requested["approval"]["destination_id"] == "ops-webhook"

            approved = approve_as_the_banner_says(banner, requested["approval"]["approval_id"])
            assert "approved" in approved

            published = await call(agent, "publish_draft", {"draft_id": draft_id})
            receipt = published["receipt"]
            assert receipt["status"] == "published", receipt
            assert receipt["destination_id"] == "ops-webhook"

            # Routine noise no route claims: the default destination (telemetry), no approval.
            routine = await call(
                agent,
                "report_incident",
                {"title": "Nightly export was slow", "source": "cron", "event": "export.slow", "level": "warning"},
            )
            await call(agent, "triage_draft", {"draft_id": routine["draft_id"]})
            telemetry_receipt = (await call(agent, "publish_draft", {"draft_id": routine["draft_id"]}))["receipt"]
            assert telemetry_receipt["status"] == "published", telemetry_receipt
            assert telemetry_receipt["destination_id"] == "telemetry"

            after = await call(agent, "get_status", {})
            assert after["readiness"]["publish_ready"] is True, after["problems"]

    [delivery] = read_lines(banner.deliveries)
    assert delivery["webhook_id"] == receipt["idempotency_key"]
    assert delivery["payload"]["data"]["draft_id"] == draft_id
    assert delivery["payload"]["data"]["evidence_digest"] == receipt["evidence_digest"]
    [line] = read_lines(banner.telemetry)
    assert routine["draft_id"] in json.dumps(line)


@pytest.mark.anyio
async def test_a_restart_keeps_the_demo_token_stored_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with make_run(data_dir, tmp_path / "first.txt") as (_, first):
        pass
    token_file = data_dir / "demo-agent-token"
    assert token_file.read_text().strip() == first.token
    assert token_file.stat().st_mode & 0o777 == 0o600

    with make_run(data_dir, tmp_path / "second.txt") as (_, second):
        assert second.token == first.token
        assert second.token_kept
        async with http_client(second.url, first.token) as agent:
            status = await call(agent, "get_status", {})
    assert status["caller"]["principal"].startswith("demo-agent-")


@pytest.mark.anyio
async def test_a_revoked_stored_token_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with make_run(data_dir, tmp_path / "first.txt") as (_, first):
        pass
    (data_dir / "demo-agent-token").write_text("imt_not-a-token-this-database-knows\n")

    with make_run(data_dir, tmp_path / "second.txt") as (_, second):
        assert not second.token_kept
        assert second.token != first.token
        async with http_client(second.url, second.token) as agent:
            await call(agent, "get_status", {})
    assert (data_dir / "demo-agent-token").read_text().strip() == second.token


@pytest.mark.anyio
async def test_a_second_make_run_on_a_taken_port_leaves_the_running_servers_token_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with make_run(data_dir, tmp_path / "first.txt") as (process, first):
        port = int(first.url.rsplit(":", 1)[1])
        second = subprocess.run(
            [sys.executable, str(SERVE_HTTP), "--port", str(port), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=user_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
        assert "imt_" not in second.stdout + second.stderr
        assert (data_dir / "demo-agent-token").read_text().strip() == first.token
        assert process.poll() is None
        # The first server still accepts its token: nothing was revoked.
        async with http_client(first.url, first.token) as agent:
            status = await call(agent, "get_status", {})
    assert status["caller"]["principal"].startswith("demo-agent-")
