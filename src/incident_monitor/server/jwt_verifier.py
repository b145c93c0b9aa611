"""Optional JWT bearer tokens from an identity provider: issuer, audience and signature (JWKS) checked.

Claims map to a principal: ``jwt:<principal_claim>`` with the ``incident_monitor:*`` scopes found in
``scopes_claim`` (a space-separated string or a list; short names like ``read`` accepted). Scopes of
other services in the same token are ignored, never an error.

A ``jwks_url`` is fetched asynchronously through the egress guard (like every outbound connection), cached for
``JWKS_TTL_SECONDS`` and fetched again when a token names a key id the cached set lacks (the provider rotated its
keys) — at most once per ``JWKS_MIN_REFRESH_SECONDS``, so unknown ``kid``s cannot make us hammer the provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import jwt

from incident_monitor.config import JwtSettings
from incident_monitor.egress.rules import EgressPolicy, EgressRefused
from incident_monitor.errors import ConfigError, CredentialError
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import ALL_SCOPES

JWKS_TTL_SECONDS = 300.0
JWKS_MIN_REFRESH_SECONDS = 30.0
JWKS_TIMEOUT_SECONDS = 10.0
JWKS_MAX_BYTES = 256 * 1024


def _scopes_from(value: Any) -> frozenset[str]:
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    scopes = {str(v) if ":" in str(v) else f"incident_monitor:{v}" for v in items}
    return frozenset(scopes & ALL_SCOPES)


def jwks_policy(settings: JwtSettings) -> EgressPolicy:
    """The egress rules for the JWKS fetch: https (http only for a loopback URL, which config validation
    enforces), and private addresses only when ``allow_private_networks`` says so."""
    url = settings.jwks_url or ""
    return EgressPolicy(
        allow_insecure_http=url.startswith("http://"),
        allow_private_networks=settings.allow_private_networks,
        timeout_seconds=JWKS_TIMEOUT_SECONDS,
        max_response_bytes=JWKS_MAX_BYTES,
    )


class JwtVerifier:
    def __init__(self, settings: JwtSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()
        if settings.jwks_file is not None:
            try:
                self._keys = jwt.PyJWKSet.from_json(settings.jwks_file.read_text(encoding="utf-8"))
            except (OSError, jwt.PyJWTError, ValueError) as exc:
                raise ConfigError(f"http.jwt.jwks_file: cannot read a JWKS from {settings.jwks_file}: {exc}") from None

    async def _fetch(self) -> jwt.PyJWKSet:
        from incident_monitor.egress.transport import describe_transport_error, egress_client, send

        url = self.settings.jwks_url
        assert url is not None
        policy = jwks_policy(self.settings)
        try:
            async with egress_client(policy) as client:
                answer = await send(client, policy, "GET", url, headers={"accept": "application/json"})
        except EgressRefused as exc:
            raise jwt.PyJWKClientError(f"JWKS fetch {describe_transport_error(exc, timeout_seconds=0)}") from None
        except Exception as exc:  # any transport failure: the token cannot be checked now
            detail = describe_transport_error(exc, timeout_seconds=policy.timeout_seconds)
            raise jwt.PyJWKClientError(f"JWKS fetch failed: {detail}") from None
        if answer.status != 200:
            raise jwt.PyJWKClientError(f"JWKS fetch failed: the provider answered {answer.status}")
        try:
            return jwt.PyJWKSet.from_json(answer.body.decode("utf-8", errors="replace"))
        except (jwt.PyJWTError, ValueError) as exc:
            raise jwt.PyJWKClientError(f"JWKS fetch failed: not a JWKS ({exc})") from None

    async def _key_set(self, *, refresh: bool) -> jwt.PyJWKSet:
        """The JWKS: from the file, or the cached fetch (fetched again when stale, or on ``refresh``)."""
        if self.settings.jwks_url is None:
            assert self._keys is not None
            return self._keys
        async with self._lock:  # one fetch at a time; waiters then use its result
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            stale = self._keys is None or age is None or age >= JWKS_TTL_SECONDS
            may_refresh = refresh and (age is None or age >= JWKS_MIN_REFRESH_SECONDS)
            if stale or may_refresh:
                self._keys = await self._fetch()
                self._fetched_at = now
            assert self._keys is not None
            return self._keys

    async def _signing_key(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")

        def find(keys: jwt.PyJWKSet) -> Any:
            candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
            return candidates[0].key if candidates else None

        key = find(await self._key_set(refresh=False))
        if key is None and self.settings.jwks_url is not None:
            key = find(await self._key_set(refresh=True))  # the provider may have rotated its keys
        if key is None:
            # The kid is the caller's: not repeated.
            raise jwt.InvalidTokenError("no key with the token's kid in the configured JWKS")
        return key

    async def principal(self, token: str) -> Principal:
        """The principal a JWT stands for; CredentialError (saying what failed, never the token) otherwise."""
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                await self._signing_key(token),
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                options={"require": ["exp", "iss", "aud", s.principal_claim]},
            )
        except jwt.PyJWTError as exc:
            raise CredentialError(f"JWT rejected: {exc}") from None
        except Exception:
            # Anything else is a token PyJWT could not even check (e.g. HS256 "signed" with an RSA public
            # key raises TypeError): a refused credential (401), never a 500; its text is not the caller's.
            raise CredentialError("JWT rejected: the token cannot be verified with the configured keys") from None
        subject = str(claims[s.principal_claim])[:200]
        return Principal(name=f"jwt:{subject}", scopes=_scopes_from(claims.get(s.scopes_claim)), kind="agent")
