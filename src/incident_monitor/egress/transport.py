"""The connections under every outbound HTTP client: httpx2 over an httpcore2 pool whose network backend
resolves the host, checks each address against the egress rules, and connects only to a checked address —
so the check and the connection see the same IP (no DNS-rebinding gap), on every new connection and every
redirect hop. Built from httpx2's and httpcore2's public APIs: a transport (``httpx2.AsyncBaseTransport``)
over a pool given our network backend (``httpcore2.AsyncNetworkBackend``).

Imported on the first outbound request, not at server start (the CA store and httpcore2 cost ~40 ms).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore2
import httpx2

from incident_monitor.egress.rules import (
    USER_AGENT,
    EgressPolicy,
    EgressRefused,
    IPAddress,
    address_problem,
    scheme_problem,
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# httpcore2 errors → the httpx2 errors callers catch (most specific first: ConnectTimeout before TimeoutException).
_ERRORS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx2_errors() -> Iterator[None]:
    try:
        yield
    except tuple(core for core, _ in _ERRORS) as exc:
        mapped = next(outer for core, outer in _ERRORS if isinstance(exc, core))
        raise mapped(str(exc)) from exc


async def resolve_checked(host: str, port: int, policy: EgressPolicy) -> list[str]:
    """The addresses ``host`` resolves to, all of them allowed by ``policy``; else EgressRefused."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"could not resolve {host}: {exc.strerror or type(exc).__name__}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore2.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        problem = address_problem(address, policy)
        if problem:
            # Every address must pass: a name resolving to one public and one private address is refused.
            raise EgressRefused(f"destination host {host} refused: {problem}")
    return [str(a) for a in addresses]


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves, checks and connects to a checked address: the only way our pools open a socket."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self._policy)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.AsyncNetworkStream:
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


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx2_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport over an httpcore2 pool that connects only through ``GuardedBackend``."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.ssl_context = tls_context()
        self.pool = httpcore2.AsyncConnectionPool(ssl_context=self.ssl_context, network_backend=GuardedBackend(policy))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        problem = scheme_problem(str(request.url), self.policy)
        if problem:
            raise EgressRefused(problem)
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx2_errors():
            response = await self.pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)  # an async pool's responses stream asynchronously
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


def egress_client(
    policy: EgressPolicy, *, headers: Mapping[str, str] | None = None, timeout: httpx2.Timeout | float | None = None
) -> httpx2.AsyncClient:
    """An HTTP client whose every connection passes the egress rules. Redirects are followed by ``send``."""
    return httpx2.AsyncClient(
        transport=GuardedTransport(policy),
        timeout=policy.timeout_seconds if timeout is None else timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT, **(headers or {})},
    )


@dataclass(frozen=True)
class EgressResponse:
    status: int
    headers: httpx2.Headers
    body: bytes  # at most policy.max_response_bytes
    url: str

    def excerpt(self, chars: int = 500) -> str:
        return self.body.decode("utf-8", errors="replace")[:chars]


async def send(
    client: httpx2.AsyncClient,
    policy: EgressPolicy,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> EgressResponse:
    """One request under the egress rules; redirects (up to ``policy.max_redirects``) are re-checked hop by hop.

    Raises EgressRefused for a refused URL or address, httpx2.TransportError for transport failures.
    """
    hops = 0
    while True:
        problem = scheme_problem(url, policy)
        if problem:
            raise EgressRefused(problem)
        async with client.stream(method, url, content=content, headers=headers) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= policy.max_response_bytes:
                    body = body[: policy.max_response_bytes]
                    break
            location = response.headers.get("location")
            result = EgressResponse(response.status_code, response.headers, body, url)
        if result.status not in _REDIRECTS or not location or hops >= policy.max_redirects:
            return result
        if result.status in (301, 302) and method != "GET":
            return result  # a non-GET is re-sent only on a method-preserving redirect (307/308)
        if result.status == 303:
            method, content = "GET", None
        url = str(httpx2.URL(url).join(location))
        hops += 1


def describe_transport_error(exc: Exception, *, timeout_seconds: float) -> str:
    """A short, secret-free description of a transport failure (no URL query, no headers)."""
    if isinstance(exc, EgressRefused):
        return f"refused by egress rules: {exc}"
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out (timeout_seconds = {timeout_seconds:g})"
    message = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
    return f"could not connect ({type(exc).__name__}{': ' + message if message else ''})"
