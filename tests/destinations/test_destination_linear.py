"""Linear adapter against a local GraphQL server that validates and executes every document with Linear's schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from incident_monitor.destinations.base import PublishOutcome, PublishRequest
from incident_monitor.destinations.linear import (
    COMMENT_MUTATION,
    CREATE_MUTATION,
    LOOKUP_QUERY,
    LinearAdapter,
    derived_id,
)
from incident_monitor.destinations.settings import LinearConfig
from support.adapter_requests import make_request, permit_for
from support.linear_fake import FakeLinear, check_document

pytestmark = pytest.mark.anyio

KEY_VAR = "IM_TEST_LINEAR_KEY"
KEY = "lin_api_testkey0123456789abcdefghijklmnop"


@pytest.fixture
def linear(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinear]:
    monkeypatch.setenv(KEY_VAR, KEY)
    with FakeLinear(key=KEY, auth_header=KEY) as fake:
        yield fake
    assert fake.violations == [], "documents or variables off Linear's schema"


def make_adapter(fake: FakeLinear, tmp_path: Path, **config: Any) -> LinearAdapter:
    settings: dict[str, Any] = {
        "id": "lin",
        "team_id": fake.team_id,
        "token": f"env:{KEY_VAR}",
        "api_url": fake.url,
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "backoff_seconds": 0,
        "timeout_seconds": 5,
        "label_ids": ["label-incident"],
    }
    settings.update(config)
    return LinearAdapter(LinearConfig(**settings), data_dir=tmp_path)


def lin_request(**overrides: Any) -> PublishRequest:
    return make_request(destination_id="lin", **overrides)


async def publish(adapter: LinearAdapter, request: PublishRequest | None = None) -> PublishOutcome:
    request = request or lin_request()
    return await adapter.publish(request, permit_for(request))


def test_the_adapters_documents_are_valid_against_linears_schema() -> None:
    # The documents themselves (variables are checked per request by the fake server too).
    variables = {"issueId": "x", "commentId": "y", "teamId": "t", "fingerprint": "f"}
    assert check_document(LOOKUP_QUERY, variables) == []
    assert check_document(CREATE_MUTATION, {"input": {"teamId": "t", "title": "x", "priority": 2}}) == []
    assert check_document(COMMENT_MUTATION, {"input": {"issueId": "i", "body": "b"}}) == []


def test_the_schema_check_catches_bad_documents_and_variables() -> None:
    assert check_document(CREATE_MUTATION, {"input": {"title": "no team"}})  # teamId is required
    assert check_document(CREATE_MUTATION, {"input": {"teamId": "t", "priority": "high"}})  # Int, not String
    assert check_document('mutation { issueCreate(input: {teamId: "t"}) { nope } }', {})


async def test_creates_an_issue_with_a_derived_id_priority_and_labels(linear: FakeLinear, tmp_path: Path) -> None:
    request = lin_request(severity="critical")
    outcome = await publish(make_adapter(linear, tmp_path), request)

    assert outcome.status == "published", outcome.error
    issue = linear.issues[derived_id(request.idempotency_key)]
    assert outcome.external_id == issue["id"]
    assert outcome.external_url == "https://linear.app/acme/issue/OPS-1"
    assert issue["title"] == request.title
    assert issue["description"].startswith(request.body)
    assert f"fingerprint={request.fingerprint}" in issue["description"]
    assert issue["priority"] == 1
    assert issue["labelIds"] == ["label-incident"]
    assert issue["teamId"] == linear.team_id


@pytest.mark.parametrize(("severity", "priority"), [("critical", 1), ("high", 2), ("medium", 3), ("low", 4)])
async def test_priority_is_mapped_from_severity(
    linear: FakeLinear, tmp_path: Path, severity: str, priority: int
) -> None:
    await publish(make_adapter(linear, tmp_path), lin_request(severity=severity))
    assert [i["priority"] for i in linear.issues.values()] == [priority]


async def test_a_timed_out_create_is_not_repeated(linear: FakeLinear, tmp_path: Path) -> None:
    linear.create_hang_seconds = 3.0
    outcome = await publish(make_adapter(linear, tmp_path, timeout_seconds=1, max_attempts=3))

    assert outcome.status == "published", outcome.error
    assert len(linear.issues) == 1
    assert len(linear.creates()) == 1, "the retry went through the lookup and found the created issue"
    assert outcome.attempts == 2


async def test_a_create_refused_as_already_existing_is_looked_up_not_failed(linear: FakeLinear, tmp_path: Path) -> None:
    adapter = make_adapter(linear, tmp_path)
    first = await publish(adapter)
    linear.stale_lookups = 2  # both issue searches of the next lookup miss: the adapter tries to create it again

    again = await publish(adapter)

    assert again.status == "published", again.error
    assert again.external_id == first.external_id and again.attempts == 2
    assert len(linear.issues) == 1
    assert len(linear.creates()) == 2  # the refused create, then the lookup found it


async def test_the_duplicate_search_finding_this_publishs_own_issue_is_not_a_duplicate(
    linear: FakeLinear, tmp_path: Path
) -> None:
    adapter = make_adapter(linear, tmp_path)
    first = await publish(adapter)
    linear.stale_lookups = 1  # only the lookup by id misses; the fingerprint search finds the issue

    again = await publish(adapter)

    assert again.status == "published" and again.external_id == first.external_id
    assert not linear.comments and len(linear.creates()) == 1


async def test_republish_returns_the_same_issue(linear: FakeLinear, tmp_path: Path) -> None:
    adapter = make_adapter(linear, tmp_path)
    first = await publish(adapter)
    again = await publish(adapter)
    assert again.status == "published" and again.external_id == first.external_id
    assert len(linear.issues) == 1 and len(linear.creates()) == 1


async def test_a_duplicate_becomes_one_comment_on_the_open_issue(linear: FakeLinear, tmp_path: Path) -> None:
    adapter = make_adapter(linear, tmp_path)
    first = await publish(adapter)
    duplicate = lin_request(idempotency_key="idem_second_publish_0001", receipt_id="rcpt_2")

    outcome = await publish(adapter, duplicate)
    again = await publish(adapter, duplicate)

    assert outcome.status == "commented", outcome.error
    assert outcome.external_id == first.external_id
    assert again.status == "commented" and again.external_url == outcome.external_url
    assert len(linear.issues) == 1
    assert list(linear.comments) == [derived_id(duplicate.idempotency_key, "comment")]


async def test_a_completed_issue_is_not_a_duplicate(linear: FakeLinear, tmp_path: Path) -> None:
    adapter = make_adapter(linear, tmp_path)
    await publish(adapter)
    for issue in linear.issues.values():
        issue["stateType"] = "completed"
    outcome = await publish(adapter, lin_request(idempotency_key="idem_recurrence_000001"))
    assert outcome.status == "published" and len(linear.issues) == 2


async def test_oauth_tokens_go_as_bearer(linear: FakeLinear, tmp_path: Path) -> None:
    linear.auth_header = f"Bearer {KEY}"
    assert (await publish(make_adapter(linear, tmp_path, auth="oauth"))).status == "published"


async def test_a_wrong_auth_kind_is_a_clear_error(linear: FakeLinear, tmp_path: Path) -> None:
    linear.auth_header = f"Bearer {KEY}"
    outcome = await publish(make_adapter(linear, tmp_path))  # api_key: sent bare
    assert outcome.status == "failed"
    assert outcome.error is not None and "authentication error" in outcome.error and KEY_VAR in outcome.error
    assert KEY not in outcome.error and KEY not in (outcome.response_excerpt or "")
    assert not linear.issues


async def test_graphql_errors_inside_http_200_fail_the_publish(linear: FakeLinear, tmp_path: Path) -> None:
    linear.error_next = "FORBIDDEN"
    outcome = await publish(make_adapter(linear, tmp_path))
    assert outcome.status == "failed"
    assert outcome.error is not None and "may not write to team team-ops" in outcome.error
    assert not linear.issues


async def test_rate_limiting_is_waited_out(linear: FakeLinear, tmp_path: Path) -> None:
    linear.rate_limit_next = 1
    outcome = await publish(make_adapter(linear, tmp_path))
    assert outcome.status == "published", outcome.error
    assert outcome.attempts == 2 and len(linear.issues) == 1


def test_readiness_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    adapter = LinearAdapter(LinearConfig(id="lin", team_id="t", token=f"env:{KEY_VAR}"), data_dir=tmp_path)
    assert adapter.readiness().reasons == [
        f"environment variable {KEY_VAR} is not set or empty: put the Linear API key (or OAuth token) in it"
    ]
    monkeypatch.setenv(KEY_VAR, KEY)
    assert adapter.readiness().ready
