"""``POST /incident-monitor/intake/report`` with scoped intake keys, over a real socket.

A key reports for its project (and source) through the same intake service as ``report_incident``;
it can do nothing else, and every refusal is a JSON error with a code and the right status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from sqlmodel import select

from incident_monitor.domain.models import AuditEvent, IntakeKey
from incident_monitor.policy.principal import LOCAL_AGENT, local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES
from incident_monitor.server import intake_endpoint
from incident_monitor.service import intake_keys, tokens
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.route_preview import preview_route
from support.http_helpers import http_server
from support.intake import INTAKE, PROJECTS, body, incidents
from support.monitors import MonitorFactory, call_while_a_writer_holds_the_lock, flow_config


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    return make_monitor(
        flow_config(projects=PROJECTS, http={"rate_limits": {"intake_key_burst": 5, "intake_key_per_minute": 1}})
    )


@pytest.fixture
def url(monitor: Monitor) -> Iterator[str]:
    with http_server(monitor) as base:
        yield base


def new_key(monitor: Monitor, project: str = "shop", source: str | None = None) -> str:
    return intake_keys.create_intake_key(monitor, local_operator(), project_id=project, source_id=source).secret


def post(url: str, key: str | None, payload: Any, *, header: str = "x-incident-monitor-intake-key") -> httpx2.Response:
    headers = {}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    return httpx2.post(f"{url}{INTAKE}", json=payload, headers=headers, timeout=30)


def test_a_key_reports_for_its_project_through_the_intake_service(monitor: Monitor, url: str) -> None:
    key = new_key(monitor)
    first = post(
        url, key, body(route_tags=["runtime-failure"], detail="token=ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    )
    assert first.status_code == 201, first.text
    result = first.json()
    assert result["deduplicated"] is False and result["draft_id"]
    assert "detail" in result["redacted_fields"]

    [incident] = incidents(monitor)
    assert (incident.project_id, incident.source) == ("shop", "ci")
    assert incident.route_tags == ["runtime-failure", "shop"]  # the project's default tag merged in
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in incident.detail
    [key_row] = _keys(monitor)
    assert incident.reported_by == f"intake-key:{key_row.key_id}"
    assert key_row.last_used_at is not None

    again = post(url, key, body(title="Deploy step failed"), header="Authorization")  # the bearer form works too
    assert again.status_code == 201, again.text
    with monitor.session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.principal == f"intake-key:{key_row.key_id}")).all()
    assert [(r.action, r.decision.value) for r in rows] == [("report_incident", "allow")] * 2


def test_a_repeat_deduplicates_with_200(monitor: Monitor, url: str) -> None:
    key = new_key(monitor)
    assert post(url, key, body()).status_code == 201
    repeat = post(url, key, body())
    assert repeat.status_code == 200 and repeat.json()["deduplicated"] is True


def test_the_project_binds_where_its_drafts_may_go(monitor: Monitor, url: str) -> None:
    """shop may publish only to telemetry: a report steering to the webhook is blocked, in preview and publish."""
    key = new_key(monitor)
    draft_id = post(url, key, body(route_tags=["runtime-failure"])).json()["draft_id"]
    decision = preview_route(monitor, LOCAL_AGENT, draft_id=draft_id)
    assert decision.destination_id == "ops-webhook"
    assert decision.blocked
    assert any("project 'shop' may publish only to telemetry" in r for r in decision.blocked_reasons)
    # A report may raise its approval requirement (risk_level critical), never lower it.
    critical = post(url, key, body(title="Payment data exposed", risk_level="critical")).json()
    decision = preview_route(monitor, LOCAL_AGENT, draft_id=critical["draft_id"])
    assert decision.destination_id == "telemetry" and decision.approval_required


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no key", 401, "key_required"),
        ("unknown key", 401, "key_invalid"),
        ("agent token", 401, "key_invalid"),
        ("disabled key", 401, "key_invalid"),
        ("other project", 403, "key_not_allowed"),
        ("other source", 403, "key_not_allowed"),
        ("unknown project", 422, "project_unknown"),
        ("unknown source", 422, "source_unknown"),
        ("source missing", 422, "report_invalid"),
        ("missing title", 422, "report_invalid"),
        ("extra field", 422, "report_invalid"),
        ("project in report", 422, "report_invalid"),
        ("over limits", 422, "report_invalid"),
        ("routine noise", 422, "report_rejected"),
        ("not json", 400, "body_invalid"),
        ("json list", 400, "body_invalid"),
        ("too large", 413, "too_large"),
    ],
)
def test_refusals_are_json_errors_with_codes_and_store_nothing(
    monitor: Monitor, url: str, case: str, status: int, code: str
) -> None:
    key = new_key(monitor)
    payload: Any = body()
    send_key: str | None = key
    if case == "no key":
        send_key = None
    elif case == "unknown key":
        send_key = "imk_" + "A" * 43
    elif case == "agent token":
        send_key = tokens.create_token(monitor, local_operator(), name="a", scopes=sorted(DEFAULT_AGENT_SCOPES)).secret
    elif case == "disabled key":
        intake_keys.disable_intake_key(monitor, local_operator(), _keys(monitor)[0].key_id)
    elif case == "other project":
        payload = body(project_id="blog")
    elif case == "other source":
        send_key = new_key(monitor, source="canary")
    elif case == "unknown project":
        payload = body(project_id="nope")
    elif case == "unknown source":
        payload = body(source_id="laptop")
    elif case == "source missing":
        payload = body(source_id=None)
    elif case == "missing title":
        payload = body()
        del payload["report"]["title"]
    elif case == "extra field":
        payload = {**body(), "admin": True}
    elif case == "project in report":
        payload = body(project_id="shop", source="ci")
    elif case == "over limits":
        payload = body(title="x" * 5000)
    elif case == "routine noise":
        payload = body(event="ci.job.heartbeat")
    elif case == "too large":
        payload = body(detail="y" * 300_000)

    if case == "not json":
        response = httpx2.post(f"{url}{INTAKE}", content=b"title=oops", headers={"x-incident-monitor-intake-key": key})
    elif case == "json list":
        response = httpx2.post(f"{url}{INTAKE}", json=[body()], headers={"x-incident-monitor-intake-key": key})
    else:
        response = post(url, send_key, payload)

    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] == code
    assert error["message"]
    assert key not in response.text
    if send_key:
        assert send_key not in response.text
    # Nothing from the report is stored; a refused key can only raise the monitor's own
    # self-monitoring incident about the refusal (never the reported content).
    reported = [i for i in incidents(monitor) if i.reported_by != "system:self-monitor"]
    assert reported == []
    if case in ("other project", "other source"):
        [refusal] = [i for i in incidents(monitor) if i.reported_by == "system:self-monitor"]
        assert refusal.fingerprint.startswith("selfmon:blocked_call:report_incident:intake-key:")
    if case == "no key":
        assert "intake-keys create" in error["message"]
    if case in ("missing title", "extra field", "project in report"):
        # An unknown key is named "<key>": the caller chose its name, and errors never repeat what was sent.
        field = {"missing title": "report.title", "extra field": "- <key>:", "project in report": "report.<key>"}[case]
        assert field in error["message"]
    if case in ("extra field", "project in report"):
        assert "unknown key" in error["message"]
        assert "admin" not in error["message"]


def test_intake_keys_are_rate_limited_per_key(monitor: Monitor, url: str) -> None:
    limited, other = new_key(monitor), new_key(monitor)
    titles = ["Build failed", "Lint failed", "Deploy failed", "Smoke failed", "Canary failed"]
    statuses = [post(url, limited, body(title=title)).status_code for title in titles]
    assert statuses == [201] * 5  # burst 5 (http.rate_limits.intake_key_burst)
    refused = post(url, limited, body(title="One too many"))
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert post(url, other, body(title="Another key is not limited")).status_code == 201


def test_an_intake_key_is_refused_on_every_other_route(monitor: Monitor, url: str) -> None:
    key = new_key(monitor)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ci", "version": "1"}},
    }
    mcp = httpx2.post(f"{url}/mcp", json=initialize, headers=headers)
    sse = httpx2.get(f"{url}/sse", headers=headers)
    messages = httpx2.post(f"{url}/messages/?session_id=0123", json=initialize, headers=headers)
    for response in (mcp, sse, messages):
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert "intake keys can only report" in response.json()["error_description"]
    # The intake endpoint takes only POST.
    assert httpx2.get(f"{url}{INTAKE}", headers=headers).status_code == 405


def _keys(monitor: Monitor) -> list[IntakeKey]:
    with monitor.session() as session:
        return list(session.exec(select(IntakeKey)).all())


def test_keys_are_stored_hashed_and_listed_without_secrets(monitor: Monitor) -> None:
    created = intake_keys.create_intake_key(monitor, local_operator(), project_id="shop", source_id="ci")
    assert created.secret.startswith("imk_")
    [row] = _keys(monitor)
    assert row.key_hash != created.secret and created.secret not in row.key_hash
    assert row.scopes == ["incident_monitor:report"]
    [view] = intake_keys.list_intake_keys(monitor, local_operator())
    assert "key_hash" not in view.model_dump() and created.secret not in view.model_dump_json()
    assert (view.project_id, view.source_id, view.status) == ("shop", "ci", "active")


@pytest.mark.parametrize(
    ("project", "source", "expected"),
    [("nope", None, "project: unknown project 'nope'"), ("shop", "laptop", "source: 'laptop' is not a source")],
)
def test_a_key_is_bound_only_to_configured_projects_and_sources(
    monitor: Monitor, project: str, source: str | None, expected: str
) -> None:
    from incident_monitor.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        intake_keys.create_intake_key(monitor, local_operator(), project_id=project, source_id=source)
    assert expected in refused.value.message
    assert _keys(monitor) == []


def test_only_admins_manage_intake_keys(monitor: Monitor) -> None:
    from incident_monitor.errors import PermissionDenied

    with pytest.raises(PermissionDenied) as refused:
        intake_keys.create_intake_key(monitor, LOCAL_AGENT, project_id="shop")
    assert "incident_monitor:admin" in refused.value.message


def test_a_key_disabled_after_use_is_refused_on_its_next_request(monitor: Monitor, url: str) -> None:
    """Authentication reads the key on every request (no cache): disabling takes effect at once."""
    key = new_key(monitor)
    assert post(url, key, body(title="Before the key was disabled")).status_code == 201
    intake_keys.disable_intake_key(monitor, local_operator(), _keys(monitor)[0].key_id)
    refused = post(url, key, body(title="After the key was disabled"))
    assert refused.status_code == 401 and refused.json()["error"] == "key_invalid"
    assert "disabled" in refused.json()["message"]
    assert [i.title for i in incidents(monitor)] == ["Before the key was disabled"]


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"project_id": "shop"}'])
def test_a_bad_key_is_refused_before_the_body_is_judged(monitor: Monitor, url: str, payload: bytes) -> None:
    """The body is parsed before the key is checked, but the key's refusal is what a caller hears first."""
    headers = {"x-incident-monitor-intake-key": "imk_" + "B" * 43}
    response = httpx2.post(f"{url}{INTAKE}", content=payload, headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "key_invalid"


def test_the_key_check_and_the_report_share_one_worker_thread_hop(
    monitor: Monitor, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop to a worker thread wakes a thread and hands the GIL over: a report takes one, key check included,
    on the endpoint's own threads (never the event loop's, never the pool the MCP tools share)."""
    key = new_key(monitor)
    hops: list[str] = []
    checked_in: list[str] = []
    reported_in: list[str] = []
    submit = ThreadPoolExecutor.submit
    authenticate = intake_endpoint.authenticate_intake_key
    report = intake_endpoint.report_for_project

    def counting_submit(executor: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        work = args[0] if args else fn  # a function run in a copied context comes as Context.run's first argument
        if isinstance(getattr(work, "__self__", None), intake_endpoint.IntakeEndpoint):
            hops.append(work.__name__)
        return submit(executor, fn, *args, **kwargs)

    def checking(*args: Any) -> Any:
        checked_in.append(threading.current_thread().name)
        return authenticate(*args)

    def reporting(*args: Any) -> Any:
        reported_in.append(threading.current_thread().name)
        return report(*args)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", counting_submit)
    monkeypatch.setattr(intake_endpoint, "authenticate_intake_key", checking)
    monkeypatch.setattr(intake_endpoint, "report_for_project", reporting)
    assert post(url, key, body(title="One hop")).status_code == 201
    assert len(hops) == 1
    assert checked_in == reported_in and checked_in[0].startswith("intake-worker")
    # A refused key takes its one hop too, and the body is never judged.
    assert post(url, "imk_" + "C" * 43, body(title="Refused")).status_code == 401
    assert len(hops) == 2 and len(reported_in) == 1


def test_the_endpoint_releases_its_threads_and_kept_connections_when_the_server_stops(monitor: Monitor) -> None:
    key = new_key(monitor)
    checked_out = monitor.engine.pool.checkedout()  # type: ignore[attr-defined]
    with http_server(monitor) as base:
        assert post(base, key, body(title="Before the stop")).status_code == 201
        assert any(t.name.startswith("intake-worker") for t in threading.enumerate())
    assert not any(t.name.startswith("intake-worker") for t in threading.enumerate())
    assert monitor.engine.pool.checkedout() <= checked_out  # type: ignore[attr-defined]


def test_a_key_is_checked_without_waiting_for_the_write_lock(monitor: Monitor) -> None:
    """Authentication is a plain read: it answers while another unit of work holds the write lock
    (only the first use in a minute writes ``last_used_at``)."""
    key = new_key(monitor)
    intake_keys.authenticate_intake_key(monitor, key)  # the first use: recorded
    assert _keys(monitor)[0].last_used_at is not None
    checked = call_while_a_writer_holds_the_lock(monitor, lambda: intake_keys.authenticate_intake_key(monitor, key))
    assert checked.project_id == "shop"
