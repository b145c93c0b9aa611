"""The intake endpoint under attack, over a real socket: the key is checked before the body is parsed,
refused keys are rate-limited per client address, bodies are parsed within limits (depth 32, keys,
string sizes, valid Unicode), every refusal is a JSON error that repeats nothing sent, and a
keep-alive connection stays usable after any bad request. Host/Origin checks cover every route."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from incident_monitor.policy.principal import local_operator
from incident_monitor.server.json_limits import MAX_DEPTH, MAX_KEYS, MAX_STRING_CHARS, nesting_depth
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.service import intake_keys
from incident_monitor.service.monitor import Monitor
from support.http_helpers import http_server
from support.intake import INTAKE, PROJECTS, body, incidents
from support.monitors import MonitorFactory, flow_config

CANARY = "sk_live_" + "Zq9" * 10  # a secret-looking value: it must never come back in an answer
KEY_HEADER = "x-incident-monitor-intake-key"


@pytest.fixture
def monitor(make_monitor: MonitorFactory, webhook_secret: str) -> Monitor:
    limits = {"intake_key_burst": 1000, "intake_key_per_minute": 1000, "unauthenticated_burst": 1000}
    return make_monitor(
        flow_config(projects=PROJECTS, http={"rate_limits": limits, "max_intake_body_bytes": 1_000_000})
    )


@pytest.fixture
def url(monitor: Monitor) -> Iterator[str]:
    with http_server(monitor) as base:
        yield base


@pytest.fixture
def key(monitor: Monitor) -> str:
    return intake_keys.create_intake_key(monitor, local_operator(), project_id="shop").secret


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


def deep_object(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


def send_raw(url: str, raw: bytes, key: str | None, *, client: httpx2.Client | None = None) -> httpx2.Response:
    headers = {"content-type": "application/json", **({KEY_HEADER: key} if key else {})}
    if client is not None:
        return client.post(f"{url}{INTAKE}", content=raw, headers=headers)
    return httpx2.post(f"{url}{INTAKE}", content=raw, headers=headers, timeout=30)


# --- the key first ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
@pytest.mark.parametrize("sent_key", ["none", "made up", "agent token"])
def test_without_a_valid_key_a_deep_body_is_a_401_and_never_parsed(url: str, depth: int, sent_key: str) -> None:
    secret = {"none": None, "made up": "imk_" + "A" * 43, "agent token": "imt_" + "B" * 43}[sent_key]
    response = send_raw(url, nested(depth), secret)
    assert response.status_code == 401, response.text
    assert response.json()["error"] in ("key_required", "key_invalid")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 5_000, 100_000])
def test_with_a_valid_key_a_body_nested_over_32_is_a_400(url: str, key: str, monitor: Monitor, depth: int) -> None:
    for raw in (nested(depth), nested(depth, "{", "}"), deep_object(depth), b'{"report":' + nested(depth) + b"}"):
        response = send_raw(url, raw, key)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "body_invalid",
            "message": "the body nests deeper than 32 levels; send a flatter object",
        }
    assert incidents(monitor) == []


def test_nesting_up_to_the_limit_is_parsed_and_judged_by_the_schema(url: str, key: str) -> None:
    payload = body()
    context: Any = "leaf"
    for _ in range(MAX_DEPTH - 3):  # body → report → context → ... stays within 32 levels
        context = {"d": context}
    payload["report"]["context"] = {"d": context}
    raw = json.dumps(payload).encode()
    assert nesting_depth(raw) == MAX_DEPTH
    assert send_raw(url, raw, key).status_code == 201


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert nesting_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": "\\"[[[["}') == 1
    assert nesting_depth(b'"unterminated [[[[[[[[') == 0
    assert nesting_depth(b"") == 0


# --- limits ---------------------------------------------------------------------------------------------


def _with_context(context: Any) -> bytes:
    payload = body()
    payload["report"]["context"] = context
    return json.dumps(payload).encode()


LIMIT_CASES: dict[str, tuple[bytes, int, str, str]] = {
    "too many keys": (
        _with_context({f"{CANARY}{i}": i for i in range(MAX_KEYS + 1)}),
        400,
        "body_invalid",
        f"over {MAX_KEYS} object keys",
    ),
    "a string too long": (
        _with_context({"blob": CANARY + "x" * MAX_STRING_CHARS}),
        400,
        "body_invalid",
        f"over {MAX_STRING_CHARS} characters",
    ),
    "a key too long": (_with_context({CANARY * 3000: 1}), 400, "body_invalid", "a key is over"),
    "a string in an array too long": (
        _with_context({"list": [[CANARY + "y" * MAX_STRING_CHARS]]}),
        400,
        "body_invalid",
        "a string is over",
    ),
    "a lone surrogate in a value": (
        _with_context({"note": CANARY}).replace(CANARY.encode(), CANARY.encode() + b"\\ud800"),
        400,
        "body_invalid",
        "lone surrogate",
    ),
    "a lone surrogate in the title": (
        json.dumps(body(title=CANARY + "\udfff")).encode(),
        400,
        "body_invalid",
        "lone surrogate",
    ),
    "a lone surrogate in a key": (
        b'{"project_id":"shop","source_id":"ci","report":{"title":"t","event":"e","level":"error",'
        b'"context":{"\\udbff' + CANARY.encode() + b'":1}}}',
        400,
        "body_invalid",
        "lone surrogate",
    ),
    "a surrogate as raw UTF-8 bytes": (
        json.dumps(body(title=CANARY)).encode().replace(CANARY.encode(), CANARY.encode() + b"\xed\xa0\x80"),
        400,
        "body_invalid",
        "not UTF-8",
    ),
    "latin-1 bytes": (b'{"project_id": "caf\xe9"}', 400, "body_invalid", "not UTF-8"),
    "NaN": (_with_context({"n": float("nan")}), 400, "body_invalid", "numbers must be finite"),
    "1e999": (_with_context({"n": 1}).replace(b'"n": 1', b'"n": 1e999'), 400, "body_invalid", "finite"),
    "an integer of 5,000 digits": (
        _with_context({"n": 1}).replace(b'"n": 1', b'"n": ' + b"9" * 5000),
        400,
        "body_invalid",
        "must be JSON",
    ),
    "not JSON": (CANARY.encode() + b"{", 400, "body_invalid", "must be JSON"),
    "empty": (b"", 400, "body_invalid", "must be JSON"),
    "a JSON string": (json.dumps(CANARY).encode(), 400, "body_invalid", "JSON object"),
    "a JSON number": (b"12", 400, "body_invalid", "JSON object"),
    "an unknown key named like a secret": (
        json.dumps({**body(), CANARY: 1}).encode(),
        422,
        "report_invalid",
        "<key>: unknown key",
    ),
    "wrong types": (
        json.dumps({"project_id": [CANARY], "source_id": {"x": CANARY}, "report": CANARY}).encode(),
        422,
        "report_invalid",
        "project_id:",
    ),
    "an unknown project named like a secret": (
        json.dumps(body(project_id=CANARY[:60])).encode(),
        422,
        "project_unknown",
        "this key reports for project 'shop'",
    ),
    "an unknown source named like a secret": (
        json.dumps(body(source_id=CANARY)).encode(),
        422,
        "source_unknown",
        "use one of: ci, canary",
    ),
}


def test_every_limit_is_a_4xx_json_error_that_repeats_nothing_sent(url: str, key: str, monitor: Monitor) -> None:
    tried, broke = 0, []
    # One keep-alive connection for every case: no refusal may cost the client its connection.
    with httpx2.Client(timeout=30) as client:
        for case, (raw, status, code, expected) in LIMIT_CASES.items():
            response = send_raw(url, raw, key, client=client)
            tried += 1
            error = response.json()
            if (response.status_code, error["error"]) != (status, code) or expected not in error["message"]:
                broke.append((case, response.status_code, error))
            if CANARY in response.text or "Zq9Zq9" in response.text:
                broke.append((case, "echoed", error))
        assert send_raw(url, json.dumps(body()).encode(), key, client=client).status_code == 201
    assert broke == [], f"{len(broke)} of {tried} broke"
    assert [i.title for i in incidents(monitor) if i.reported_by != "system:self-monitor"] == [
        "Smoke test failed on main"
    ]


def test_a_body_over_the_size_limit_is_413_and_the_next_request_still_works(url: str, key: str) -> None:
    with httpx2.Client(timeout=30) as client:
        response = send_raw(url, _with_context({"big": "z" * 1_100_000}), key, client=client)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert send_raw(url, json.dumps(body()).encode(), key, client=client).status_code == 201


def test_an_oversized_body_with_a_refused_key_is_a_401_that_closes_the_connection(url: str, key: str) -> None:
    """The key's refusal ranks first; the rest of the body is never read, so the connection is closed rather
    than drained (as for the 413 a valid key gets)."""
    oversized = _with_context({"big": "z" * 1_100_000})
    refused = send_raw(url, oversized, "imk_" + "F" * 43)
    assert refused.status_code == 401 and refused.json()["error"] == "key_invalid"
    assert refused.headers["connection"] == "close"
    too_large = send_raw(url, oversized, key)
    assert too_large.status_code == 413 and too_large.headers["connection"] == "close"


# --- keep-alive after a bad request (raw socket: one TCP connection, seen from the client) --------------


def _request(raw_body: bytes, key: str | None, port: int) -> bytes:
    head = [
        f"POST {INTAKE} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(raw_body)}",
        "Connection: keep-alive",
    ]
    if key:
        head.append(f"{KEY_HEADER}: {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw_body


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response; got {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    assert not any(line.lower() == "connection: close" for line in lines), lines
    return int(lines[0].split()[1]), rest[:length]


def test_one_keep_alive_connection_survives_every_kind_of_bad_request(url: str, key: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    bad: list[tuple[bytes, str | None, int]] = [
        (nested(5_000), key, 400),
        (nested(100_000), "imk_" + "C" * 43, 401),
        (nested(1_000), None, 401),
        (b"\xff\xfe\x00", key, 400),
        (b'{"project_id": 1}', key, 422),
        (json.dumps(body(title=CANARY + "\ud800")).encode(), key, 400),
        (b'{"a":' * 40 + b"1" + b"}" * 40, key, 400),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for raw_body, sent_key, expected in bad:
            sock.sendall(_request(raw_body, sent_key, port))
            status, answer = _read_response(sock)
            assert status == expected, answer
            assert CANARY.encode() not in answer
        sock.sendall(_request(json.dumps(body()).encode(), key, port))
        assert _read_response(sock)[0] == 201


# --- refused keys are rate-limited per client address --------------------------------------------------


def test_refused_keys_are_limited_per_address_before_any_key_is_checked(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    limits = {"unauthenticated_burst": 3, "unauthenticated_per_minute": 1}
    monitor = make_monitor(flow_config(projects=PROJECTS, http={"rate_limits": limits}))
    valid = intake_keys.create_intake_key(monitor, local_operator(), project_id="shop").secret
    with http_server(monitor) as url:
        # A valid key spends nothing: the bucket counts refusals only.
        assert send_raw(url, json.dumps(body()).encode(), valid).status_code == 201
        statuses = [send_raw(url, b"{}", k).status_code for k in (None, "imk_" + "D" * 43, "imt_x")]
        assert statuses == [401, 401, 401]
        guessed = send_raw(url, json.dumps(body()).encode(), "imk_" + "E" * 43)
        assert guessed.status_code == 429
        assert int(guessed.headers["retry-after"]) >= 1
        assert guessed.json()["error"] == "rate_limited"
        assert "http.rate_limits" in guessed.json()["message"]
        # The answer is the same for a right key: a guess cannot be confirmed while limited.
        assert send_raw(url, json.dumps(body()).encode(), valid).status_code == 429


def test_blocked_reads_the_bucket_without_spending() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.blocked("a") is None and limiter.blocked("a") is None
    assert limiter.take("a") is None and limiter.take("a") is None
    assert limiter.blocked("a") == 1
    assert limiter.blocked("b") is None  # per key
    now[0] += 1.0
    assert limiter.blocked("a") is None


def test_rate_limit_settings_for_refused_keys_are_validated() -> None:
    from incident_monitor.config import RateLimitSettings

    assert RateLimitSettings().unauthenticated_burst == 10
    with pytest.raises(ValueError, match="unauthenticated_per_minute"):
        RateLimitSettings(unauthenticated_per_minute=0)


# --- Host/Origin on every route -------------------------------------------------------------------------

ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", INTAKE),
    ("GET", "/.well-known/oauth-protected-resource"),
    ("GET", "/.well-known/oauth-protected-resource/mcp"),
    ("POST", "/mcp"),
    ("GET", "/no-such-route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_foreign_host_is_421_and_a_foreign_origin_403_on_every_route(
    url: str, key: str, method: str, path: str
) -> None:
    headers = {KEY_HEADER: key}
    with httpx2.Client(timeout=30) as client:
        foreign_host = client.request(
            method, f"{url}{path}", headers={**headers, "host": "rebound.attacker.example"}, json=body()
        )
        foreign_origin = client.request(
            method, f"{url}{path}", headers={**headers, "origin": "https://attacker.example"}, json=body()
        )
        loopback_origin = client.request(
            method, f"{url}{path}", headers={**headers, "origin": url}, json=body(title="From a local page")
        )
    assert foreign_host.status_code == 421
    assert foreign_host.json()["error"] == "host_not_allowed"
    assert "rebound.attacker.example" not in foreign_host.text
    assert foreign_origin.status_code == 403
    assert foreign_origin.json()["error"] == "origin_not_allowed"
    assert "attacker.example" not in foreign_origin.text
    assert loopback_origin.status_code not in (403, 421)


def test_configured_hosts_and_origins_are_allowed_on_the_intake_and_health_routes(
    make_monitor: MonitorFactory, webhook_secret: str
) -> None:
    http = {"allowed_hosts": ["monitor.example.com"], "allowed_origins": ["https://console.example.com"]}
    monitor = make_monitor(flow_config(projects=PROJECTS, http=http))
    with http_server(monitor) as url:
        host = httpx2.get(f"{url}/healthz", headers={"host": "monitor.example.com"})
        origin = httpx2.get(f"{url}/healthz", headers={"origin": "https://console.example.com"})
        other_port = httpx2.get(f"{url}/healthz", headers={"host": "monitor.example.com:9999"})
    assert host.status_code == 200
    assert origin.status_code == 200
    assert other_port.status_code == 421  # "host" without ":*" is that exact Host only, as on the MCP routes


# --- a failing store is a 503 that says so, never a 500 ------------------------------------------------


def test_a_store_failure_during_intake_or_token_checks_is_503_not_500(
    url: str, key: str, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from incident_monitor.server import auth, intake_endpoint

    def store_down(*_: object) -> object:
        raise OperationalError("SELECT secret FROM keys", {"p": CANARY}, Exception("disk I/O error"))

    with httpx2.Client(timeout=30) as client:
        monkeypatch.setattr(intake_endpoint, "report_for_project", store_down)
        report = send_raw(url, json.dumps(body()).encode(), key, client=client)
        monkeypatch.setattr(intake_endpoint, "authenticate_intake_key", store_down)
        lookup = send_raw(url, json.dumps(body()).encode(), key, client=client)
        monkeypatch.setattr(auth, "authenticate_token", store_down)
        mcp = client.post(f"{url}/mcp", json={}, headers={"Authorization": "Bearer imt_" + "H" * 43})
    for response in (report, lookup):
        assert response.status_code == 503
        assert response.json() == {
            "error": "unavailable",
            "message": "the monitor could not record the report; retry later",
        }
    assert mcp.status_code == 503
    assert mcp.json()["error"] == "temporarily_unavailable"
    assert all(CANARY not in r.text and "SELECT" not in r.text for r in (report, lookup, mcp))
