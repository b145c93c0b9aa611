"""Optional JWT bearer tokens: issuer, audience, expiry and signature checked against a JWKS
(from a file or a URL); claims map to a principal ``jwt:<sub>`` and its ``incident_monitor:*`` scopes."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import MonitorFactory, flow_config
from http_helpers import http_client, http_server
from incident_monitor.config import JwtSettings
from incident_monitor.errors import ConfigError
from incident_monitor.policy.principal import local_operator
from incident_monitor.server.jwt_verifier import JwtVerifier
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from mcp_helpers import call_ok, call_refused

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.com/"
AUDIENCE = "https://monitor.example.com/mcp"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}


def sign(key: Any = KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 600, "iat": now}
    claims["scope"] = "openid incident_monitor:read report"
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks()))
    return path


@pytest.fixture
def monitor(make_monitor: MonitorFactory, jwks_file: Path, webhook_secret: str) -> Monitor:
    jwt_settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks_file)}
    return make_monitor(flow_config(http={"jwt": jwt_settings}))


async def test_a_valid_jwt_is_a_principal_with_the_scopes_its_claims_grant(monitor: Monitor) -> None:
    with http_server(monitor) as url:
        async with http_client(url, sign()) as client:
            status = await call_ok(client, "get_status")
            listed = {t.name for t in (await client.list_tools()).tools}
            refusal = await call_refused(client, "triage_draft", draft_id="drf_x")
    assert status["caller"]["principal"] == "jwt:alice"
    assert sorted(status["caller"]["scopes"]) == ["incident_monitor:read", "incident_monitor:report"]  # openid ignored
    assert "report_incident" in listed and "triage_draft" not in listed
    assert refusal.startswith("insufficient_scope:") and "incident_monitor:triage" in refusal


async def test_monitor_tokens_keep_working_beside_jwts(monitor: Monitor) -> None:
    secret = tokens.create_token(monitor, local_operator(), name="ci-agent", scopes=["read"]).secret
    with http_server(monitor) as url:
        async with http_client(url, secret) as client:
            assert (await call_ok(client, "get_status"))["caller"]["principal"] == "ci-agent"


@pytest.mark.parametrize(
    ("case", "token_kwargs", "expected"),
    [
        ("expired", {"exp": int(time.time()) - 60}, "Signature has expired"),
        ("wrong audience", {"aud": "https://other.example.com"}, "Audience doesn't match"),
        ("wrong issuer", {"iss": "https://evil.example.com/"}, "Invalid issuer"),
        ("no subject", {"sub": None}, 'missing the "sub" claim'),
        ("other key", {"key": OTHER_KEY}, "Signature verification failed"),
    ],
)
def test_a_bad_jwt_is_refused_with_401_saying_why(
    monitor: Monitor, case: str, token_kwargs: dict[str, Any], expected: str
) -> None:
    token = sign(**token_kwargs)
    with http_server(monitor) as url:
        response = httpx.post(f"{url}/mcp", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert expected in response.json()["error_description"]
    assert token not in response.text


def test_the_jwks_can_come_from_a_url(jwks_file: Path) -> None:
    document = jwks_file.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        verifier = JwtVerifier(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url))
        assert verifier.principal(sign()).name == "jwt:alice"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "set exactly one of jwks_file or jwks_url"),
        ({"jwks_url": "http://idp.example.com/jwks"}, "jwks_url: use an https:// URL"),
    ],
)
def test_jwt_settings_are_validated(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, **settings)


def test_an_unreadable_jwks_file_stops_startup(tmp_path: Path) -> None:
    broken = tmp_path / "jwks.json"
    broken.write_text("not json")
    with pytest.raises(ConfigError, match=r"http\.jwt\.jwks_file"):
        JwtVerifier(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=broken))
