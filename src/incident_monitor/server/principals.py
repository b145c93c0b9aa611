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
    if token is None:
        return lambda: LOCAL_AGENT
    if not token.strip():
        # A blank token in a client config is a mistake, not a request to run unauthenticated.
        raise CredentialError("set but empty; put a token in it, or unset it to run as the local agent")
    name = authenticate_token(monitor, token).name

    def resolve() -> Principal:
        try:
            return authenticate_token(monitor, token)
        except CredentialError as exc:
            # Same name (the audit log says who tried), no scopes (every call is denied).
            problem = f"{exc.message} (restart the server with a valid INCIDENT_MONITOR_TOKEN)"
            return Principal(name=name, scopes=frozenset(), credential_problem=problem)

    return resolve
