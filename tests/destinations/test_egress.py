"""Egress rules shared by the HTTP destinations: https only, resolved-address checks, redirects, caps."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from incident_monitor.egress.rules import EgressPolicy, EgressRefused, address_problem, embedded_ipv4
from incident_monitor.egress.transport import egress_client, send
from support.adapter_requests import SECRET_VAR, make_adapter, new_secret, publish
from support.redirector import Redirector

pytestmark = pytest.mark.anyio

OPEN = EgressPolicy(allow_insecure_http=True, allow_private_networks=True, max_redirects=3, max_response_bytes=1000)


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_secret()
    monkeypatch.setenv(SECRET_VAR, value)
    return value


@pytest.fixture
def redirector() -> Iterator[Redirector]:
    server = Redirector({})
    yield server
    server.close()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private or reserved"),
        ("192.168.0.10", "private or reserved"),
        ("172.16.5.5", "private or reserved"),
        ("100.64.0.1", "private or reserved"),  # carrier-grade NAT
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private or reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("0.0.0.0", "private or reserved"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    problem = address_problem(ipaddress.ip_address(address), EgressPolicy())
    assert problem is not None and f"is a {kind} address" in problem and "allow_private_networks" in problem


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64 (RFC 6052 well-known prefix)
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
        ("::ffff:7f00:1", "127.0.0.1"),  # IPv4-mapped
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("2002:7f00:1::", "127.0.0.1"),
    ],
)
def test_ipv6_forms_embedding_an_ipv4_address_are_judged_by_that_address(address: str, carried: str) -> None:
    assert str(embedded_ipv4(ipaddress.ip_address(address))) == carried
    problem = address_problem(ipaddress.ip_address(address), EgressPolicy())
    assert problem is not None and f"carries {carried}" in problem


def test_the_ipv4_a_nat64_address_carries_decides_whatever_the_allowance() -> None:
    # Metadata stays refused with private networks allowed; a public IPv4 behind NAT64 or 6to4 passes.
    allowing = EgressPolicy(allow_private_networks=True)
    assert "cloud metadata" in (address_problem(ipaddress.ip_address("64:ff9b::a9fe:a9fe"), allowing) or "")
    assert address_problem(ipaddress.ip_address("64:ff9b::7f00:1"), allowing) is None
    assert address_problem(ipaddress.ip_address("64:ff9b::8c52:7003"), EgressPolicy()) is None  # 140.82.112.3
    assert address_problem(ipaddress.ip_address("2002:8c52:7003::1"), EgressPolicy()) is None
    assert embedded_ipv4(ipaddress.ip_address("2606:4700::1111")) is None
    assert embedded_ipv4(ipaddress.ip_address("::1")) is None  # loopback itself, not an embedding


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "fe80::1", "192.168.1.1"])
def test_allow_private_networks_lets_internal_receivers_through(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), EgressPolicy(allow_private_networks=True)) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "168.63.129.16"])
def test_metadata_addresses_are_refused_even_when_private_networks_are_allowed(address: str) -> None:
    problem = address_problem(ipaddress.ip_address(address), EgressPolicy(allow_private_networks=True))
    assert problem is not None and "cloud metadata address" in problem


def test_public_addresses_pass() -> None:
    assert address_problem(ipaddress.ip_address("140.82.112.3"), EgressPolicy()) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111"), EgressPolicy()) is None


async def test_a_host_name_is_checked_after_dns_resolution(redirector: Redirector) -> None:
    redirector.routes["/x"] = (200, "ok")
    url = redirector.base.replace("127.0.0.1", "localhost") + "/x"
    async with egress_client(EgressPolicy(allow_insecure_http=True)) as client:
        with pytest.raises(EgressRefused, match=r"destination host localhost refused: .* loopback"):
            await send(client, EgressPolicy(allow_insecure_http=True), "GET", url)
    assert redirector.hits == []


async def test_the_connection_itself_checks_the_address(redirector: Redirector) -> None:
    # Bypassing send()'s pre-flight check (as a DNS answer changing in between would): the connection refuses.
    redirector.routes["/x"] = (200, "ok")
    async with egress_client(EgressPolicy(allow_insecure_http=True)) as client:
        with pytest.raises(EgressRefused, match="loopback"):
            await client.get(redirector.base + "/x")
    assert redirector.hits == []


async def test_http_is_refused_unless_allowed(redirector: Redirector) -> None:
    policy = EgressPolicy(allow_private_networks=True)
    async with egress_client(policy) as client:
        with pytest.raises(EgressRefused, match=r"plain http:// refused .* allow_insecure_http"):
            await send(client, policy, "GET", redirector.base + "/x")
    assert redirector.hits == []


async def test_every_redirect_hop_is_checked(redirector: Redirector) -> None:
    redirector.routes["/a"] = (307, "/b")
    redirector.routes["/b"] = (302, "http://169.254.169.254/latest/meta-data/")
    async with egress_client(OPEN) as client:
        with pytest.raises(EgressRefused, match="cloud metadata"):
            await send(client, OPEN, "GET", redirector.base + "/a")
    assert redirector.hits == ["/a", "/b"]


async def test_a_redirect_to_a_non_https_scheme_is_refused(redirector: Redirector) -> None:
    redirector.routes["/a"] = (302, "ftp://files.example.com/x")
    async with egress_client(OPEN) as client:
        with pytest.raises(EgressRefused, match="scheme 'ftp' refused"):
            await send(client, OPEN, "GET", redirector.base + "/a")


async def test_allowed_redirects_are_followed_up_to_the_limit(redirector: Redirector) -> None:
    redirector.routes.update({"/a": (301, "/b"), "/b": (308, "/c"), "/c": (200, "final")})
    async with egress_client(OPEN) as client:
        answer = await send(client, OPEN, "GET", redirector.base + "/a")
        assert (answer.status, answer.body) == (200, b"final")
        capped = EgressPolicy(allow_insecure_http=True, allow_private_networks=True, max_redirects=1)
        stopped = await send(client, capped, "GET", redirector.base + "/a")
    assert stopped.status == 308  # the second redirect is not followed: its answer is returned as is


async def test_a_post_is_not_turned_into_a_get_by_a_302(redirector: Redirector) -> None:
    redirector.routes.update({"/a": (302, "/b"), "/b": (200, "should not be reached")})
    async with egress_client(OPEN) as client:
        answer = await send(client, OPEN, "POST", redirector.base + "/a", content=b"{}")
    assert answer.status == 302 and redirector.hits == ["/a"]


async def test_the_response_read_is_capped(redirector: Redirector) -> None:
    redirector.routes["/big"] = (200, "x" * 50_000)
    async with egress_client(OPEN) as client:
        answer = await send(client, OPEN, "GET", redirector.base + "/big")
    assert len(answer.body) == OPEN.max_response_bytes


async def test_no_proxy_from_the_environment_is_used(redirector: Redirector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    redirector.routes["/x"] = (200, "direct")
    async with egress_client(OPEN) as client:
        assert (await send(client, OPEN, "GET", redirector.base + "/x")).body == b"direct"


async def test_webhook_to_a_loopback_receiver_is_refused_without_allow_private_networks(
    secret: str, tmp_path: Path, redirector: Redirector
) -> None:
    redirector.routes["/hooks/incident"] = (200, "ok")
    adapter = make_adapter(redirector.base + "/hooks/incident", tmp_path, allow_private_networks=False)
    # A literal private address is refused before any network I/O: readiness already says why.
    readiness = adapter.readiness()
    assert not readiness.ready
    assert any("loopback" in r and "allow_private_networks" in r for r in readiness.reasons)
    outcome = await publish(adapter)
    assert outcome.status == "failed"
    assert outcome.error is not None and "loopback" in outcome.error
    assert redirector.hits == []


async def test_webhook_410_asks_to_disable_the_destination(secret: str, tmp_path: Path, redirector: Redirector) -> None:
    redirector.routes["/hooks/incident"] = (410, "gone")
    outcome = await publish(make_adapter(redirector.base + "/hooks/incident", tmp_path, max_attempts=3))
    assert outcome.status == "failed" and outcome.attempts == 1
    assert outcome.disable_reason == "webhook answered 410 Gone"
    assert outcome.error is not None and "is now disabled" in outcome.error
