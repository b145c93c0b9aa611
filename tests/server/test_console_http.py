"""The console over plain HTTP (no browser): sign-in, sessions across replicas, refusals, headers, escaping."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import col, select

from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.errors import InsufficientScope
from incident_monitor.server.console.session import KEY_FILENAME, KEY_VARIABLE
from incident_monitor.service import console_queries
from incident_monitor.service.intake_keys import create_intake_key
from support.console_helpers import Served, serve
from support.http_helpers import http_server
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config, principal


@pytest.fixture
def served(make_monitor: MonitorFactory, clock: FakeClock, webhook_secret: str) -> Iterator[Served]:
    with serve(make_monitor, clock) as started:
        yield started


def signed_in(base: str, token: str) -> httpx.Client:
    """A client holding a console session cookie, signed in through the form like a browser."""
    client = httpx.Client(base_url=base, follow_redirects=False)
    form = client.get("/console/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    response = client.post("/console/login", data={"token": token, "nonce": nonce.group(1)})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/"
    return client


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def audit_rows(served: Served, action: str) -> list[AuditEvent]:
    with served.monitor.session() as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.seq))).all()
        )


def test_bearer_token_reads_pages_and_a_bad_one_is_refused_without_echo(served: Served) -> None:
    served.report("Smoke failed")
    ok = httpx.get(f"{served.base}/console/", headers={"Authorization": f"Bearer {served.operator_token}"})
    assert ok.status_code == 200
    assert 'id="principal"' in ok.text and ">ops<" in ok.text
    assert served.operator_token not in ok.text
    bad = httpx.get(f"{served.base}/console/", headers={"Authorization": "Bearer imt_wrong-secret-value"})
    assert bad.status_code == 401
    assert "token not recognised" in bad.text and "imt_wrong-secret-value" not in bad.text
    key = create_intake_key(served.monitor, OPERATOR, project_id="demo").secret
    refused = httpx.get(f"{served.base}/console/", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert "intake keys can only report" in refused.text and key not in refused.text


def test_without_a_credential_every_page_goes_to_sign_in(served: Served) -> None:
    for path in ("/console/", "/console/approvals", "/console/governance", "/console/incidents/inc_x"):
        response = httpx.get(f"{served.base}{path}", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/login?reason=required"
    live = httpx.get(f"{served.base}/console/incidents/live", headers={"HX-Request": "true"})
    assert live.status_code == 204 and live.headers["hx-redirect"] == "/console/login?reason=required"


def test_headers_forbid_inline_script_and_framing(served: Served) -> None:
    bearer = {"Authorization": f"Bearer {served.operator_token}"}
    for path in ("/console/", "/console/login", "/console/static/htmx.min.js", "/console/static/console.css"):
        response = httpx.get(f"{served.base}{path}", headers=bearer)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(f"{served.base}/console/", headers=bearer)
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None  # no inline script element
    assert " style=" not in page.text and "hx-on" not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_a_host_not_allowed_is_refused(served: Served) -> None:
    response = httpx.get(
        f"{served.base}/console/login", headers={"Host": "evil.example:80", "Authorization": "Bearer x"}
    )
    assert response.status_code == 421


def test_titles_are_escaped_in_the_html(served: Served) -> None:
    result = served.report('<img src=x onerror="alert(1)"></script>', evidence_refs=["javascript:alert(2)"])
    bearer = {"Authorization": f"Bearer {served.operator_token}"}
    for path in ("/console/", f"/console/incidents/{result.incident_id}"):
        text = httpx.get(f"{served.base}{path}", headers=bearer).text
        body = text.split("<body", 1)[1]  # the one script element (htmx, by src) is in <head>
        assert "<img src=x" not in body and "</script>" not in body
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;/script&gt;" in text
        assert 'href="javascript:' not in text


def test_session_cookie_flags_and_expiry(served: Served) -> None:
    client = signed_in(served.base, served.operator_token)
    cookie = next(c for c in client.cookies.jar if c.name == "im_console")
    assert cookie.path == "/console" and cookie.expires is not None
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "strict"
    assert served.operator_token not in str(cookie.value)
    assert client.get("/console/").status_code == 200
    served.clock.advance(hours=8, minutes=1)
    ended = client.get("/console/")
    assert ended.status_code == 303 and ended.headers["location"] == "/console/login?reason=ended"


def test_a_tampered_cookie_ends_the_session(served: Served) -> None:
    client = signed_in(served.base, served.operator_token)
    value = client.cookies["im_console"]
    tampered = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    assert httpx.get(f"{served.base}/console/", cookies={"im_console": value}).status_code == 200
    response = httpx.get(f"{served.base}/console/", cookies={"im_console": tampered}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/login?reason=ended"


def test_cookie_is_secure_behind_an_https_public_url(
    make_monitor: MonitorFactory, webhook_secret: str, tmp_path: Path
) -> None:
    from incident_monitor.service.tokens import create_token

    public = "https://monitor.example.com"
    monitor = make_monitor(flow_config(http={"public_url": public, "allowed_origins": [public]}))
    token = create_token(monitor, OPERATOR, name="ops", scopes=["read"]).secret
    with http_server(monitor) as base:
        client = httpx.Client(base_url=base)
        form = client.get("/console/login")
        assert "secure" in form.headers["set-cookie"].lower()
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce
        # httpx keeps Secure cookies for https only: send the nonce cookie by hand, as a proxy's client would.
        response = client.post(
            "/console/login",
            data={"token": token, "nonce": nonce.group(1)},
            headers={"Cookie": f"im_console_login={nonce.group(1)}", "Origin": "https://monitor.example.com"},
        )
        assert response.status_code == 303
        assert "; secure" in response.headers["set-cookie"].lower()


def test_sign_in_refusals(served: Served) -> None:
    client = httpx.Client(base_url=served.base)
    # No nonce (a login form posted from elsewhere): refused and audited.
    response = client.post("/console/login", data={"token": served.operator_token})
    assert response.status_code == 403 and "sign-in refused" in response.text
    assert served.operator_token not in response.text
    assert [r.decision.value for r in audit_rows(served, "console_sign_in")] == ["deny"]
    # A cross-site sign-in.
    form = client.get("/console/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    cross = client.post(
        "/console/login",
        data={"token": served.operator_token, "nonce": nonce.group(1)},
        headers={"Origin": "http://localhost:1"},
    )
    assert cross.status_code == 403 and "cross-site sign-in refused" in cross.text
    # A token without read.
    from incident_monitor.service.tokens import create_token

    reporter = create_token(served.monitor, OPERATOR, name="reporter", scopes=["report"]).secret
    form = client.get("/console/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    lacking = client.post("/console/login", data={"token": reporter, "nonce": nonce.group(1)})
    assert lacking.status_code == 403 and "reporter lacks incident_monitor:read" in lacking.text
    assert "im_console=" not in lacking.headers.get("set-cookie", "")


def test_sessions_work_across_replicas_sharing_the_key(
    make_monitor: MonitorFactory, webhook_secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from incident_monitor.service.tokens import create_token

    monkeypatch.setenv(KEY_VARIABLE, Fernet.generate_key().decode())
    first = make_monitor(flow_config(), data_dir=tmp_path / "shared")
    token = create_token(first, OPERATOR, name="ops", scopes=["read"]).secret
    second = make_monitor(flow_config(), data_dir=tmp_path / "shared")
    with http_server(first) as base_a, http_server(second) as base_b:
        client = signed_in(base_a, token)
        cookie = client.cookies["im_console"]
        other = httpx.get(f"{base_b}/console/", cookies={"im_console": cookie}, follow_redirects=False)
        assert other.status_code == 200 and ">ops<" in other.text
    # A replica with another key cannot read the session.
    monkeypatch.setenv(KEY_VARIABLE, Fernet.generate_key().decode())
    third = make_monitor(flow_config(), data_dir=tmp_path / "shared")
    with http_server(third) as base_c:
        stranger = httpx.get(f"{base_c}/console/", cookies={"im_console": cookie}, follow_redirects=False)
        assert stranger.headers["location"] == "/console/login?reason=ended"


def test_without_a_configured_key_one_is_created_private_in_the_data_dir(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    path = served.monitor.data_dir / KEY_FILENAME
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    Fernet(path.read_bytes().strip())  # a valid key


def test_a_bad_configured_key_names_the_variable(
    make_monitor: MonitorFactory, webhook_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from incident_monitor.errors import ConfigError
    from incident_monitor.server.http_app import HttpOptions, build_http_app

    monkeypatch.setenv(KEY_VARIABLE, "not-a-key")
    monitor = make_monitor(flow_config())
    with pytest.raises(ConfigError, match=KEY_VARIABLE):
        build_http_app(monitor, HttpOptions())


def test_cookie_posts_need_the_csrf_token_and_bearer_posts_do_not(served: Served) -> None:
    incident = served.report("Needs resolving").incident_id
    client = signed_in(served.base, served.operator_token)
    page = client.get(f"/console/incidents/{incident}")
    forged = client.post(f"/console/incidents/{incident}/resolve", data={"resolution_note": "done"})
    assert forged.status_code == 403 and "CSRF token is missing or wrong" in forged.text
    wrong = client.post(
        f"/console/incidents/{incident}/resolve", data={"resolution_note": "done", "csrf_token": "0" * 64}
    )
    assert wrong.status_code == 403
    assert [r.decision.value for r in audit_rows(served, "resolve_incident")] == ["deny", "deny"]
    ok = client.post(
        f"/console/incidents/{incident}/resolve", data={"resolution_note": "done", "csrf_token": csrf_of(page)}
    )
    assert ok.status_code == 303
    # A script with a bearer token carries no cookie, so there is nothing to forge: no CSRF token needed.
    other = served.report("Another one").incident_id
    scripted = httpx.post(
        f"{served.base}/console/incidents/{other}/resolve",
        data={"resolution_note": "scripted"},
        headers={"Authorization": f"Bearer {served.operator_token}"},
    )
    assert scripted.status_code == 303
    with served.monitor.session() as session:
        row = session.get(Incident, other)
        assert row is not None and row.resolution_note == "scripted"


def test_service_refusals_show_the_services_message(served: Served) -> None:
    bearer = {"Authorization": f"Bearer {served.operator_token}"}
    malformed = httpx.get(f"{served.base}/console/incidents/inc_nope", headers=bearer)
    assert malformed.status_code == 400 and "incident_id" in malformed.text and "inc_nope" not in malformed.text
    missing = httpx.get(f"{served.base}/console/incidents/inc_0123456789abcdef", headers=bearer)
    assert missing.status_code == 404 and "list_incidents" in missing.text  # a well-formed id may be named
    bad_filter = httpx.get(f"{served.base}/console/?severity=urgent", headers=bearer)
    assert bad_filter.status_code == 400 and "severity" in bad_filter.text
    bad_sort = httpx.get(f"{served.base}/console/?sort=random", headers=bearer)
    assert bad_sort.status_code == 400 and "sort:" in bad_sort.text
    too_long = httpx.post(
        f"{served.base}/console/escalate", data={"title": "x" * 301, "level": "error"}, headers=bearer
    )
    assert too_long.status_code == 400 and "title: 301 characters, limit 300" in too_long.text
    incident = served.report("Resolve me twice").incident_id
    for expected in (303, 409):
        response = httpx.post(
            f"{served.base}/console/incidents/{incident}/resolve", data={"resolution_note": "x"}, headers=bearer
        )
        assert response.status_code == expected
    viewer = {"Authorization": f"Bearer {served.viewer_token}"}
    refused = httpx.post(f"{served.base}/console/escalate", data={"title": "nope"}, headers=viewer)
    assert refused.status_code == 403 and "incident_monitor:report" in refused.text


def test_no_auth_console_is_read_only(make_monitor: MonitorFactory, webhook_secret: str) -> None:
    monitor = make_monitor(flow_config())
    with http_server(monitor, no_auth=True) as base:
        page = httpx.get(f"{base}/console/")
        assert page.status_code == 200 and "local-agent" in page.text and "read-only" in page.text
        refused = httpx.post(f"{base}/console/escalate", data={"title": "from anywhere"})
        assert refused.status_code == 403 and "read-only" in refused.text
    with monitor.session() as session:
        incidents = session.exec(select(Incident)).all()
    # Nothing was escalated; the refusal itself is a blocked action, recorded by self-monitoring.
    assert [(i.reported_by, i.context.get("kind")) for i in incidents] == [("system:self-monitor", "blocked_call")]


def test_console_reads_are_governed_reads(served: Served) -> None:
    nobody = principal("nobody", "report")
    with pytest.raises(InsufficientScope, match=r"list_incidents needs scope incident_monitor:read"):
        console_queries.list_incident_view(served.monitor, nobody, console_queries.IncidentFilters())
    with pytest.raises(InsufficientScope):
        console_queries.get_incident_view(served.monitor, nobody, "inc_x")
    with pytest.raises(InsufficientScope):
        console_queries.list_pending_approvals(served.monitor, nobody)
    denials = [r for r in audit_rows(served, "list_incidents") if r.principal == "nobody"]
    assert [r.decision.value for r in denials] == ["deny"]
    view = console_queries.list_incident_view(served.monitor, AGENT, console_queries.IncidentFilters(text="100%_"))
    assert view.total == 0  # % and _ are matched literally


def test_a_jwt_signs_in_too(make_monitor: MonitorFactory, webhook_secret: str, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    issuer, audience = "https://idp.example.com/", "https://monitor.example.com/mcp"
    monitor = make_monitor(flow_config(http={"jwt": {"issuer": issuer, "audience": audience, "jwks_file": str(jwks)}}))
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "sub": "alice", "exp": now + 600, "scope": "incident_monitor:read"}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    with http_server(monitor) as base:
        client = signed_in(base, token)
        page = client.get("/console/")
        assert page.status_code == 200 and ">jwt:alice<" in page.text
        assert token not in page.text


def test_a_cross_site_post_refused_before_the_console_is_still_audited(served: Served) -> None:
    """A foreign Origin never reaches the console (the app-wide guard answers 403): the refusal is recorded
    all the same, without the Origin the attacker chose, and a cross-site GET is refused unrecorded."""
    client = signed_in(served.base, served.operator_token)
    page = client.get("/console/approvals")
    evil = "https://attacker.example"
    posted = client.post(
        "/console/approvals/apr_0123456789abcdef/decide",
        data={"decision": "approve", "note": "x", "csrf_token": csrf_of(page)},
        headers={"Origin": evil},
    )
    assert posted.status_code == 403 and "origin_not_allowed" in posted.text
    rows = audit_rows(served, "console_request")
    assert [(r.principal, r.decision.value) for r in rows] == [("unauthenticated", "deny")]
    assert rows[0].reasons == ["cross-site request refused: its Origin is not allowed"]
    assert evil not in json.dumps([r.model_dump(mode="json") for r in rows])
    assert client.get("/console/", headers={"Origin": evil}).status_code == 403
    assert len(audit_rows(served, "console_request")) == 1
