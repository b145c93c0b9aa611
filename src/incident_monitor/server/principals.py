"""Who the caller is on transports without per-request auth (stdio)."""

from __future__ import annotations

from collections.abc import Callable

from incident_monitor.errors import CredentialError
from incident_monitor.policy.principal import LOCAL_AGENT, Principal
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import authenticate_token


def stdio_principal(monitor: Monitor, token: str | None) -> Callable[[], Principal]:
    """The principal for a stdio session.

    Without a token: the local agent (default agent scopes, never approve). With one: it must be
    valid at startup (CredentialError otherwise), and is re-checked on every call so a revocation
    or expiry takes effect at once.
    """
    if not token:
        return lambda: LOCAL_AGENT
    name = authenticate_token(monitor, token).name

    def resolve() -> Principal:
        try:
            return authenticate_token(monitor, token)
        except CredentialError as exc:
            # Same name (the audit log says who tried), no scopes (every call is denied).
            return Principal(name=name, scopes=frozenset(), credential_problem=exc.message)

    return resolve
