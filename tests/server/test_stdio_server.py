"""The installed ``incident-monitor serve`` over stdio, driven by a real MCP client in a subprocess.

These tests run the program the way a user's MCP client does: the console script, a TOML config
file, a data directory, and the environment (token, webhook secret) passed to the child process.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import select, update

from incident_monitor.config import MonitorConfig
from incident_monitor.domain.models import ApiToken
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from support.databases import raw_sql, store_engine
from support.mcp_helpers import error_text
from support.monitors import OPERATOR, WEBHOOK_SECRET_VARIABLE, new_webhook_secret
from support.paths import ROOT
from support.receivers import WebhookReceiver, delivery_id_for
from support.stdio_server import SCRIPT, call, child_env, served

TOKEN_VARIABLE = "INCIDENT_MONITOR_TOKEN"

READ_AND_REPORT_TOOLS = {
    "get_status",
    "report_incident",
    "list_incidents",
    "get_incident",
    "list_drafts",
    "get_draft",
    "list_receipts",
    "list_sources",
    "get_code_change",
    "list_code_changes",
}
LEAKY_DETAIL_SECRET = "sk-live-0123456789abcdef"

pytestmark = pytest.mark.anyio


# --- helpers -----------------------------------------------------------------------------------


def config_toml(webhook_url: str) -> str:
    """Like examples/config.toml, with the webhook pointed at ``webhook_url``."""
    return f"""
[approval]
ttl_minutes = 60
require_approval_for_high_risk = true

[[destinations]]
id = "ops-webhook"
kind = "webhook"
url = "{webhook_url}"
secret = "env:{WEBHOOK_SECRET_VARIABLE}"
allow_insecure_http = true
allow_private_networks = true
timeout_seconds = 5
max_attempts = 2
backoff_seconds = 0

[[destinations]]
id = "telemetry"
kind = "telemetry"
path = "telemetry.jsonl"

[[routes]]
id = "runtime-failures"
destination_id = "ops-webhook"
priority = 10
labels = ["incident-monitor"]
[routes.match]
route_tags = ["runtime-failure"]

[[routes]]
id = "safety-signals"
destination_id = "ops-webhook"
priority = 20
approval_policy = "always"
[routes.match]
risk_categories = ["tool_policy", "data_exposure"]

[default_destination]
destination_id = "telemetry"
"""


def write_config(tmp_path: Path, webhook_url: str = "http://127.0.0.1:9/hooks/incident") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(webhook_url), encoding="utf-8")
    return path


def cli(
    *args: str, env: dict[str, str], data_dir: Path, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an operator command as a person at a terminal would."""
    location = ["--data-dir", str(data_dir), *(["--config", str(config)] if config else [])]
    return subprocess.run(
        [str(SCRIPT), *args, *location],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def serve_once(env: dict[str, str], data_dir: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """Start ``serve`` with an empty stdin and no client: for startup failures, which must exit before serving."""
    return subprocess.run(
        [str(SCRIPT), "serve", "--transport", "stdio", "--data-dir", str(data_dir), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


async def refused(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> str:
    result = await client.call_tool(tool, arguments or {})
    assert result.is_error, f"{tool} was expected to be refused but returned {result.structured_content}"
    return error_text(result)


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


def runtime_failure(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "title": "Nightly smoke test failed on the payments service",
        "detail": f"HTTP 500 from /pay. Request carried Authorization: Bearer {LEAKY_DETAIL_SECRET}.",
        "source": "ci",
        "event": "ci.smoke.failed",
        "level": "error",
        "route_tags": ["runtime-failure"],
        "run_id": "run-7",
    }
    report.update(overrides)
    return report


def last_audit_row(data_dir: Path) -> tuple[str, str, str]:
    with store_engine(data_dir) as engine:
        # The caller's own last decision (a refusal is followed by the self-monitor's incident report, and the
        # server's shutdown by its audit checkpoint).
        [row] = raw_sql(
            engine,
            "SELECT principal, action, decision FROM audit_events "
            "WHERE principal NOT IN ('system:self-monitor', 'incident-monitor:audit') ORDER BY seq DESC LIMIT 1",
        )
    return (row[0], row[1], row[2])


def audit_count(data_dir: Path) -> int:
    with store_engine(data_dir) as engine:
        [(count,)] = raw_sql(engine, "SELECT COUNT(*) FROM audit_events")
    return int(count)


def create_token(name: str, scopes: str, *, env: dict[str, str], data_dir: Path) -> str:
    """``incident-monitor tokens create``: the secret is stdout's only line."""
    done = cli("tokens", "create", "--name", name, "--scopes", scopes, env=env, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def secret() -> str:
    return new_webhook_secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret) as running:
        yield running


# --- 1. the safe sequence ----------------------------------------------------------------------


async def test_safe_sequence_over_stdio_publishes_one_signed_delivery_with_a_receipt(
    tmp_path: Path, receiver: WebhookReceiver, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, receiver.url)
    data_dir = tmp_path / "data"
    env = child_env(**{WEBHOOK_SECRET_VARIABLE: secret})
    errlog = tmp_path / "server.stderr"
    caplog.set_level(logging.ERROR, logger="mcp.client.stdio")

    async with served(config, data_dir, env, errlog) as agent:
        status = await call(agent, "get_status")
        assert status["readiness"]["publish_ready"] is True
        assert status["caller"]["principal"] == "local-agent"
        assert {d["destination_id"]: d["ready"] for d in status["destinations"]} == {
            "ops-webhook": True,
            "telemetry": True,
        }
        assert status["problems"] == []

        report = runtime_failure()
        preview = await call(agent, "preview_route", {k: report[k] for k in ("route_tags", "level", "source", "event")})
        assert (preview["route_id"], preview["destination_id"]) == ("runtime-failures", "ops-webhook")
        assert preview["approval_required"] is True
        assert preview["blocked"] is False

        reported = await call(agent, "report_incident", report)
        draft_id = reported["draft_id"]
        assert "detail" in reported["redacted_fields"]

        drafts = await call(agent, "list_drafts", {"incident_id": reported["incident_id"]})
        assert [d["draft_id"] for d in drafts["drafts"]] == [draft_id]

        triaged = await call(agent, "triage_draft", {"draft_id": draft_id})
        digest = triaged["evidence_digest"]

        early = await refused(agent, "publish_draft", {"draft_id": draft_id})
        assert "approval_required" in early
        assert f"request_approval with draft_id={draft_id}" in early
        assert receiver.request_count == 0

        requested = await call(agent, "request_approval", {"draft_id": draft_id, "reason": "Payments are failing."})
        approval_id = requested["approval"]["approval_id"]
        assert requested["approval"]["status"] == "pending"

        approved = cli(
            "approvals",
            "approve",
            approval_id,
            "--note",
            "Evidence checked; page on-call.",
            env=env,
            data_dir=data_dir,
            config=config,
        )
        assert approved.returncode == 0, approved.stderr
        assert f"approval {approval_id}: approved" in approved.stdout

        published = await call(agent, "publish_draft", {"draft_id": draft_id})
        assert published["receipt"]["status"] == "published"

        receipts = await call(agent, "list_receipts", {"draft_id": draft_id})

    assert len(receiver.deliveries) == 1
    assert receiver.rejected == []
    delivery = receiver.deliveries[0]
    assert LEAKY_DETAIL_SECRET not in delivery.body.decode()
    assert delivery.payload["data"]["evidence_digest"] == digest

    receipt = next(r for r in receipts["receipts"] if r["status"] == "published")
    assert receipt["receipt_id"] == published["receipt"]["receipt_id"]
    assert receipt["destination_id"] == "ops-webhook"
    assert published["receipt"]["route_id"] == "runtime-failures"
    assert receipt["external_id"] == delivery_id_for(delivery.webhook_id)
    assert receipt["evidence_digest"] == digest
    assert published["receipt"]["approval_id"] == approval_id

    # stdout carried only protocol: the client parsed every line, and the server's own words went to stderr.
    assert not [r for r in caplog.records if "Failed to parse JSONRPC" in r.getMessage()]
    server_stderr = errlog.read_text(encoding="utf-8")
    assert "serving stdio as local-agent" in server_stderr
    assert secret not in server_stderr
    assert LEAKY_DETAIL_SECRET not in server_stderr


# --- 2-4. who the caller is --------------------------------------------------------------------


async def test_token_from_environment_sets_principal_and_scopes_and_a_revocation_applies_at_once(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    data_dir = tmp_path / "data"
    token = create_token("ci-agent", "read,report", env=child_env(), data_dir=data_dir)
    assert token.startswith("imt_")
    errlog = tmp_path / "server.stderr"

    async with served(config, data_dir, child_env(**{TOKEN_VARIABLE: token}), errlog) as agent:
        status = await call(agent, "get_status")
        assert status["caller"] == {
            "principal": "ci-agent",
            "scopes": ["incident_monitor:read", "incident_monitor:report"],
        }
        assert await tool_names(agent) == READ_AND_REPORT_TOOLS

        reported = await call(agent, "report_incident", runtime_failure())
        denial = await refused(agent, "triage_draft", {"draft_id": reported["draft_id"]})
        assert "incident_monitor:triage" in denial
        assert "ci-agent" in denial
        assert last_audit_row(data_dir) == ("ci-agent", "triage_draft", "deny")

        # The token is re-checked on every call: revoking it ends this session's authority at once.
        revoked = cli("tokens", "revoke", "ci-agent", env=child_env(), data_dir=data_dir)
        assert revoked.returncode == 0, revoked.stderr
        denial = await refused(agent, "get_status")
        assert "token 'ci-agent' was revoked" in denial
        assert "new one" in denial
        assert token not in denial
        assert await tool_names(agent) == set()

    # The audit log says who tried: the token's name, denied.
    assert last_audit_row(data_dir) == ("ci-agent", "get_status", "deny")
    server_stderr = errlog.read_text(encoding="utf-8")
    assert "serving stdio as ci-agent" in server_stderr
    assert token not in server_stderr


def _expire_token(data_dir: Path, name: str) -> None:
    """Move a token's expiry into the past, written in the column's own format."""
    with store_engine(data_dir) as engine, engine.begin() as connection:
        # Through the column's own type, so each backend stores it in its own format.
        tokens_table = ApiToken.__table__  # type: ignore[attr-defined]
        stored = connection.execute(select(tokens_table.c.expires_at).where(tokens_table.c.name == name)).scalar_one()
        past = stored - timedelta(days=3)
        connection.execute(update(tokens_table).where(tokens_table.c.name == name).values(expires_at=past))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown", "tokens create"),
        ("revoked", "was revoked"),
        ("expired", "expired at"),
        ("empty", "set but empty"),
    ],
)
def test_serve_refuses_to_start_with_a_bad_token(tmp_path: Path, case: str, expected: str) -> None:
    data_dir = tmp_path / "data"
    if case == "unknown":
        token = "imt_" + "x" * 43
    elif case == "empty":
        token = "  "
    else:
        # Set up through the service layer (the CLI's token commands have their own tests): faster.
        monitor = Monitor.open(config=MonitorConfig(), data_dir=data_dir)
        try:
            token = tokens.create_token(monitor, OPERATOR, name="ci-agent", scopes=["read"], expires_in_days=1).secret
            if case == "revoked":
                tokens.revoke_token(monitor, OPERATOR, "ci-agent")
        finally:
            monitor.close()
        if case == "expired":
            _expire_token(data_dir, "ci-agent")

    done = serve_once(child_env(**{TOKEN_VARIABLE: token}), data_dir, write_config(tmp_path))

    assert done.returncode == 2
    assert done.stdout == ""
    assert TOKEN_VARIABLE in done.stderr
    assert expected in done.stderr
    assert any(hint in done.stderr for hint in ("new one", "tokens create", "unset it"))  # what to do next
    if token.strip():
        assert token not in done.stderr


async def test_without_token_the_local_agent_has_default_scopes_and_cannot_approve(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data_dir = tmp_path / "data"

    async with served(config, data_dir, child_env(), tmp_path / "server.stderr") as agent:
        status = await call(agent, "get_status")
        assert status["caller"]["principal"] == "local-agent"
        assert set(status["caller"]["scopes"]) == {
            f"incident_monitor:{s}"
            for s in ("read", "report", "triage", "route_preview", "approval_request", "publish")
        }
        names = await tool_names(agent)
        assert {"report_incident", "triage_draft", "request_approval", "publish_draft"} <= names
        assert "decide_approval" not in names
        assert "resolve_incident" not in names

        denial = await refused(
            agent, "decide_approval", {"approval_id": "apr_0000000000000000", "decision": "approve", "note": "mine"}
        )
        assert "incident_monitor:approve" in denial

    assert last_audit_row(data_dir) == ("local-agent", "decide_approval", "deny")


# --- 5. state survives a restart ---------------------------------------------------------------


async def test_state_survives_a_server_restart(tmp_path: Path, secret: str) -> None:
    config = write_config(tmp_path)
    data_dir = tmp_path / "data"
    env = child_env(**{WEBHOOK_SECRET_VARIABLE: secret})
    errlog = tmp_path / "server.stderr"

    async with served(config, data_dir, env, errlog) as first:
        reported = await call(first, "report_incident", runtime_failure())
        requested = await call(
            first, "request_approval", {"draft_id": reported["draft_id"], "reason": "Payments are failing."}
        )
    approval_id = requested["approval"]["approval_id"]

    async with served(config, data_dir, env, errlog) as second:
        incidents = await call(second, "list_incidents")
        assert [i["incident_id"] for i in incidents["incidents"]] == [reported["incident_id"]]
        detail = await call(second, "get_draft", {"draft_id": reported["draft_id"]})

    assert detail["draft"]["status"] == "approval_required"
    assert [(a["approval_id"], a["status"]) for a in detail["approvals"]] == [(approval_id, "pending")]

    events = audit_count(data_dir)
    verified = cli("audit", "verify", env=env, data_dir=data_dir, config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"intact: {events} events" in verified.stdout


# --- 6-7. bad config stops startup, and stdout stays clean ---------------------------------------

LITERAL_SECRET = "whsec_" + "c2VjcmV0LXNob3VsZC1uZXZlci1iZS1lY2hvZWQ="


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda text: text.replace("ttl_minutes = 60", "ttl_minutes = 60\nttl_minuts = 5"),
            ["approval.ttl_minuts", "unknown key", "check its spelling"],
            id="unknown-key",
        ),
        pytest.param(
            lambda text: text.replace(
                'destination_id = "ops-webhook"\npriority = 10', 'destination_id = "pager"\npriority = 10'
            ),
            ["routes[0].destination_id", "'pager'", "add a [[destinations]] entry"],
            id="route-to-missing-destination",
        ),
        pytest.param(
            lambda text: text.replace(f'secret = "env:{WEBHOOK_SECRET_VARIABLE}"', f'secret = "{LITERAL_SECRET}"'),
            ["destinations[0].secret", "env:VARIABLE_NAME", "environment variable"],
            id="literal-secret",
        ),
    ],
)
def test_bad_config_stops_startup_naming_the_key_and_the_fix(
    tmp_path: Path, edit: Callable[[str], str], expected: list[str]
) -> None:
    config = tmp_path / "config.toml"
    original = config_toml("http://127.0.0.1:9/hooks/incident")
    config.write_text(edit(original), encoding="utf-8")
    assert config.read_text(encoding="utf-8") != original, "the edit did not apply"

    done = serve_once(child_env(), tmp_path / "data", config)

    assert done.returncode == 2
    assert done.stdout == ""  # stdout belongs to the protocol, even when startup fails
    assert "cannot start" in done.stderr
    for fragment in expected:
        assert fragment in done.stderr
    assert LITERAL_SECRET not in done.stderr
    assert "c2VjcmV0" not in done.stderr


def test_missing_config_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    done = serve_once(child_env(), tmp_path / "data", missing)

    assert done.returncode == 2
    assert done.stdout == ""
    assert f"config file not found: {missing}" in done.stderr
    assert "--config" in done.stderr
    assert "Traceback" not in done.stderr


# --- 8. the example runs end to end ------------------------------------------------------------


def test_agent_flow_example_runs_end_to_end_and_a_rerun_is_a_recurrence(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "examples/agent_flow.py", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=180,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    first = run()
    for fragment in ("published", "reused=True", "audit chain intact", "present in the delivery: False"):
        assert fragment in first
    assert '"recurrence": false' in first

    second = run()
    assert '"recurrence": true' in second
    assert "reused=True" in second
    assert "audit chain intact" in second
    # The recurrence went through the gates again and reached this run's (fresh) receiver exactly once.
    assert "deliveries: 1" in second
