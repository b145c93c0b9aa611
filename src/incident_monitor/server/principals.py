"""Who the caller is: on transports without per-request auth (stdio), and once per request on every transport."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from incident_monitor.errors import CredentialError
from incident_monitor.policy.principal import LOCAL_AGENT, Principal
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import authenticate_token, kept_token_reads


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
    reads = kept_token_reads(monitor)
    name = authenticate_token(monitor, token, reads).name

    def resolve() -> Principal:
        try:
            return authenticate_token(monitor, token, reads)
        except CredentialError as exc:
            # Same name (the audit log says who tried), no scopes (every call is denied).
            problem = f"{exc.message} (restart the server with a valid INCIDENT_MONITOR_TOKEN)"
            return Principal(name=name, scopes=frozenset(), credential_problem=problem)

    return resolve


class RequestPrincipal:
    """The caller of the request being handled, resolved once per request.

    The scope gate resolves the caller as a ``tools/call`` enters (``resolved``) and the tool serving it reads
    the same principal, instead of checking the credential a second time (on stdio with a token, a store read
    of ~0.2 ms each; issue 18). Every request still resolves afresh from committed state, so a revoked or
    expired credential is refused on its next request. Outside ``resolved`` (a resource read, a test calling
    a tool directly) each call resolves.
    """

    def __init__(self, resolve: Callable[[], Principal]) -> None:
        self._resolve = resolve
        # Per instance: two servers in one process (tests) never see each other's caller. The value lives in
        # the request's own context (each request is its own task), and is reset when the request ends.
        self._current: ContextVar[Principal | None] = ContextVar("request_principal", default=None)

    def __call__(self) -> Principal:
        current = self._current.get()
        return current if current is not None else self._resolve()

    @contextmanager
    def resolved(self) -> Iterator[Principal]:
        principal = self._resolve()
        token = self._current.set(principal)
        try:
            yield principal
        finally:
            self._current.reset(token)
