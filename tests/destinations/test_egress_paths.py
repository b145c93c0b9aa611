"""Every outbound path goes through the egress guard: webhook, GitHub, Linear, an MCP tool over Streamable HTTP
and the JWKS fetch each refuse a host name that resolves to a loopback or a cloud metadata address.

Host names, not IP literals: a literal is already refused by readiness, before any I/O. These names pass
readiness and are refused where it matters, when the connection is opened (after DNS). A local server
listens where the loopback name points, so a guard that let the connection through would show as a hit.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from incident_monitor.config import JwtSettings
from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome
from incident_monitor.destinations.registry import build_adapter
from incident_monitor.destinations.settings import GitHubConfig, LinearConfig, McpToolConfig, WebhookConfig
from incident_monitor.errors import CredentialError
from incident_monitor.server.jwt_verifier import JwtVerifier
from support.adapter_requests import make_request, permit_for

pytestmark = pytest.mark.anyio

TOKEN_VAR = "IM_TEST_EGRESS_PATH_TOKEN"
SECRET_VAR = "IM_TEST_EGRESS_PATH_WEBHOOK_SECRET"
# Fake DNS: what each test name resolves to.
NAMES = {"loopback.test": "127.0.0.1", "metadata.test": "169.254.169.254"}
REFUSALS = {"loopback.test": "loopback address", "metadata.test": "cloud metadata address"}


class Target:
    """Anything listening on 127.0.0.1, counting the requests that reach it."""

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = anyio.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in NAMES:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (NAMES[name], port))]
        return await real(host, port, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv(TOKEN_VAR, "token-0123456789abcdef")
    monkeypatch.setenv(SECRET_VAR, "whsec_" + base64.b64encode(os.urandom(24)).decode())


def adapters(host: str, port: int, tmp_path: Path, *, allow_private: bool) -> dict[str, DestinationAdapter]:
    base = f"http://{host}:{port}"
    common: dict[str, Any] = {"allow_insecure_http": True, "allow_private_networks": allow_private}
    configs = [
        WebhookConfig(id="webhook", url=f"{base}/hook", secret=f"env:{SECRET_VAR}", backoff_seconds=0, **common),
        GitHubConfig(id="github", repo="acme/incidents", token=f"env:{TOKEN_VAR}", api_url=base, **common),
        LinearConfig(id="linear", team_id="team", token=f"env:{TOKEN_VAR}", api_url=f"{base}/graphql", **common),
        McpToolConfig(
            id="mcp",
            server="remote",
            url=f"{base}/mcp",
            tool="t",
            allowed_tools=["t"],
            timeout_seconds=10,
            **common,
        ),
    ]
    return {c.id: build_adapter(c, tmp_path) for c in configs}


async def publish(adapter: DestinationAdapter) -> PublishOutcome:
    request = make_request(destination_id=adapter.id)
    return await adapter.publish(request, permit_for(request))


@pytest.mark.parametrize("kind", ["webhook", "github", "linear", "mcp"])
@pytest.mark.parametrize("host", ["loopback.test", "metadata.test"])
async def test_every_destination_refuses_a_name_resolving_to_loopback_or_metadata(
    kind: str, host: str, target: Target, tmp_path: Path
) -> None:
    adapter = adapters(host, target.port, tmp_path, allow_private=False)[kind]
    assert adapter.readiness().ready  # nothing to see before DNS: the guard at connect time is what refuses
    outcome = await publish(adapter)
    assert outcome.status == "failed"
    assert outcome.error is not None and "refused by egress rules" in outcome.error, outcome.error
    assert REFUSALS[host] in outcome.error
    assert target.hits == 0


@pytest.mark.parametrize("kind", ["webhook", "github", "linear", "mcp"])
async def test_metadata_stays_refused_when_private_networks_are_allowed(
    kind: str, target: Target, tmp_path: Path
) -> None:
    outcome = await publish(adapters("metadata.test", target.port, tmp_path, allow_private=True)[kind])
    assert outcome.error is not None and "cloud metadata address" in outcome.error
    assert target.hits == 0


async def test_allow_private_networks_lets_a_loopback_receiver_through(target: Target, tmp_path: Path) -> None:
    """The control: the same name with the allowance connects (so the refusals above are the guard's doing)."""
    outcome = await publish(adapters("loopback.test", target.port, tmp_path, allow_private=True)["webhook"])
    assert outcome.status == "published", outcome.error
    assert target.hits == 1


@pytest.mark.parametrize("host", ["loopback.test", "metadata.test"])
async def test_the_jwks_fetch_refuses_a_name_resolving_to_loopback_or_metadata(host: str, target: Target) -> None:
    settings = JwtSettings(issuer="https://idp/", audience="aud", jwks_url=f"https://{host}:{target.port}/jwks")
    verifier = JwtVerifier(settings)
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2ln"  # header names kid k1
    with pytest.raises(CredentialError, match=f"refused by egress rules: .*{REFUSALS[host]}"):
        await verifier.principal(token)
    assert target.hits == 0
