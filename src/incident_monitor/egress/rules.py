"""The egress rules every outbound HTTP connection obeys, as pure functions (no I/O, no HTTP library).

- https only, unless the destination sets ``allow_insecure_http`` (local testing);
- no private, loopback, link-local, shared, multicast or reserved addresses unless it sets
  ``allow_private_networks``; cloud metadata endpoints are refused always. The check runs on the address a
  connection is actually opened to (after DNS, inside the connection: see ``transport``), for every redirect
  hop, and sees through IPv6 forms that embed an IPv4 address (NAT64, 6to4, IPv4-compatible, IPv4-mapped);
- a bounded timeout, a bounded number of redirects, and a cap on how much of an answer is read;
- no proxies from the environment (a proxy would connect on our behalf, past the address check).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from incident_monitor import __version__

USER_AGENT = f"incident-monitor-mcp/{__version__}"
# Enough for any acknowledgement or error body; a peer cannot make us buffer an unbounded answer.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services hand out cloud credentials: never a destination, whatever the config says.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (:: and ::1 excluded below)


class EgressRefused(Exception):
    """A destination address or URL our egress rules refuse. The message names the fix.

    Not an httpcore2 error, so httpx2 lets it through unchanged from inside a connection.
    """


@dataclass(frozen=True)
class EgressPolicy:
    allow_insecure_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = 10.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_redirects: int = 0


class EgressConfig(Protocol):
    """The config fields every destination that calls out over HTTP carries."""

    allow_insecure_http: bool
    allow_private_networks: bool
    timeout_seconds: float


def policy_for(
    config: EgressConfig, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, max_redirects: int = 0
) -> EgressPolicy:
    """A destination's egress policy: its config's allowances plus the adapter's own size/redirect limits."""
    return EgressPolicy(
        allow_insecure_http=config.allow_insecure_http,
        allow_private_networks=config.allow_private_networks,
        timeout_seconds=config.timeout_seconds,
        max_response_bytes=max_response_bytes,
        max_redirects=max_redirects,
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


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible), or None.

    A NAT64 gateway or 6to4 relay forwards such an address to its IPv4 part, so that part is what is judged.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if address in _NAT64:
        return ipaddress.IPv4Address(packed[12:])
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(packed[12:])
    return None


def address_problem(address: IPAddress, policy: EgressPolicy) -> str | None:
    """Why connecting to ``address`` is refused, or None."""
    inner = embedded_ipv4(address)
    if inner is not None:
        problem = address_problem(inner, policy)
        return f"{address} (which carries {inner}): {problem}" if problem else None
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

    Host names are checked after resolution, when connecting; readiness uses this for the rest.
    """
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_problem(address, policy)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"
