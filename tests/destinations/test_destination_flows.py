"""Destinations inside the governed flow: readiness in get_status, fail-closed publish, failed receipts that a
later publish finishes, 410 disabling a destination, and a canary secret that must never surface."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from incident_monitor.domain.enums import ReceiptStatus
from incident_monitor.domain.models import AuditEvent, Receipt
from incident_monitor.errors import PermissionDenied, PublishBlocked
from incident_monitor.service import destination_health, publishing, status
from incident_monitor.service.monitor import Monitor
from support.drafts import approved_draft, lease_lapses
from support.github_fake import FakeGitHub
from support.linear_fake import FakeLinear
from support.mcp_helpers import mcp_client
from support.memory_graph import ENTITIES
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config
from support.redirector import Redirector

pytestmark = pytest.mark.anyio

GITHUB_VAR = "IM_FLOW_GITHUB_TOKEN"


def github_config(fake_url: str, **overrides: Any) -> dict[str, Any]:
    destination = {
        "id": "gh",
        "kind": "github",
        "repo": "acme/incidents",
        "token": f"env:{GITHUB_VAR}",
        "api_url": fake_url,
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "backoff_seconds": 0,
        "max_attempts": 2,
        "timeout_seconds": 5,
        **overrides,
    }
    config = flow_config()
    config["destinations"].append(destination)
    config["routes"][0]["destination_id"] = "gh"
    return config


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    token = "ghp_" + secrets.token_hex(16)
    monkeypatch.setenv(GITHUB_VAR, token)
    with FakeGitHub(token=token) as fake:
        yield fake
    assert fake.violations == []


def receipts(monitor: Monitor) -> list[Receipt]:
    with monitor.session() as session:
        return list(session.exec(select(Receipt)).all())


async def test_readiness_of_each_destination_is_in_get_status_and_blocks_publish(
    make_monitor: MonitorFactory, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, webhook_secret: str
) -> None:
    monitor = make_monitor(github_config(github.url))
    draft_id = approved_draft(monitor)
    monkeypatch.delenv(GITHUB_VAR)  # the token goes away after approval

    view = status.get_status(monitor, AGENT)
    gh = next(d for d in view.destinations if d.destination_id == "gh")
    assert gh.kind == "github" and gh.ready is False
    assert gh.reasons == [f"environment variable {GITHUB_VAR} is not set or empty: put the GitHub token in it"]

    with pytest.raises(PublishBlocked, match=f"destination 'gh' not ready: environment variable {GITHUB_VAR}"):
        await publishing.publish_draft(monitor, AGENT, draft_id)
    assert github.requests == [], "a destination that is not ready was called"


async def test_a_failed_publish_leaves_a_failed_receipt_and_publishing_again_finishes_it_once(
    make_monitor: MonitorFactory, github: FakeGitHub, webhook_secret: str
) -> None:
    monitor = make_monitor(github_config(github.url))
    draft_id = approved_draft(monitor)
    github.create_error = 503

    failed = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert failed.receipt.status is ReceiptStatus.failed
    assert failed.receipt.attempt_count == 2
    assert failed.receipt.error is not None and "GitHub answered 503" in failed.receipt.error
    assert not github.issues

    github.create_error = None
    done = await publishing.publish_draft(monitor, AGENT, draft_id)

    assert done.receipt.receipt_id == failed.receipt.receipt_id
    assert done.receipt.status is ReceiptStatus.published
    assert done.receipt.external_id == "1"
    assert done.receipt.external_url == "https://github.com/acme/incidents/issues/1"
    assert done.receipt.attempt_count == 3
    assert len(github.issues) == 1
    again = await publishing.publish_draft(monitor, AGENT, draft_id)
    assert again.reused and len(github.issues) == 1
    assert len(github.creates()) == 3  # two answered 503, one created; the re-publish sent nothing


async def test_a_410_disables_the_destination_until_an_operator_re_enables_it(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    gone = Redirector({"/hooks/incident": (410, "this hook was deleted")})
    try:
        monitor = make_monitor(flow_config(gone.base + "/hooks/incident"))
        draft_id = approved_draft(monitor)

        result = await publishing.publish_draft(monitor, AGENT, draft_id)
        assert result.receipt.status is ReceiptStatus.failed
        assert result.receipt.error is not None and "410 Gone" in result.receipt.error

        hook = next(d for d in status.get_status(monitor, AGENT).destinations if d.destination_id == "ops-webhook")
        assert hook.ready is False
        assert hook.reasons[0].startswith("disabled since ")
        assert "webhook answered 410 Gone" in hook.reasons[0]
        assert "incident-monitor destinations enable ops-webhook" in hook.reasons[0]
        with pytest.raises(PublishBlocked, match="disabled since"):
            await publishing.publish_draft(monitor, AGENT, draft_id)
        assert len(gone.hits) == 1

        with pytest.raises(PermissionDenied, match="enable_destination needs scope incident_monitor:admin"):
            destination_health.enable_destination(monitor, AGENT, "ops-webhook")
        assert destination_health.enable_destination(monitor, OPERATOR, "ops-webhook") is True
        assert destination_health.enable_destination(monitor, OPERATOR, "ops-webhook") is False
        hook = next(d for d in status.get_status(monitor, AGENT).destinations if d.destination_id == "ops-webhook")
        assert hook.ready is True
    finally:
        gone.close()


# --- canary secret -------------------------------------------------------------------------------

CANARY = "canary-" + secrets.token_hex(12)


class _Echo(Redirector):
    """A hostile receiver that echoes the canary back in its error answers."""


async def test_a_canary_secret_never_surfaces_from_any_adapter(
    make_monitor: MonitorFactory,
    node_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook_canary = "whsec_" + __import__("base64").b64encode(CANARY.encode()[:24].ljust(24, b"x")).decode()
    monkeypatch.setenv("IM_CANARY_GITHUB", CANARY)
    monkeypatch.setenv("IM_CANARY_LINEAR", CANARY)
    monkeypatch.setenv("IM_CANARY_MCP", CANARY)
    monkeypatch.setenv("IM_CANARY_WEBHOOK", webhook_canary)
    echo = _Echo({"/hooks/incident": (400, f"bad signature for secret {webhook_canary}")})
    with FakeGitHub(token="not-the-canary") as gh, FakeLinear(key=CANARY, auth_header="Bearer x") as lin:
        try:
            common = {"allow_insecure_http": True, "allow_private_networks": True, "backoff_seconds": 0}
            config = flow_config()
            config["destinations"] = [
                {"id": "gh", "kind": "github", "repo": "acme/incidents", "token": "env:IM_CANARY_GITHUB",
                 "api_url": gh.url, "max_attempts": 1, **common},
                {"id": "lin", "kind": "linear", "team_id": "team-ops", "token": "env:IM_CANARY_LINEAR",
                 "api_url": lin.url, "max_attempts": 1, **common},
                {"id": "hook", "kind": "webhook", "url": echo.base + "/hooks/incident",
                 "secret": "env:IM_CANARY_WEBHOOK", "max_attempts": 1, **common},
                {"id": "memory", "kind": "mcp_tool", "server": "memory",
                 "command": str(node_bin / "mcp-server-memory"),
                 "env": {"PATH": f"{node_bin}:/usr/bin:/bin", "MEMORY_FILE_PATH": str(tmp_path / "m.jsonl"),
                         "API_TOKEN": "env:IM_CANARY_MCP"},
                 "tool": "create_entities", "allowed_tools": ["create_entities"],
                 "arguments": {"entities": ENTITIES}},
            ]  # fmt: skip
            config["routes"] = [
                {"id": f"to-{d['id']}", "destination_id": d["id"], "priority": i, "match": {"sources": [d["id"]]}}
                for i, d in enumerate(config["destinations"])
            ]
            config["default_destination"] = None
            monitor = make_monitor(config)
            outputs: list[str] = []
            for destination in ("gh", "lin", "hook", "memory"):
                draft_id = approved_draft_from(monitor, destination)
                result = await publishing.publish_draft(monitor, AGENT, draft_id)
                outputs.append(result.model_dump_json())
            outputs.append(status.get_status(monitor, OPERATOR).model_dump_json())
            outcomes = {r.destination_id: r.status for r in receipts(monitor)}
            # GitHub and Linear refused the credential, the webhook refused the delivery, memory took it.
            assert outcomes == {
                "gh": ReceiptStatus.failed,
                "lin": ReceiptStatus.failed,
                "hook": ReceiptStatus.failed,
                "memory": ReceiptStatus.published,
            }
            # Each hostile receiver echoed the credential; the receipts carry "[redacted]" in its place.
            for receipt in receipts(monitor):
                if receipt.destination_id != "memory":
                    assert receipt.response_excerpt is not None and "[redacted]" in receipt.response_excerpt
            with monitor.session() as session:
                stored = [r.model_dump_json() for r in session.exec(select(Receipt)).all()]
                stored += [e.model_dump_json() for e in session.exec(select(AuditEvent)).all()]
        finally:
            echo.close()
    database = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    for secret in (CANARY, webhook_canary):
        assert secret not in "\n".join(outputs), "secret in a tool output"
        assert secret not in "\n".join(stored), "secret in a receipt or audit row"
        assert secret not in caplog.text, "secret in the logs"
        assert secret.encode() not in database, "secret in the database files"
    assert json.loads(outputs[0])["receipt"]["error"].startswith("GitHub rejected the token (401")


def approved_draft_from(monitor: Monitor, source: str) -> str:
    from incident_monitor.domain.io import IncidentReport
    from incident_monitor.service import approvals, intake

    report = intake.report_incident(
        monitor,
        AGENT,
        IncidentReport(title=f"Failure seen by {source}", source=source, event="ci.smoke.failed", level="error"),
    )
    assert report.draft_id is not None
    requested = approvals.request_approval(monitor, AGENT, report.draft_id, "canary")
    approvals.decide_approval(monitor, OPERATOR, requested.approval.approval_id, "approve", "ok")
    return report.draft_id


async def test_the_outbound_servers_tools_are_never_listed_to_our_callers(
    make_monitor: MonitorFactory, node_bin: Path, tmp_path: Path
) -> None:
    config = flow_config()
    config["destinations"].append(
        {
            "id": "memory",
            "kind": "mcp_tool",
            "server": "memory",
            "command": str(node_bin / "mcp-server-memory"),
            "env": {"PATH": f"{node_bin}:/usr/bin:/bin", "MEMORY_FILE_PATH": str(tmp_path / "m.jsonl")},
            "tool": "create_entities",
            "allowed_tools": ["create_entities"],
            "arguments": {"entities": ENTITIES},
        }
    )
    monitor = make_monitor(config)
    for who in (AGENT, OPERATOR):
        async with mcp_client(monitor, who) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names.isdisjoint({"create_entities", "add_observations", "read_graph", "delete_entities"})
            refused = await client.call_tool("create_entities", {"entities": []})
            assert refused.is_error
    assert not (tmp_path / "m.jsonl").exists()
    memory = next(d for d in status.get_status(monitor, OPERATOR).destinations if d.destination_id == "memory")
    assert memory.kind == "mcp_tool" and memory.ready is True


async def test_recovery_leaves_a_destination_health_pending_receipt_until_it_is_re_enabled(
    make_monitor: MonitorFactory, github: FakeGitHub, webhook_secret: str, clock: FakeClock
) -> None:
    monitor = make_monitor(github_config(github.url))
    draft_id = approved_draft(monitor)
    claimed = publishing.claim(monitor, AGENT, draft_id)  # then the process "crashes" before delivering
    lease_lapses(monitor, clock)
    with monitor.session() as session:
        destination_health.disable_destination(session, "gh", "issues disabled (410)", monitor.clock())

    assert await publishing.recover_pending(monitor) == []
    assert github.requests == []
    assert destination_health.enable_destination(monitor, OPERATOR, "gh")
    assert await publishing.recover_pending(monitor) == [claimed.receipt_id]
    (receipt,) = receipts(monitor)
    assert receipt.status is ReceiptStatus.published and len(github.issues) == 1
