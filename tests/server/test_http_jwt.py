"""Optional JWT bearer tokens: issuer, audience, expiry and signature checked against a JWKS
(from a file or a URL); claims map to a principal ``jwt:<sub>`` and its ``incident_monitor:*`` scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from incident_monitor.config import JwtSettings, load_config
from incident_monitor.errors import ConfigError, CredentialError
from incident_monitor.policy.principal import local_operator
from incident_monitor.server.jwt_verifier import JWKS_MIN_REFRESH_SECONDS, JWKS_TTL_SECONDS, JwtVerifier
from incident_monitor.service import tokens
from incident_monitor.service.monitor import Monitor
from support.http_helpers import http_client, http_server
from support.mcp_helpers import call_ok, call_refused
from support.monitors import MonitorFactory, flow_config

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
        response = httpx2.post(f"{url}/mcp", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert expected in response.json()["error_description"]
    assert token not in response.text


class JwksServer:
    """A local identity provider's JWKS endpoint, counting fetches; ``document`` can be swapped (key rotation)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(jwks())
    yield server
    server.close()


def url_verifier(url: str, clock: Any = None) -> JwtVerifier:
    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, allow_private_networks=True)
    return JwtVerifier(settings) if clock is None else JwtVerifier(settings, clock=clock)


async def test_the_jwks_can_come_from_a_url_fetched_once_and_cached(jwks_server: JwksServer) -> None:
    verifier = url_verifier(jwks_server.url)
    assert (await verifier.principal(sign())).name == "jwt:alice"
    assert (await verifier.principal(sign(sub="bob"))).name == "jwt:bob"
    assert jwks_server.fetches == 1


async def test_an_unknown_kid_fetches_the_jwks_again(jwks_server: JwksServer) -> None:
    now = [1000.0]
    verifier = url_verifier(jwks_server.url, clock=lambda: now[0])
    await verifier.principal(sign())
    # The provider rotates to a new key "k2"; a token signed with it names a kid the cache lacks.
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_KEY.public_key()))
    jwks_server.document = {"keys": [{**public, "kid": "k2", "use": "sig", "alg": "RS256"}]}
    rotated = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "exp": int(time.time()) + 600},
        OTHER_KEY,
        algorithm="RS256",
        headers={"kid": "k2"},
    )
    # Within the minimum refresh interval an unknown kid does not refetch (no fetch storms)...
    with pytest.raises(CredentialError, match="no key with the token's kid"):
        await verifier.principal(rotated)
    assert jwks_server.fetches == 1
    # ...after it, the unknown kid fetches the rotated set once.
    now[0] += JWKS_MIN_REFRESH_SECONDS
    assert (await verifier.principal(rotated)).name == "jwt:carol"
    assert jwks_server.fetches == 2
    # And the cache expires on its own.
    now[0] += JWKS_TTL_SECONDS
    await verifier.principal(rotated)
    assert jwks_server.fetches == 3


async def test_a_jwks_fetch_failure_rejects_the_token_without_echoing_it() -> None:
    verifier = url_verifier("http://127.0.0.1:9/jwks.json")
    token = sign()
    with pytest.raises(CredentialError, match="JWKS fetch failed") as caught:
        await verifier.principal(token)
    assert token not in caught.value.message


def test_a_loopback_jwks_url_needs_allow_private_networks() -> None:
    with pytest.raises(ValueError, match="allow_private_networks = true"):
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://127.0.0.1:8080/jwks.json")


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


@pytest.mark.parametrize(
    "algorithms",
    [["RS256", "HS256"], ["HS512", "ES256"], ["EdDSA", "HS384"], ["PS256", "hs256"]],
)
def test_mixing_symmetric_and_asymmetric_algorithms_is_refused_at_load(tmp_path: Path, algorithms: list[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[http.jwt]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\njwks_file = "jwks.json"\n'
        f"algorithms = {json.dumps(algorithms)}\n"
    )
    with pytest.raises(ConfigError, match=r"http\.jwt: algorithms: do not mix symmetric") as caught:
        load_config(config)
    assert "list only the asymmetric ones" in caught.value.message


@pytest.mark.parametrize("algorithms", [["none"], ["RS256", "none"], []])
def test_unsigned_or_empty_algorithm_lists_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="algorithms: "):
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=Path("jwks.json"), algorithms=algorithms)


def test_one_family_of_algorithms_is_accepted() -> None:
    for algorithms in (["RS256", "ES256", "PS256", "EdDSA"], ["HS256", "HS512"]):
        assert JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=Path("j"), algorithms=algorithms).algorithms


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "incident_monitor:read"} | (
        overrides
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: Any, claims: Any = None, signature: bytes = b"sig") -> str:
    payload = json.dumps(_claims() if claims is None else claims).encode()
    return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}.{_b64(signature)}"


PUBLIC_PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with(secret: bytes, kid: str = "k1") -> str:
    """A token "signed" with HS256 using ``secret`` as the HMAC key (PyJWT refuses to make one from a PEM)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


ATTACKS: dict[str, str] = {
    "alg none": jwt.encode(_claims(), None, algorithm="none"),
    "alg none, kid k1": jwt.encode(_claims(), None, algorithm="none", headers={"kid": "k1"}),
    "alg NONE forged": _forged({"alg": "NONE", "kid": "k1"}, signature=b""),
    "key confusion: HS256 with the public PEM": _hs256_with(PUBLIC_PEM),
    "key confusion: HS256 with the JWK n": _hs256_with(jwks()["keys"][0]["n"].encode()),
    "wrong kid": jwt.encode(_claims(), KEY, algorithm="RS256", headers={"kid": "sk_live_kidcanary0123456789"}),
    "kid not a string": _forged({"alg": "RS256", "kid": {"$ne": 1}}),
    "right kid, other key": jwt.encode(_claims(), OTHER_KEY, algorithm="RS256", headers={"kid": "k1"}),
    "garbage": "garbage",
    "three dots": "a.b.c",
    "empty parts": "..",
    "header a JSON list": _forged(["RS256"]),
    "header not JSON": f"{_b64(b'{nope')}.{_b64(b'{}')}.{_b64(b'x')}",
    "claims a JSON list": _forged({"alg": "RS256", "kid": "k1"}, claims=[1, 2]),
    "not base64": "@@@.@@@.@@@",
    "huge": "eyJ" + "A" * 20_000,
    "unicode": "ünïcödé.☃.💥",
    "tabs and spaces inside": "a\tb.c d.e",
    "sub an object": jwt.encode(_claims(sub={"x": 1}), OTHER_KEY, algorithm="RS256", headers={"kid": "k1"}),
}


@pytest.mark.parametrize("algorithms", [["RS256"], ["HS256"]])
def test_forged_and_malformed_jwts_are_401_with_a_challenge_never_500(
    make_monitor: MonitorFactory, jwks_file: Path, webhook_secret: str, algorithms: list[str]
) -> None:
    # ["HS256"] with an RSA JWKS is a legal (one-family) config; a public key then cannot be an HMAC secret,
    # which PyJWT reports as a TypeError: it must still be a plain 401.
    jwt_settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks_file), "algorithms": algorithms}
    monitor = make_monitor(flow_config(http={"jwt": jwt_settings}))
    statuses: dict[str, int] = {}
    with http_server(monitor) as url, httpx2.Client(timeout=30) as client:
        for case, token in ATTACKS.items():
            bearer_header = f"Bearer {token}".encode()  # raw bytes: the non-ASCII cases too
            response = client.post(f"{url}/mcp", json={}, headers={"Authorization": bearer_header})
            statuses[case] = response.status_code
            assert "www-authenticate" in response.headers, case
            assert 'error="invalid_token"' in response.headers["www-authenticate"], case
            assert token not in response.text and "kidcanary" not in response.text, case
        # The connection survived every refusal: a valid credential still works on it.
        valid = tokens.create_token(monitor, local_operator(), name="after-attacks", scopes=["read"]).secret
        assert client.post(f"{url}/mcp", json={}, headers={"Authorization": f"Bearer {valid}"}).status_code != 401
    assert {case: s for case, s in statuses.items() if s != 401} == {}


async def test_key_confusion_is_a_credential_error_not_a_type_error(jwks_file: Path) -> None:
    verifier = JwtVerifier(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file, algorithms=["HS256"]))
    with pytest.raises(CredentialError, match="cannot be verified with the configured keys"):
        await verifier.principal(_hs256_with(PUBLIC_PEM))
