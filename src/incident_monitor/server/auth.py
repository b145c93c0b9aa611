"""Bearer authentication on the MCP routes (Streamable HTTP and SSE).

Every request carries ``Authorization: Bearer <credential>``: a monitor token (``imt_…``, hashed,
expiring, revocable — service/tokens.py) or, when configured, a JWT from an identity provider.
Without one, or with a bad one, the answer is 401 with ``WWW-Authenticate`` pointing at the
protected-resource metadata (RFC 9728). Intake keys (``imk_…``) are refused here: they may only
report on the intake endpoint. Per-tool scopes are enforced by the ScopeGate for every transport;
the principal it sees is resolved from the request's credential by ``principal_resolver``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import anyio
from mcp.server.auth.middleware.auth_context import auth_context_var, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from incident_monitor.errors import CredentialError
from incident_monitor.policy.principal import LOCAL_AGENT, Principal
from incident_monitor.policy.scopes import ALL_SCOPES
from incident_monitor.server.asgi_json import send_json
from incident_monitor.server.jwt_verifier import JwtVerifier
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.service.intake_keys import looks_like_intake_key
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import TOKEN_PREFIX, authenticate_token, kept_token_reads

INTAKE_PATH = "/incident-monitor/intake/report"

logger = logging.getLogger(__name__)


class BearerAuthenticator:
    """Credential → access token, for monitor tokens and (optionally) JWTs: the SDK's async ``TokenVerifier``.

    Never blocks the event loop: a monitor token is looked up (and its ``last_used_at`` written) in a worker
    thread; a JWT's JWKS is fetched asynchronously.
    """

    def __init__(self, monitor: Monitor, jwt_verifier: JwtVerifier | None = None) -> None:
        self.monitor = monitor
        self.jwt_verifier = jwt_verifier
        self._token_reads = kept_token_reads(monitor)

    async def authenticate(self, credential: str) -> AccessToken:
        """The access token a credential stands for; CredentialError (saying why, never the credential) if none."""
        if looks_like_intake_key(credential):
            raise CredentialError(
                f"intake keys can only report, on POST {INTAKE_PATH}; use an agent or operator token here"
            )
        if self.jwt_verifier is not None and not credential.startswith(TOKEN_PREFIX):
            principal = await self.jwt_verifier.principal(credential)
        else:
            principal = await anyio.to_thread.run_sync(authenticate_token, self.monitor, credential, self._token_reads)
        return AccessToken(
            token=credential,
            client_id=principal.name,
            scopes=sorted(principal.scopes),
            subject=principal.name,
            claims={"principal_kind": principal.kind, "token_id": principal.token_id},
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """``mcp.server.auth.provider.TokenVerifier``: the access token, or None for any refused credential."""
        try:
            return await self.authenticate(token)
        except CredentialError:
            return None


def bearer_credential(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = bytes(value).decode("latin-1")
            if text[:7].lower() == "bearer " and text[7:].strip():
                return text[7:].strip()
    return None


def _quoted(text: str) -> str:
    """Safe inside a quoted header parameter: no quotes, backslashes, control or non-ASCII characters."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "'" if c == '"' else "?" for c in text)


def _challenge(error: str | None, description: str, metadata_url: str) -> str:
    parts = [f'error="{error}"', f'error_description="{_quoted(description)}"'] if error else []
    parts.append(f'resource_metadata="{metadata_url}"')
    return "Bearer " + ", ".join(parts)


class RequireBearer:
    """ASGI guard for one MCP route: authenticate, rate-limit per principal, expose the credential to the SDK.

    With ``authenticator=None`` (``--no-auth``, loopback only) every caller is the local agent, as on stdio.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: BearerAuthenticator | None,
        limiter: RateLimiter,
        metadata_url: str,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.authenticator is None:
            if await self.limiter.refuse(f"principal:{LOCAL_AGENT.name}", send):
                return
            await self.app(scope, receive, send)
            return
        credential = bearer_credential(scope)
        if credential is None:
            await self._refuse(send, 401, None, "a bearer token is required (Authorization: Bearer imt_…)")
            return
        try:
            access = await self.authenticator.authenticate(credential)
        except CredentialError as exc:
            if looks_like_intake_key(credential):
                await self._refuse(send, 403, "insufficient_scope", exc.message)
            else:
                await self._refuse(send, 401, "invalid_token", exc.message)
            return
        except Exception as exc:  # the token store failed, not the credential: 503, never a 500
            logger.error("credential not checked: %s", type(exc).__name__)
            await send_json(
                send,
                503,
                {"error": "temporarily_unavailable", "error_description": "credentials cannot be checked now; retry"},
                headers=[(b"retry-after", b"5")],
            )
            return
        if await self.limiter.refuse(f"principal:{access.client_id}", send):
            return
        user = AuthenticatedUser(access)
        scope["user"] = user
        scope["auth"] = AuthCredentials(access.scopes)
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _refuse(self, send: Send, status: int, error: str | None, description: str) -> None:
        body = {"error": error or "invalid_request", "error_description": description}
        await send_json(
            send,
            status,
            body,
            headers=[(b"www-authenticate", _challenge(error, description, self.metadata_url).encode())],
        )


def principal_resolver(authenticated: bool) -> Callable[[], Principal]:
    """The principal of the request being handled, for the tools and the ScopeGate.

    Built from the credential RequireBearer verified for this very HTTP request (the SDK carries it
    to the handler), so a token revoked mid-session fails on the next request. Fail closed: an
    authenticated server never falls back to the local agent.
    """

    def resolve() -> Principal:
        access = get_access_token()
        if access is None:
            if not authenticated:
                return LOCAL_AGENT
            return Principal(name="unauthenticated", scopes=frozenset(), credential_problem="no credential")
        return principal_of(access)

    return resolve


def principal_of(access: AccessToken) -> Principal:
    """The principal an access token from ``BearerAuthenticator.authenticate`` stands for."""
    claims = access.claims or {}
    return Principal(
        name=access.client_id,
        scopes=frozenset(access.scopes),
        kind=str(claims.get("principal_kind") or "agent"),
        token_id=claims.get("token_id"),
    )


def protected_resource_metadata(resource: str, authorization_servers: list[str]) -> bytes:
    """RFC 9728 metadata: where the resource is, how to present a token, which scopes exist."""
    document: dict[str, object] = {
        "resource": resource,
        "bearer_methods_supported": ["header"],
        "scopes_supported": sorted(ALL_SCOPES),
        "resource_name": "Incident Monitor MCP",
    }
    if authorization_servers:
        document["authorization_servers"] = authorization_servers
    return json.dumps(document).encode()
