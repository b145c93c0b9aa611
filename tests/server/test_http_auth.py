"""The auth matrix over real sockets: every tool by every kind of credential, allow or deny.

One server (Streamable HTTP on 127.0.0.1) and one monitor for the module. Credentials: none, a bad
token, an expired one, a revoked one, an agent token (default agent scopes), an operator token
(operator scopes), a downstream reader's token (read + downstream_read, for the guarded server-memory's
``memory__read_graph``) and an intake key. The first four and the intake key never reach a tool: the
request is refused at HTTP level (401, or 403 for the intake key) and nothing is stored. Agent and
operator tokens reach the ScopeGate: a tool is listed and callable exactly when the token holds its
scopes; otherwise the call is refused with ``insufficient_scope`` naming every scope it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlmodel import func, select

from incident_monitor.config import MonitorConfig
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent
from incident_monitor.policy.principal import LOCAL_AGENT, Principal, local_operator
from incident_monitor.policy.scopes import (
    ACTION_SCOPES,
    DEFAULT_AGENT_SCOPES,
    DOWNSTREAM_READ,
    OPERATOR_SCOPES,
    READ,
    required_scopes,
)
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.server.tools import TOOL_ANNOTATIONS
from incident_monitor.service import approvals, intake, intake_keys, tokens
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.pinned_reads import PinnedReads
from support.http_helpers import http_client, http_server
from support.mcp_helpers import error_text, mcp_client
from support.monitors import WEBHOOK_SECRET_VARIABLE, FakeClock, flow_config, new_webhook_secret

pytestmark = pytest.mark.anyio

DOWNSTREAM_TOOL = "memory__read_graph"  # an allowlisted read of a guarded downstream (server-memory)
TOOLS = sorted([*TOOL_ANNOTATIONS, DOWNSTREAM_TOOL])
CREDENTIALS = ["none", "bad", "expired", "revoked", "agent", "operator", "downstream", "intake_key"]
REFUSED_AT_HTTP = {"none": 401, "bad": 401, "expired": 401, "revoked": 401, "intake_key": 403}
DOWNSTREAM_READER = frozenset({READ, DOWNSTREAM_READ})
HOLDERS = {"agent": DEFAULT_AGENT_SCOPES, "operator": OPERATOR_SCOPES, "downstream": DOWNSTREAM_READER}
PROJECTS = [{"id": "shop", "name": "Shop", "sources": ["ci"], "default_route_tags": ["shop"]}]


@dataclass
class World:
    monitor: Monitor
    url: str
    secrets: dict[str, str | None]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, node_bin: Path) -> Iterator[World]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(WEBHOOK_SECRET_VARIABLE, new_webhook_secret())
        yield from _world(tmp_path_factory, node_bin)


def _world(tmp_path_factory: pytest.TempPathFactory, node_bin: Path) -> Iterator[World]:
    clock = FakeClock()
    data_dir: Path = tmp_path_factory.mktemp("auth-matrix")
    memory = {
        "id": "memory",
        "command": str(node_bin / "mcp-server-memory"),
        "env": {"PATH": f"{node_bin}:/usr/bin:/bin", "MEMORY_FILE_PATH": str(data_dir / "memory.jsonl")},
        "read_tools": ["read_graph"],
    }
    monitor = Monitor.open(
        config=MonitorConfig.model_validate(flow_config(projects=PROJECTS, downstream=[memory])),
        data_dir=data_dir,
        clock=clock,
    )
    op = local_operator()
    secrets: dict[str, str | None] = {"none": None, "bad": "imt_" + "x" * 43}
    secrets["expired"] = tokens.create_token(
        monitor, op, name="expiring", scopes=sorted(DEFAULT_AGENT_SCOPES), expires_in_days=1
    ).secret
    clock.advance(days=2)
    secrets["revoked"] = tokens.create_token(monitor, op, name="revoked", scopes=sorted(DEFAULT_AGENT_SCOPES)).secret
    tokens.revoke_token(monitor, op, "revoked")
    secrets["agent"] = tokens.create_token(monitor, op, name="agent-1", scopes=sorted(DEFAULT_AGENT_SCOPES)).secret
    secrets["operator"] = tokens.create_token(monitor, op, name="ops-1", scopes=sorted(OPERATOR_SCOPES)).secret
    secrets["downstream"] = tokens.create_token(monitor, op, name="reader-1", scopes=sorted(DOWNSTREAM_READER)).secret
    secrets["intake_key"] = intake_keys.create_intake_key(monitor, op, project_id="shop").secret

    # One draft routed to telemetry (publishable without approval), one to the webhook with a pending approval.
    quiet = intake.report_incident(
        monitor,
        LOCAL_AGENT,
        IncidentReport(title="Lint warnings in CI", source="ci", event="ci.lint.failed", level="warning"),
    )
    loud = intake.report_incident(
        monitor,
        LOCAL_AGENT,
        IncidentReport(
            title="Checkout run failed",
            source="automation_v2",
            event="automation_v2.run.failed",
            route_tags=["runtime-failure"],
        ),
    )
    assert quiet.draft_id and loud.draft_id
    pending = approvals.request_approval(monitor, LOCAL_AGENT, loud.draft_id, "on-call must know")
    ids = {
        "quiet_draft": quiet.draft_id,
        "quiet_incident": quiet.incident_id,
        "loud_draft": loud.draft_id,
        "approval": pending.approval.approval_id,
    }
    with http_server(monitor) as url:
        yield World(monitor, url, secrets, ids)
    monitor.close()


def arguments(tool: str, ids: dict[str, str]) -> dict[str, Any]:
    return {
        "get_status": {},
        "report_incident": {"title": "Smoke test failed", "source": "ci", "event": "ci.smoke.failed"},
        "list_incidents": {},
        "get_incident": {"incident_id": ids["quiet_incident"]},
        "list_drafts": {},
        "get_draft": {"draft_id": ids["quiet_draft"]},
        "triage_draft": {"draft_id": ids["quiet_draft"]},
        "preview_route": {"draft_id": ids["loud_draft"]},
        "request_approval": {"draft_id": ids["loud_draft"], "reason": "on-call must know"},
        "decide_approval": {"approval_id": ids["approval"], "decision": "approve", "note": "checked"},
        "publish_draft": {"draft_id": ids["quiet_draft"]},
        "list_receipts": {},
        "list_sources": {},
        "resolve_incident": {"incident_id": ids["quiet_incident"], "resolution_note": "config fixed"},
        "get_authority_inventory": {},
        "run_posture_checks": {},
        "run_assessment_probes": {},
        "build_assessment_report": {},
        "build_deployment_cards": {},
        DOWNSTREAM_TOOL: {},
        "request_code_change": {"incident_id": ids["quiet_incident"], "repository": "acme/shop", "instructions": "fix"},
        "follow_up_code_change": {"run_id": "ccr_" + "0" * 16, "instructions": "also this"},
        "stop_code_change": {"run_id": "ccr_" + "0" * 16},
        "get_code_change": {"run_id": "ccr_" + "0" * 16},
        "list_code_changes": {},
    }[tool]


def audit_rows(monitor: Monitor) -> int:
    with monitor.session() as session:
        return session.exec(select(func.count()).select_from(AuditEvent)).one()


def test_the_matrix_covers_every_tool_and_credential() -> None:
    assert set(TOOLS) - {DOWNSTREAM_TOOL} == {t for t in ACTION_SCOPES if t in TOOL_ANNOTATIONS} and len(TOOLS) == 25
    assert len(TOOLS) * len(CREDENTIALS) == 200


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("tool", TOOLS)
async def test_auth_matrix(world: World, tool: str, credential: str) -> None:
    secret = world.secrets[credential]
    if credential in REFUSED_AT_HTTP:
        await _assert_refused_at_http(world, tool, credential, secret)
        return
    needed = required_scopes(tool) or frozenset()
    allowed = needed <= HOLDERS[credential]
    async with http_client(world.url, secret) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool(tool, arguments(tool, world.ids))
    text = error_text(result)
    assert (tool in listed) is allowed
    if allowed:
        # Past the gate: success, or a business answer (e.g. already decided) — never a scope refusal.
        # (Governance reports quote refusals they observed, so only an error result can be one.)
        assert not (result.is_error and ("insufficient_scope" in text or "permission denied" in text)), text
    else:
        assert result.is_error
        assert text.startswith("insufficient_scope:"), text
        for scope in needed:
            assert scope in text


async def _assert_refused_at_http(world: World, tool: str, credential: str, secret: str | None) -> None:
    before = audit_rows(world.monitor)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    headers = {"Accept": "application/json, text/event-stream"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    async with httpx2.AsyncClient(base_url=world.url, timeout=30) as http:
        response = await http.post("/mcp", json=body, headers=headers)
        sse = await http.get("/sse", headers=headers)
    assert response.status_code == REFUSED_AT_HTTP[credential]
    assert sse.status_code == REFUSED_AT_HTTP[credential]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{world.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    described = json.loads(response.text)["error_description"]
    expected = {
        "none": "bearer token is required",
        "bad": "token not recognised",
        "expired": "token 'expiring' expired",
        "revoked": "token 'revoked' was revoked",
        "intake_key": "intake keys can only report",
    }[credential]
    assert expected in described
    if credential == "intake_key":
        assert 'error="insufficient_scope"' in challenge
    elif credential != "none":
        assert 'error="invalid_token"' in challenge
    if secret:
        assert secret not in response.text and secret not in challenge
    assert audit_rows(world.monitor) == before  # nothing reached the monitor


async def test_a_real_client_with_a_bad_token_cannot_connect(world: World) -> None:
    with pytest.raises(Exception) as caught:
        async with http_client(world.url, world.secrets["bad"]) as client:
            await client.list_tools()
    assert "401" in repr(caught.value) or "Unauthorized" in repr(caught.value) or caught.value


async def test_protected_resource_metadata_lists_the_scopes(world: World) -> None:
    async with httpx2.AsyncClient(base_url=world.url) as http:
        doc = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
    assert doc["resource"] == f"{world.url}/mcp"
    assert doc["bearer_methods_supported"] == ["header"]
    assert set(doc["scopes_supported"]) >= DEFAULT_AGENT_SCOPES | OPERATOR_SCOPES


async def test_stdio_and_http_refuse_a_missing_scope_with_the_same_words(world: World) -> None:
    """The ScopeGate is shared: an in-memory (stdio-equivalent) client and an HTTP client read the same refusal."""
    args = arguments("decide_approval", world.ids)
    async with mcp_client(world.monitor, Principal("agent-1", DEFAULT_AGENT_SCOPES)) as local:
        local_text = error_text(await local.call_tool("decide_approval", args))
    async with http_client(world.url, world.secrets["agent"]) as remote:
        remote_text = error_text(await remote.call_tool("decide_approval", args))
    assert local_text == remote_text
    assert local_text.startswith("insufficient_scope: permission denied: decide_approval needs scope")


def test_the_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.retry_after("p"), limiter.retry_after("p")] == [None, None]
    assert limiter.retry_after("p") == 1  # empty: one token a second
    assert limiter.retry_after("q") is None  # buckets are per key
    now[0] += 1.0
    assert limiter.retry_after("p") is None
    assert limiter.retry_after("p") == 1


# --- the authenticator is the SDK's async TokenVerifier, and never blocks the loop -----------------


async def test_the_authenticator_is_an_async_token_verifier_that_looks_tokens_up_off_the_loop(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from mcp.server.auth.provider import AccessToken, TokenVerifier

    from incident_monitor.server import auth

    lookups: list[threading.Thread] = []
    real = auth.authenticate_token

    def recording(monitor: Monitor, credential: str, reads: PinnedReads | None = None) -> Principal:
        lookups.append(threading.current_thread())
        return real(monitor, credential, reads)

    monkeypatch.setattr(auth, "authenticate_token", recording)
    verifier: TokenVerifier = auth.BearerAuthenticator(world.monitor)

    access = await verifier.verify_token(world.secrets["agent"] or "")
    assert isinstance(access, AccessToken)
    assert (access.client_id, set(access.scopes)) == ("agent-1", set(DEFAULT_AGENT_SCOPES))
    assert lookups and all(thread is not threading.current_thread() for thread in lookups)
    for refused in ("bad", "expired", "revoked", "intake_key"):
        assert await verifier.verify_token(world.secrets[refused] or "") is None
