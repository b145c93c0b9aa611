"""Optional JWT bearer tokens from an identity provider: issuer, audience and signature (JWKS) checked.

Claims map to a principal: ``jwt:<principal_claim>`` with the ``incident_monitor:*`` scopes found in
``scopes_claim`` (a space-separated string or a list; short names like ``read`` accepted). Scopes of
other services in the same token are ignored, never an error.
"""

from __future__ import annotations

from typing import Any

import jwt

from incident_monitor.config import JwtSettings
from incident_monitor.errors import ConfigError, CredentialError
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import ALL_SCOPES


def _scopes_from(value: Any) -> frozenset[str]:
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    scopes = {str(v) if ":" in str(v) else f"incident_monitor:{v}" for v in items}
    return frozenset(scopes & ALL_SCOPES)


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._keys: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if settings.jwks_file is not None:
            try:
                self._keys = jwt.PyJWKSet.from_json(settings.jwks_file.read_text(encoding="utf-8"))
            except (OSError, jwt.PyJWTError, ValueError) as exc:
                raise ConfigError(f"http.jwt.jwks_file: cannot read a JWKS from {settings.jwks_file}: {exc}") from None
        else:
            assert settings.jwks_url is not None  # the config validator requires one of the two
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=10)

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        candidates = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise jwt.InvalidTokenError(f"no key with kid {str(kid)[:64]!r} in the configured JWKS")
        return candidates[0].key

    def principal(self, token: str) -> Principal:
        """The principal a JWT stands for; CredentialError (saying what failed, never the token) otherwise."""
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                options={"require": ["exp", "iss", "aud", s.principal_claim]},
            )
        except jwt.PyJWTError as exc:
            raise CredentialError(f"JWT rejected: {exc}") from None
        subject = str(claims[s.principal_claim])[:200]
        return Principal(name=f"jwt:{subject}", scopes=_scopes_from(claims.get(s.scopes_claim)), kind="agent")
