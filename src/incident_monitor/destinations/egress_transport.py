"""The connection underneath every egress client: an httpcore pool whose connections go only to checked addresses.

Split from ``egress`` so that httpx and httpcore are imported when the first client is built, not when a
server starts (see the note in ``egress``).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpcore
import httpx

from incident_monitor.destinations.egress import EgressPolicy, EgressRefused, resolve_checked


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to a checked address, so the check and the connection see the same IP."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self._policy)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context every connection shares (default settings, never modified).

    Building it (loading the CA store) costs ~35 ms: once per publish was too often, and once per process
    start is paid by servers that never publish, so it is built on the first outbound connection.
    """
    return ssl.create_default_context()


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(verify=tls_context(), trust_env=False)
        # httpx takes no network backend argument; its pool is replaced by one that connects through the guard.
        self._pool = httpcore.AsyncConnectionPool(ssl_context=tls_context(), network_backend=_GuardedBackend(policy))
