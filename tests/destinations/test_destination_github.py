"""GitHub adapter against a local server that holds every request and answer to GitHub's OpenAPI contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from incident_monitor.destinations.base import PublishOutcome, PublishRequest
from incident_monitor.destinations.github import GitHubAdapter, marker
from incident_monitor.destinations.settings import GitHubConfig
from support.adapter_requests import make_request, permit_for
from support.github_fake import FakeGitHub

pytestmark = pytest.mark.anyio

TOKEN_VAR = "IM_TEST_GITHUB_TOKEN"
TOKEN = "ghp_testtoken0123456789abcdefABCDEF0123"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    with FakeGitHub(token=TOKEN) as fake:
        yield fake
    assert fake.violations == [], "requests or answers off GitHub's contract"


def make_adapter(fake: FakeGitHub, tmp_path: Path, **config: Any) -> GitHubAdapter:
    settings: dict[str, Any] = {
        "id": "gh",
        "repo": f"{fake.owner}/{fake.repo}",
        "token": f"env:{TOKEN_VAR}",
        "api_url": fake.url,
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "backoff_seconds": 0,
        "timeout_seconds": 5,
        "labels": ["ops"],
    }
    settings.update(config)
    return GitHubAdapter(GitHubConfig(**settings), data_dir=tmp_path)


def gh_request(**overrides: Any) -> PublishRequest:
    return make_request(destination_id="gh", **overrides)


async def publish(adapter: GitHubAdapter, request: PublishRequest | None = None) -> PublishOutcome:
    request = request or gh_request()
    return await adapter.publish(request, permit_for(request))


async def test_creates_an_issue_with_title_body_labels_and_hidden_marker(github: FakeGitHub, tmp_path: Path) -> None:
    request = gh_request()
    outcome = await publish(make_adapter(github, tmp_path), request)

    assert outcome.status == "published", outcome.error
    assert outcome.external_id == "1"
    assert outcome.external_url == "https://github.com/acme/incidents/issues/1"
    assert len(github.issues) == 1
    issue = github.issues[0]
    assert issue["title"] == request.title
    assert issue["body"].startswith(request.body)
    assert issue["body"].endswith(marker(request))
    assert {label["name"] for label in issue["labels"]} == {"checkout", "latency", "ops", "incident-monitor"}
    # The lookup ran before the create.
    assert [m for m, _, _ in github.requests] == ["get", "post"]


async def test_republish_finds_the_issue_instead_of_creating_another(github: FakeGitHub, tmp_path: Path) -> None:
    adapter = make_adapter(github, tmp_path)
    first = await publish(adapter)
    again = await publish(adapter)

    assert again.status == "published"
    assert again.external_id == first.external_id
    assert len(github.issues) == 1
    assert len(github.creates()) == 1


async def test_create_times_out_after_github_created_it_and_the_retry_yields_one_issue(
    github: FakeGitHub, tmp_path: Path
) -> None:
    github.create_hang_seconds = 3.0
    adapter = make_adapter(github, tmp_path, timeout_seconds=1, max_attempts=3)

    outcome = await publish(adapter)

    assert outcome.status == "published", outcome.error
    assert len(github.issues) == 1
    assert len(github.creates()) == 1, "a create with an unknown outcome was re-sent without a lookup"
    assert outcome.external_id == "1"
    assert outcome.attempts == 2
    methods = [m for m, _, _ in github.requests]
    assert methods == ["get", "post", "get"]


async def test_a_duplicate_of_an_open_issue_becomes_one_comment(github: FakeGitHub, tmp_path: Path) -> None:
    adapter = make_adapter(github, tmp_path)
    await publish(adapter)
    # Another publish (another draft) of the same incident fingerprint.
    duplicate = gh_request(idempotency_key="idem_second_publish_0001", draft_id="draft_2", receipt_id="rcpt_2")

    outcome = await publish(adapter, duplicate)
    again = await publish(adapter, duplicate)

    assert outcome.status == "commented", outcome.error
    assert outcome.external_id == "1"
    assert outcome.external_url is not None and "#issuecomment-" in outcome.external_url
    assert again.status == "commented" and again.external_url == outcome.external_url
    assert len(github.issues) == 1
    assert len(github.comments[1]) == 1, "a retried comment was posted twice"
    assert github.comments[1][0]["body"].endswith(marker(duplicate))


async def test_a_closed_issue_with_the_same_fingerprint_is_not_commented_on(github: FakeGitHub, tmp_path: Path) -> None:
    adapter = make_adapter(github, tmp_path)
    await publish(adapter)
    github.issues[0]["state"] = "closed"

    recurrence = await publish(adapter, gh_request(idempotency_key="idem_recurrence_000001"))

    assert recurrence.status == "published"
    assert recurrence.external_id == "2"
    assert len(github.issues) == 2


async def test_lookup_pages_through_the_repos_issues(github: FakeGitHub, tmp_path: Path) -> None:
    adapter = make_adapter(github, tmp_path)
    target = gh_request()
    await publish(adapter, target)
    # 250 newer labelled issues (another incident each) push ours to the third page of 100.
    for n in range(2, 252):
        other = {**github.issues[0], "number": n, "id": 1000 + n, "title": f"other {n}"}
        github.issues.append(
            {**other, "body": f"unrelated\n\n<!-- incident-monitor fingerprint=fp_{n} digest=d key=k{n} -->"}
        )
    github.requests.clear()

    again = await publish(adapter, target)

    assert again.status == "published" and again.external_id == "1"
    assert len(github.issues) == 251
    pages = [path for method, path, _ in github.requests if method == "get"]
    assert len(pages) == 3 and not github.creates()


async def test_primary_and_secondary_rate_limits_are_waited_out(github: FakeGitHub, tmp_path: Path) -> None:
    github.rate_limit_next = 1
    github.secondary_limit_next = 1
    outcome = await publish(make_adapter(github, tmp_path))

    assert outcome.status == "published", outcome.error
    assert len(github.issues) == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "GitHub rejected the token (401"),
        (403, "needs Issues read/write"),
        (404, "not found or not visible to the token in IM_TEST_GITHUB_TOKEN"),
        (410, "issues are disabled on acme/incidents (410"),
        (422, "422 validation failed: Validation Failed; Label color invalid"),
    ],
)
async def test_github_errors_map_to_clear_receipt_errors(
    github: FakeGitHub, tmp_path: Path, status: int, expected: str
) -> None:
    if status == 401:
        github.token = "another-token"
    else:
        github.create_error = status
    outcome = await publish(make_adapter(github, tmp_path))

    assert outcome.status == "failed"
    assert outcome.error is not None and expected in outcome.error, outcome.error
    assert TOKEN not in outcome.error and TOKEN not in (outcome.response_excerpt or "")
    assert (outcome.disable_reason is not None) == (status == 410)
    assert not github.issues


async def test_unreachable_github_fails_after_its_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    fake = FakeGitHub(token=TOKEN)
    with fake:
        url = fake.url
    adapter = GitHubAdapter(
        GitHubConfig(
            id="gh",
            repo="acme/incidents",
            token=f"env:{TOKEN_VAR}",
            api_url=url,
            allow_insecure_http=True,
            allow_private_networks=True,
            backoff_seconds=0,
            max_attempts=2,
        ),
        data_dir=tmp_path,
    )
    outcome = await publish(adapter)
    assert outcome.status == "failed" and outcome.attempts == 2
    assert outcome.error is not None and "could not connect" in outcome.error


async def test_private_api_url_is_refused_unless_allowed(github: FakeGitHub, tmp_path: Path) -> None:
    outcome = await publish(make_adapter(github, tmp_path, allow_private_networks=False))
    assert outcome.status == "failed"
    assert (
        outcome.error is not None and "loopback address" in outcome.error and "allow_private_networks" in outcome.error
    )
    assert not github.requests


def test_readiness_needs_the_token_and_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VAR, raising=False)
    adapter = GitHubAdapter(GitHubConfig(id="gh", repo="acme/incidents", token=f"env:{TOKEN_VAR}"), data_dir=tmp_path)
    assert adapter.readiness().ready is False
    assert adapter.readiness().reasons == [
        f"environment variable {TOKEN_VAR} is not set or empty: put the GitHub token in it"
    ]
    no_token = GitHubAdapter(GitHubConfig(id="gh", repo="acme/incidents"), data_dir=tmp_path)
    assert "no token" in no_token.readiness().reasons[0]
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    assert adapter.readiness().ready is True
    insecure = GitHubAdapter(
        GitHubConfig(id="gh", repo="acme/incidents", token=f"env:{TOKEN_VAR}", api_url="http://ghe.example.com"),
        data_dir=tmp_path,
    )
    assert "api_url is not https://" in insecure.readiness().reasons[0]


@pytest.mark.parametrize("repo", ["acme", "acme/", "/incidents", "acme/inc/idents", "ac me/x", "acme/.."])
def test_repo_must_be_owner_slash_repo(repo: str) -> None:
    with pytest.raises(ValidationError, match="repo must be 'owner/repo'"):
        GitHubConfig(id="gh", repo=repo, token="env:X")


def test_a_literal_token_in_the_config_is_refused_without_echo() -> None:
    with pytest.raises(ValidationError) as caught:
        GitHubConfig(id="gh", repo="acme/incidents", token=TOKEN)
    assert "env:VARIABLE_NAME" in str(caught.value)
    assert TOKEN not in str(caught.value)
