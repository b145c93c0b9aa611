"""Outbound HTTP rules every HTTP-based destination shares.

- https only, unless the destination sets ``allow_insecure_http`` (local testing);
- no private, loopback, link-local, shared, multicast or reserved addresses unless it sets
  ``allow_private_networks``; cloud metadata endpoints are refused always. The check runs on the
  addresses the host name *resolves to*, once before sending and again inside the connection
  itself (so DNS rebinding between the two cannot slip through) and for every redirect hop;
- a bounded timeout, a bounded number of redirects, and a cap on how much of an answer is read;
- no proxies from the environment (a proxy would connect on our behalf, past the address check).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio

from incident_monitor import __version__

if TYPE_CHECKING:
    import httpx

# httpx (with httpcore, h11, certifi and, through httpx's CLI, pygments and rich: ~45 ms) is imported by the
# functions that send, not here: every server imports the destination modules to read its config, and most
# server starts send nothing. The connection guard that needs httpcore lives in egress_transport.

USER_AGENT = f"incident-monitor-mcp/{__version__}"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services hand out cloud credentials: never a destination, whatever the config says.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)


class EgressRefused(Exception):
    """A destination address or URL our egress rules refuse. The message names the fix.

    Not an httpcore error, so httpx lets it through unchanged from inside a connection.
    """


@dataclass(frozen=True)
class EgressPolicy:
    allow_insecure_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = 10.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_redirects: int = 0


@dataclass(frozen=True)
class EgressResponse:
    status: int
    headers: httpx.Headers
    body: bytes  # at most policy.max_response_bytes
    url: str

    def excerpt(self, chars: int = 500) -> str:
        return self.body.decode("utf-8", errors="replace")[:chars]


class EgressConfig(Protocol):
    """The config fields every destination that calls out over HTTP carries."""

    allow_insecure_http: bool
    allow_private_networks: bool
    timeout_seconds: float


def policy_for(config: EgressConfig, **limits: Any) -> EgressPolicy:
    """A destination's egress policy: its config's allowances plus the adapter's own size/redirect limits."""
    return EgressPolicy(
        allow_insecure_http=config.allow_insecure_http,
        allow_private_networks=config.allow_private_networks,
        timeout_seconds=config.timeout_seconds,
        **limits,
    )


def scheme_problem(url: str, policy: EgressPolicy) -> str | None:
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return None
    if scheme == "http":
        if policy.allow_insecure_http:
            return None
        return (
            f"plain http:// refused for {_origin(url)}: use https:// "
            "(or set allow_insecure_http = true for local testing)"
        )
    return f"URL scheme {scheme or '(none)'!r} refused: only https:// is allowed"


def address_problem(address: IPAddress, policy: EgressPolicy) -> str | None:
    """Why connecting to ``address`` is refused, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address; it is never a destination"
    if address.is_global and not address.is_multicast:
        return None
    if policy.allow_private_networks and not address.is_multicast and not address.is_unspecified:
        return None
    kind = (
        "loopback"
        if address.is_loopback
        else "link-local"
        if address.is_link_local
        else "multicast"
        if address.is_multicast
        else "private or reserved"
    )
    return (
        f"{address} is a {kind} address: refused "
        "(set allow_private_networks = true only for a trusted internal receiver)"
    )


def literal_address_problem(url: str, policy: EgressPolicy) -> str | None:
    """For a URL whose host is an IP literal, why it is refused — known without any network I/O.

    Host names are checked after resolution, at send time; readiness uses this for the rest.
    """
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_problem(address, policy)


async def resolve_checked(host: str, port: int, policy: EgressPolicy) -> list[str]:
    """The addresses ``host`` resolves to, all of them allowed by ``policy``; else EgressRefused."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses: list[IPAddress] = [literal]
    except ValueError:
        import httpx  # already loaded: only a client's connection or ``send`` resolves

        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError(f"could not resolve {host}: {exc.strerror or type(exc).__name__}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        addresses = list(dict.fromkeys(addresses))
    if not addresses:
        import httpx  # already loaded: only a client's connection or ``send`` resolves

        raise httpx.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        problem = address_problem(address, policy)
        if problem:
            # Every address must pass: a name resolving to one public and one private address is refused.
            raise EgressRefused(f"destination host {host} refused: {problem}")
    return [str(a) for a in addresses]


def egress_client(policy: EgressPolicy) -> httpx.AsyncClient:
    """An HTTP client whose every connection passes the address rules. Redirects are followed by ``send``."""
    import httpx  # lazy: see the note at the imports

    from incident_monitor.destinations.egress_transport import GuardedTransport

    return httpx.AsyncClient(
        transport=GuardedTransport(policy),
        timeout=policy.timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


async def send(
    client: httpx.AsyncClient,
    policy: EgressPolicy,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> EgressResponse:
    """One request under the egress rules; redirects (up to ``policy.max_redirects``) are re-checked hop by hop.

    Raises EgressRefused for a refused URL or address, httpx.TransportError for transport failures.
    """
    import httpx  # already loaded: ``client`` is an httpx client

    hops = 0
    while True:
        problem = scheme_problem(url, policy)
        if problem:
            raise EgressRefused(problem)
        parts = httpx.URL(url)
        await resolve_checked(parts.host, parts.port or (443 if parts.scheme == "https" else 80), policy)
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
        url = str(httpx.URL(url).join(location))
        hops += 1


def describe_transport_error(exc: Exception, *, timeout_seconds: float) -> str:
    """A short, secret-free description of a transport failure (no URL query, no headers)."""
    if isinstance(exc, EgressRefused):
        return f"refused by egress rules: {exc}"
    import httpx  # already loaded: any other transport error came from an httpx client

    if isinstance(exc, httpx.TimeoutException):
        return f"timed out (timeout_seconds = {timeout_seconds:g})"
    message = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
    return f"could not connect ({type(exc).__name__}{': ' + message if message else ''})"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"
