"""GitHub issues destination (REST over httpx2).

Idempotent without an idempotency API: every issue and comment we write ends with a hidden marker
carrying the incident fingerprint, the evidence digest and the publish's idempotency key. Before
every create, and again before any retry of a create whose outcome is unknown (timeout, 5xx), the
repository's issues are paged through (newest first, filtered by the marker label) looking for it:
- an issue carrying this idempotency key is this publish, already done → ``published``;
- an *open* issue carrying the same fingerprint is a duplicate → a comment on it → ``commented``
  (itself deduplicated by the key, so a retried comment is not posted twice);
- otherwise a new issue is created.
The list endpoint is read, not the search index, which lags behind writes.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest
from incident_monitor.destinations.delivery import (
    MAX_RETRY_AFTER_SECONDS,
    DeliveryFailed,
    OutcomeUnknown,
    deliver_with_retries,
    enabled_reasons,
    retry_after_seconds,
    secret_reasons,
    url_reasons,
)
from incident_monitor.destinations.settings import GitHubConfig
from incident_monitor.domain.readiness import Readiness
from incident_monitor.egress.rules import EgressPolicy, EgressRefused, policy_for
from incident_monitor.secret_ref import resolve_secret, resolved_secrets, secret_ref_variable

if TYPE_CHECKING:
    import httpx2

    from incident_monitor.egress.transport import EgressResponse

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
MAX_BODY_CHARS = 65_536  # GitHub refuses longer issue and comment bodies
_MARKER = re.compile(r"<!-- incident-monitor fingerprint=(\S+) digest=(\S+) key=(\S+) -->")
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
_EXCERPT_CHARS = 500


def marker(request: PublishRequest) -> str:
    return (
        f"<!-- incident-monitor fingerprint={request.fingerprint} digest={request.evidence_digest} "
        f"key={request.idempotency_key} -->"
    )


def _with_marker(text: str, request: PublishRequest) -> str:
    tail = "\n\n" + marker(request)
    room = MAX_BODY_CHARS - len(tail)
    if len(text) > room:
        notice = "\n\n… (truncated: the full evidence is in the incident monitor)"
        text = text[: room - len(notice)] + notice
    return text + tail


class GitHubAdapter(DestinationAdapter[GitHubConfig]):
    kind = "github"

    def __repr__(self) -> str:
        return f"GitHubAdapter(id={self.config.id!r}, repo={self.config.repo!r})"

    @property
    def egress_policy(self) -> EgressPolicy:
        return policy_for(self.config, max_response_bytes=2 * 1024 * 1024, max_redirects=3)  # a page of 100 issues

    def secret_values(self) -> list[str]:
        return resolved_secrets(self.config.token)

    def readiness(self) -> Readiness:
        reasons = [
            *enabled_reasons(self.config),
            *secret_reasons(self.config.token, field="token", kind="a GitHub token", holder="the GitHub token"),
            *url_reasons("api_url", self.config.api_url, self.egress_policy),
        ]
        return Readiness(ready=not reasons, reasons=reasons)

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        from incident_monitor.egress.transport import egress_client  # lazy: the HTTP stack loads on first send

        token = resolve_secret(self.config.token)
        if token is None:
            return PublishOutcome(status="failed", attempts=0, error="destination not ready: token missing")
        headers = {
            "authorization": f"Bearer {token.get_secret_value()}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": API_VERSION,
            "content-type": "application/json",
        }
        async with egress_client(self.egress_policy) as client:
            session = _Session(self, client, headers)
            return await deliver_with_retries(
                lambda: session.publish_once(request),
                label="github",
                destination_id=self.config.id,
                max_attempts=self.config.max_attempts,
                backoff_base=self.config.backoff_seconds,
                gave_up=lambda error, n: (
                    f"GitHub: {error} after {n} attempt(s); publish again later (the lookup prevents a second issue)"
                ),
            )


class _Session:
    """One publish's conversation with GitHub."""

    def __init__(self, adapter: GitHubAdapter, client: httpx2.AsyncClient, headers: dict[str, str]) -> None:
        self.adapter = adapter
        self.config = adapter.config
        self.client = client
        self.headers = headers

    @property
    def base(self) -> str:
        return f"{self.config.api_url.rstrip('/')}/repos/{self.config.repo}"

    async def publish_once(self, request: PublishRequest) -> PublishOutcome:
        same, duplicate = await self._find(request)
        if same is not None:
            return _issue_outcome("published", same, "found the issue an earlier attempt created")
        if duplicate is not None:
            return await self._comment(duplicate, request)
        labels = sorted({*request.labels, *self.config.labels, self.config.marker_label} - {""})
        payload = {"title": request.title[:256], "body": _with_marker(request.body, request), "labels": labels}
        answer = await self._call("POST", f"{self.base}/issues", payload)
        if answer.status != 201:
            raise self._error(answer, "create the issue")
        return _issue_outcome("published", _json(answer), None)

    async def _find(self, request: PublishRequest) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the issue this publish created, an open issue with the same fingerprint) from the repo's issues."""
        query = "state=all&sort=created&direction=desc&per_page=100"
        if self.config.marker_label:
            import httpx2  # already loaded by the session's egress client

            query += "&labels=" + httpx2.QueryParams({"l": self.config.marker_label})["l"]
        url: str | None = f"{self.base}/issues?{query}"
        duplicate: dict[str, Any] | None = None
        for _ in range(self.config.lookup_max_pages):
            if url is None:
                break
            answer = await self._call("GET", url, None)
            if answer.status != 200:
                raise self._error(answer, "list issues")
            for issue in _json_list(answer):
                if "pull_request" in issue:
                    continue
                for fingerprint, _digest, key in _MARKER.findall(issue.get("body") or ""):
                    if key == request.idempotency_key:
                        return issue, None
                    if fingerprint == request.fingerprint and issue.get("state") == "open" and duplicate is None:
                        duplicate = issue
            match = _NEXT_LINK.search(answer.headers.get("link", ""))
            url = match.group(1) if match else None
        return None, duplicate

    async def _comment(self, issue: dict[str, Any], request: PublishRequest) -> PublishOutcome:
        comments_url = f"{self.base}/issues/{issue['number']}/comments"
        url: str | None = f"{comments_url}?per_page=100"
        for _ in range(self.config.lookup_max_pages):
            if url is None:
                break
            answer = await self._call("GET", url, None)
            if answer.status != 200:
                raise self._error(answer, "list comments")
            for comment in _json_list(answer):
                if any(key == request.idempotency_key for _, _, key in _MARKER.findall(comment.get("body") or "")):
                    return _comment_outcome(issue, comment)
            match = _NEXT_LINK.search(answer.headers.get("link", ""))
            url = match.group(1) if match else None
        text = f"**Duplicate report: {request.title}**\n\n{request.body}"
        answer = await self._call("POST", comments_url, {"body": _with_marker(text, request)})
        if answer.status != 201:
            raise self._error(answer, "comment on the existing issue")
        return _comment_outcome(issue, _json(answer))

    async def _call(self, method: str, url: str, payload: dict[str, Any] | None) -> EgressResponse:
        """One request. A transport failure, a 5xx or a rate limit raises OutcomeUnknown: the delivery helper waits
        (as long as the rate limit asks) and the next attempt starts again from the lookup, so nothing is written
        twice."""
        import httpx2  # already loaded by the session's egress client

        from incident_monitor.egress.transport import describe_transport_error, send

        content = json.dumps(payload).encode() if payload is not None else None
        try:
            answer = await send(
                self.client, self.adapter.egress_policy, method, url, content=content, headers=self.headers
            )
        except EgressRefused as exc:
            raise DeliveryFailed(f"GitHub {describe_transport_error(exc, timeout_seconds=0)}") from None
        except httpx2.TransportError as exc:
            raise OutcomeUnknown(
                "GitHub " + describe_transport_error(exc, timeout_seconds=self.config.timeout_seconds)
            ) from None
        wait = _rate_limit_wait(answer)
        if wait is None:
            if answer.status >= 500:
                raise OutcomeUnknown(f"GitHub answered {answer.status}")
            return answer
        if wait > MAX_RETRY_AFTER_SECONDS:
            raise DeliveryFailed(
                f"GitHub rate limit: retry after {int(wait)} s (x-ratelimit-reset); publish again later",
                answer.excerpt(_EXCERPT_CHARS),
            )
        raise OutcomeUnknown("GitHub rate limited the request", wait=wait)

    def _error(self, answer: EgressResponse, action: str) -> DeliveryFailed:
        status = answer.status
        excerpt = answer.excerpt(_EXCERPT_CHARS)
        variable = secret_ref_variable(self.config.token) if self.config.token else "the token variable"
        repo = self.config.repo
        detail = _github_message(answer)
        hints = {
            401: f"GitHub rejected the token (401 Bad credentials): check the token in {variable} is valid and "
            "not expired",
            403: f"the token in {variable} may not {action} on {repo} (403 Forbidden): it needs Issues read/write "
            "on that repository",
            404: f"repository {repo} not found or not visible to the token in {variable} (404): check repo and "
            "the token's repository access",
            410: f"issues are disabled on {repo} (410 Gone): enable issues there, then re-enable this destination",
            422: f"GitHub refused to {action} (422 validation failed{': ' + detail if detail else ''}): check "
            "title, labels and body",
        }
        message = hints.get(status, f"GitHub answered {status} when trying to {action}")
        return DeliveryFailed(
            message, excerpt, disable="GitHub answered 410 Gone (issues disabled)" if status == 410 else None
        )


def _rate_limit_wait(answer: EgressResponse) -> float | None:
    """Seconds to wait when GitHub rate limited the request (primary or secondary), else None."""
    if answer.status not in (403, 429):
        return None
    retry_after = retry_after_seconds(answer.headers.get("retry-after"))
    if answer.headers.get("retry-after") is not None:
        return retry_after if retry_after is not None else 60.0
    if answer.headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(answer.headers.get("x-ratelimit-reset", ""))
        except ValueError:
            return 60.0
        return max(reset - datetime.now(UTC).timestamp(), 0.0) + 1.0
    if "secondary rate limit" in answer.body.decode("utf-8", errors="replace").lower():
        return 60.0  # GitHub's advice when a secondary limit gives no retry-after
    return None if answer.status == 403 else 60.0


def _github_message(answer: EgressResponse) -> str:
    try:
        data = json.loads(answer.body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message", ""))]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            parts.append(" ".join(str(error.get(k, "")) for k in ("resource", "field", "code") if error.get(k)))
    return "; ".join(p for p in parts if p)[:200]


def _json(answer: EgressResponse) -> dict[str, Any]:
    try:
        data = json.loads(answer.body)
    except ValueError:
        problem = f"GitHub answered {answer.status} with a body that is not JSON"
        raise DeliveryFailed(problem, answer.excerpt(200)) from None
    if not isinstance(data, dict):
        raise DeliveryFailed(f"GitHub answered {answer.status} with unexpected JSON", answer.excerpt(200))
    return data


def _json_list(answer: EgressResponse) -> list[dict[str, Any]]:
    try:
        data = json.loads(answer.body)
    except ValueError:
        raise DeliveryFailed("GitHub's issue list is not JSON (or over the size cap)", answer.excerpt(200)) from None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _issue_outcome(status: Literal["published"], issue: dict[str, Any], note: str | None) -> PublishOutcome:
    excerpt = f"issue #{issue.get('number')}: {issue.get('title', '')}"
    return PublishOutcome(
        status=status,
        external_id=str(issue.get("number")),
        external_url=issue.get("html_url"),
        response_excerpt=(excerpt + (f" ({note})" if note else ""))[:_EXCERPT_CHARS],
    )


def _comment_outcome(issue: dict[str, Any], comment: dict[str, Any]) -> PublishOutcome:
    return PublishOutcome(
        status="commented",
        external_id=str(issue.get("number")),
        external_url=comment.get("html_url") or issue.get("html_url"),
        response_excerpt=f"duplicate of open issue #{issue.get('number')}: commented (comment {comment.get('id')})",
    )
