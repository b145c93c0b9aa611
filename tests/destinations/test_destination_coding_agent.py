"""The coding_agent destination (issue 15, seed 002's caller side): config and readiness, every request's version
header and bearer token, the egress guard, and the platform's answers treated as untrusted — against the
reference platform over real sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from incident_monitor.config import MonitorConfig
from incident_monitor.destinations.settings import EXTERNAL_KINDS
from incident_monitor.domain.code_change import INTERFACE_VERSION, parse_status
from incident_monitor.errors import InsufficientScope, InvalidInput
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import destination_calls
from incident_monitor.service.destination_health import disable_destination
from support.coding_agent import TOKEN, TOKEN_VARIABLE, World, agent_config
from support.coding_agent_platform import CodingAgentPlatform
from support.monitors import AGENT, MonitorFactory

pytestmark = pytest.mark.anyio
WorldFactory = Callable[..., World]
OPERATOR = local_operator()


# --- config and readiness --------------------------------------------------------------------------------------


def test_the_defaults_are_the_interfaces_timings() -> None:
    config = MonitorConfig.model_validate(agent_config("https://agents.example.com", None))
    agent = config.destination("coding-agent")
    assert agent is not None and agent.kind == "coding_agent"
    assert (agent.poll_interval_seconds, agent.max_run_minutes, agent.request_timeout_seconds) == (120, 120, 10)
    assert agent.kind in EXTERNAL_KINDS  # approval required by default


def test_a_never_route_to_a_coding_agent_is_refused_at_load() -> None:
    config = agent_config("https://agents.example.com", None)
    config["routes"] = [
        {"id": "r", "destination_id": "coding-agent", "approval_policy": "never", "match": {"sources": ["ci"]}}
    ]
    with pytest.raises(ValueError, match=r"routes\[0\]\.approval_policy: 'never' is refused for a coding_agent"):
        MonitorConfig.model_validate(config)


@pytest.mark.parametrize("field", ["base_url", "callback_base_url"])
def test_urls_must_be_urls(field: str) -> None:
    config = agent_config("https://agents.example.com", "https://monitor.example.com")
    config["destinations"][0][field] = "ftp://agents.example.com"
    with pytest.raises(ValueError, match=field):
        MonitorConfig.model_validate(config)


def test_plain_http_needs_allow_insecure_http(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    monitor = make_monitor(agent_config("http://agents.example.com", None, allow_insecure_http=False))
    reasons = monitor.readiness("coding-agent").reasons
    assert any("base_url is not https://" in r for r in reasons)


def test_a_missing_token_names_its_variable(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    monitor = make_monitor(agent_config("https://agents.example.com", None))
    readiness = monitor.readiness("coding-agent")
    assert not readiness.ready and any(TOKEN_VARIABLE in r for r in readiness.reasons)


# --- ping ("Test connection") --------------------------------------------------------------------------------


async def test_ping_says_what_failed(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    with CodingAgentPlatform(token=TOKEN) as platform:
        monitor = make_monitor(agent_config(platform.url, None))
        ok = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert ok.ok and "reachable, token valid" in ok.detail
        [ping] = platform.requests
        assert ping.path == "/ping" and ping.headers["x-incident-interface-version"] == INTERFACE_VERSION
        assert ping.headers["authorization"] == f"Bearer {TOKEN}"

        monkeypatch.setenv(TOKEN_VARIABLE, "wrong-token-0000000000")
        bad = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert not bad.ok and "refused our bearer token" in bad.detail and "wrong-token" not in bad.detail

        monkeypatch.delenv(TOKEN_VARIABLE)
        missing = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert not missing.ok and TOKEN_VARIABLE in missing.detail
    down = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
    assert not down.ok


async def test_ping_of_a_disabled_destination_sends_nothing(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    with CodingAgentPlatform(token=TOKEN) as platform:
        monitor = make_monitor(agent_config(platform.url, None))
        with monitor.session() as session:
            disable_destination(session, "coding-agent", "the platform answered 410", at=monitor.clock())
        result = await destination_calls.ping_destination(monitor, OPERATOR, "coding-agent")
        assert not result.ok and "not ready" in result.detail and "destinations enable coding-agent" in result.detail
        assert platform.requests == []


async def test_ping_is_for_coding_agents_and_operators(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor()
    with pytest.raises(InvalidInput, match="destination_id: 'telemetry' is not a configured coding_agent destination"):
        await destination_calls.ping_destination(monitor, OPERATOR, "telemetry")
    with pytest.raises(InsufficientScope, match="incident_monitor:admin"):
        await destination_calls.ping_destination(monitor, AGENT, "telemetry")


# --- the egress guard and untrusted answers ------------------------------------------------------------------


async def test_the_egress_guard_applies(make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    with CodingAgentPlatform(token=TOKEN) as platform:
        # A name, not an address literal: readiness passes, and the guarded transport refuses at connect time.
        config = agent_config(platform.url.replace("127.0.0.1", "localhost"), None, allow_private_networks=False)
        world = World(make_monitor(config), platform, None)  # type: ignore[arg-type]
        _, run_id, receipt = await world.launch()
        assert receipt.status.value == "failed" and "egress" in (receipt.error or "")
        assert platform.requests == []
        assert world.run(run_id).status == "failed"


async def test_a_launch_answer_without_a_usable_run_id_fails_the_launch(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    world.platform.launch_answer = lambda run: {"id": "../../etc/passwd x", "url": "javascript:alert(1)"}
    _, run_id, receipt = await world.launch()
    assert receipt.status.value == "failed" and "no usable run id" in (receipt.error or "")
    assert world.run(run_id).status == "failed"


async def test_the_platform_url_must_be_a_web_url(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    world.platform.launch_answer = lambda run: {"id": run.id, "url": "javascript:alert(1)"}
    _, run_id, receipt = await world.launch()
    assert receipt.status.value == "published" and receipt.external_url is None
    assert world.run(run_id).platform_url is None


async def test_an_oversized_status_answer_is_refused(coding_agent_world: WorldFactory) -> None:
    world = coding_agent_world(webhooks=False)
    await world.launch()
    world.platform.runs["run-0001"].summary = "x" * 100_000
    with pytest.raises(destination_calls.CallFailed):
        await destination_calls.run_status(world.monitor, "coding-agent", "run-0001")


def test_status_documents_are_validated_field_by_field() -> None:
    assert parse_status(b'{"status": "paused"}') is None
    assert parse_status(b"not json") is None
    parsed = parse_status(
        b'{"status": "finished", "summary": 7, "pr_url": "https://u:p@github.example/pr/1", "branch": "a\\nb"}'
    )
    assert parsed is not None and parsed.summary == "" and parsed.pr_url is None and parsed.branch is None
    long = parse_status(b'{"status": "running", "summary": "' + b"y" * 5_000 + b'"}')
    assert long is not None and len(long.summary) == 2_000
