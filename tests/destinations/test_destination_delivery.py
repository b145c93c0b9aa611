"""The shared delivery helper (attempts, backoff honouring Retry-After, unknown outcomes), the shared
readiness checks, and the single maps the adapters share (canonical JSON, severity ↔ level, references)."""

from __future__ import annotations

from typing import Any

import pytest

from incident_monitor.destinations import delivery
from incident_monitor.destinations.base import PublishOutcome
from incident_monitor.destinations.delivery import (
    DeliveryFailed,
    OutcomeUnknown,
    deliver_with_retries,
    secret_reasons,
    url_reasons,
)
from incident_monitor.destinations.mcp_tool import _fields
from incident_monitor.destinations.settings import REFERENCES
from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.enums import Severity
from incident_monitor.domain.levels import LEVEL_FOR_SEVERITY, LEVEL_SEVERITY
from incident_monitor.egress.rules import EgressPolicy
from support.adapter_requests import make_request

pytestmark = pytest.mark.anyio


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(delivery.anyio, "sleep", sleep)
    return waited


def attempts_of(*steps: Any) -> Any:
    """An attempt function playing ``steps`` in order: an exception is raised, an outcome returned."""
    queue = list(steps)
    calls: list[int] = []

    async def attempt_once() -> PublishOutcome:
        calls.append(1)
        step = queue.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    attempt_once.calls = calls  # type: ignore[attr-defined]
    return attempt_once


async def run(attempt_once: Any, max_attempts: int = 3) -> PublishOutcome:
    return await deliver_with_retries(
        attempt_once,
        label="test",
        destination_id="d",
        max_attempts=max_attempts,
        backoff_base=1.0,
        gave_up=lambda error, n: f"{error} after {n}",
    )


async def test_unknown_outcomes_are_retried_with_backoff_or_the_peers_retry_after(sleeps: list[float]) -> None:
    published = PublishOutcome(status="published", external_id="x")
    outcome = await run(attempts_of(OutcomeUnknown("5xx"), OutcomeUnknown("429", wait=7.0), published))
    assert (outcome.status, outcome.attempts, outcome.external_id) == ("published", 3, "x")
    assert sleeps == [1.0, 7.0]  # the backoff after attempt 1, the peer's Retry-After after attempt 2


async def test_every_attempt_unknown_gives_up_with_the_last_error_and_excerpt(sleeps: list[float]) -> None:
    outcome = await run(attempts_of(OutcomeUnknown("a"), OutcomeUnknown("b"), OutcomeUnknown("c", excerpt="body")))
    assert (outcome.status, outcome.attempts, outcome.error) == ("failed", 3, "c after 3")
    assert outcome.response_excerpt == "body"
    assert sleeps == [1.0, 2.0]  # no wait after the last attempt


async def test_a_definite_failure_stops_at_once(sleeps: list[float]) -> None:
    attempt_once = attempts_of(DeliveryFailed("forbidden", "excerpt", disable="gone"), None)
    outcome = await run(attempt_once)
    assert (outcome.status, outcome.attempts, outcome.error) == ("failed", 1, "forbidden")
    assert (outcome.response_excerpt, outcome.disable_reason) == ("excerpt", "gone")
    assert len(attempt_once.calls) == 1 and sleeps == []


async def test_an_unexpected_error_is_an_outcome_naming_only_its_type(sleeps: list[float]) -> None:
    outcome = await run(attempts_of(RuntimeError("token=supersecret in a message")))
    assert (outcome.status, outcome.error) == ("failed", "test adapter error: RuntimeError")


def test_the_backoff_doubles_and_is_capped() -> None:
    assert [delivery.backoff_seconds(n, 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert delivery.backoff_seconds(10, 1.0) == delivery.MAX_RETRY_AFTER_SECONDS


def test_readiness_checks_name_the_variable_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_TEST_DELIVERY_TOKEN", raising=False)
    kind, holder = "a GitHub token", "the GitHub token"
    assert secret_reasons(None, field="token", kind=kind, holder=holder) == [
        "no token: set token = 'env:VARIABLE_NAME' and put a GitHub token in that variable"
    ]
    assert secret_reasons("env:IM_TEST_DELIVERY_TOKEN", field="token", kind=kind, holder=holder) == [
        "environment variable IM_TEST_DELIVERY_TOKEN is not set or empty: put the GitHub token in it"
    ]
    monkeypatch.setenv("IM_TEST_DELIVERY_TOKEN", "s3cr3t-value")
    assert secret_reasons("env:IM_TEST_DELIVERY_TOKEN", field="token", kind=kind, holder=holder) == []


def test_url_readiness_refuses_plain_http_and_literal_private_addresses() -> None:
    assert url_reasons("api_url", "https://api.github.com", EgressPolicy()) == []
    assert url_reasons("api_url", "http://api.example.com", EgressPolicy()) == [
        "api_url is not https://: use https:// or set allow_insecure_http = true for local testing"
    ]
    [reason] = url_reasons("api_url", "https://169.254.169.254/", EgressPolicy(allow_private_networks=True))
    assert reason.startswith("api_url: 169.254.169.254 is a cloud metadata address")
    assert url_reasons("url", "ftp://x.example", EgressPolicy()) == [
        "url: URL scheme 'ftp' refused: only https:// is allowed"
    ]


def test_one_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'


def test_each_severity_maps_to_a_documented_level_that_maps_back_to_it() -> None:
    assert set(LEVEL_FOR_SEVERITY) == set(Severity)
    for severity, level in LEVEL_FOR_SEVERITY.items():
        assert level in {"critical", "error", "warning", "info"}
        assert LEVEL_SEVERITY[level] is severity


def test_the_references_the_config_accepts_are_the_fields_the_adapter_fills() -> None:
    assert set(_fields(make_request())) == REFERENCES
