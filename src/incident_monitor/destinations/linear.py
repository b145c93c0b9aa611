"""Linear destination (GraphQL over httpx2).

Idempotent by construction: the issue's ``id`` is a UUID derived from the publish's idempotency key,
so a retried ``issueCreate`` cannot make a second issue, and every attempt first asks whether that
id already exists. A duplicate (an open issue of the team carrying the same incident fingerprint in
its footer) gets a comment instead, whose id is derived the same way.

Linear answers GraphQL errors inside HTTP 200 (and rate limits as ``RATELIMITED`` errors or 429):
both are read, not just the status code.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
from incident_monitor.destinations.settings import LinearConfig
from incident_monitor.domain.readiness import Readiness
from incident_monitor.egress.rules import EgressPolicy, EgressRefused, policy_for
from incident_monitor.secret_ref import resolve_secret, resolved_secrets, secret_ref_variable

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

# uuid5 namespace for ids derived from idempotency keys (fixed forever: changing it breaks idempotency).
ID_NAMESPACE = uuid.UUID("5b0c5f7e-7a8e-4d0b-9a57-1f1c0f3d2a61")
# Linear priorities: 0 none, 1 urgent, 2 high, 3 medium, 4 low.
PRIORITY_BY_SEVERITY = {"critical": 1, "high": 2, "medium": 3, "low": 4}
_EXCERPT_CHARS = 500

LOOKUP_QUERY = """
query IncidentMonitorLookup($issueId: ID!, $commentId: ID!, $teamId: ID!, $fingerprint: String!) {
  same: issues(filter: { id: { eq: $issueId } }, first: 1, includeArchived: true) {
    nodes { id identifier url title }
  }
  duplicate: issues(
    filter: {
      team: { id: { eq: $teamId } }
      description: { contains: $fingerprint }
      state: { type: { nin: ["completed", "canceled"] } }
    }
    first: 1
    orderBy: createdAt
  ) {
    nodes { id identifier url title }
  }
  comment: comments(filter: { id: { eq: $commentId } }, first: 1) {
    nodes { id url }
  }
}
"""

CREATE_MUTATION = """
mutation IncidentMonitorIssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) {
    success
    issue { id identifier url title }
  }
}
"""

COMMENT_MUTATION = """
mutation IncidentMonitorCommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) {
    success
    comment { id url }
  }
}
"""


def derived_id(idempotency_key: str, purpose: str = "issue") -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{purpose}:{idempotency_key}"))


def fingerprint_footer(request: PublishRequest) -> str:
    return f"incident-monitor fingerprint={request.fingerprint}"


def _description(request: PublishRequest) -> str:
    return (
        f"{request.body}\n\n---\n"
        f"_{fingerprint_footer(request)} digest={request.evidence_digest} key={request.idempotency_key}_"
    )


class LinearAdapter(DestinationAdapter[LinearConfig]):
    kind = "linear"

    def __repr__(self) -> str:
        return f"LinearAdapter(id={self.config.id!r}, team_id={self.config.team_id!r})"

    @property
    def egress_policy(self) -> EgressPolicy:
        return policy_for(self.config, max_response_bytes=256 * 1024)

    def secret_values(self) -> list[str]:
        return resolved_secrets(self.config.token)

    def readiness(self) -> Readiness:
        reasons = [
            *enabled_reasons(self.config),
            *secret_reasons(
                self.config.token,
                field="token",
                kind="a Linear API key",
                holder="the Linear API key (or OAuth token)",
            ),
            *url_reasons("api_url", self.config.api_url, self.egress_policy),
        ]
        return Readiness(ready=not reasons, reasons=reasons)

    def _headers(self) -> dict[str, str] | None:
        token = resolve_secret(self.config.token)
        if token is None:
            return None
        value = token.get_secret_value()
        return {
            # Personal API keys go bare; OAuth access tokens as Bearer (Linear's documented forms).
            "authorization": value if self.config.auth == "api_key" else f"Bearer {value}",
            "content-type": "application/json",
        }

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        from incident_monitor.egress.transport import egress_client  # lazy: the HTTP stack loads on first send

        headers = self._headers()
        if headers is None:
            return PublishOutcome(status="failed", attempts=0, error="destination not ready: token missing")
        async with egress_client(self.egress_policy) as client:
            return await deliver_with_retries(
                lambda: self._publish_once(client, headers, request),
                label="linear",
                destination_id=self.config.id,
                max_attempts=self.config.max_attempts,
                backoff_base=self.config.backoff_seconds,
                gave_up=lambda error, n: (
                    f"Linear: {error} after {n} attempt(s); publish again later (the derived issue id prevents a "
                    "second issue)"
                ),
            )

    async def _publish_once(
        self, client: httpx2.AsyncClient, headers: dict[str, str], request: PublishRequest
    ) -> PublishOutcome:
        issue_id = derived_id(request.idempotency_key)
        comment_id = derived_id(request.idempotency_key, "comment")
        found = await self._graphql(
            client,
            headers,
            LOOKUP_QUERY,
            {
                "issueId": issue_id,
                "commentId": comment_id,
                "teamId": self.config.team_id,
                "fingerprint": fingerprint_footer(request),
            },
        )
        same = _first(found, "same")
        duplicate = _first(found, "duplicate")
        if same is None and duplicate is not None and duplicate.get("id") == issue_id:
            same = duplicate  # the duplicate search found this publish's own issue
        if same is not None:
            return _issue_outcome(same, "found the issue an earlier attempt created")
        comment = _first(found, "comment")
        if comment is not None:
            return _comment_outcome(duplicate, comment)
        if duplicate is not None:
            text = f"**Duplicate report: {request.title}**\n\n{_description(request)}"
            data = await self._graphql(
                client,
                headers,
                COMMENT_MUTATION,
                {"input": {"id": comment_id, "issueId": duplicate["id"], "body": text}},
            )
            payload = data.get("commentCreate") or {}
            if not payload.get("success") or not payload.get("comment"):
                raise DeliveryFailed("Linear did not create the comment (success = false)", _excerpt(data))
            return _comment_outcome(duplicate, payload["comment"])
        issue_input: dict[str, Any] = {
            "id": issue_id,
            "teamId": self.config.team_id,
            "title": request.title,
            "description": _description(request),
            "priority": PRIORITY_BY_SEVERITY.get(request.severity, 0),
        }
        if self.config.label_ids:
            issue_input["labelIds"] = list(self.config.label_ids)
        data = await self._graphql(client, headers, CREATE_MUTATION, {"input": issue_input})
        payload = data.get("issueCreate") or {}
        if not payload.get("success") or not payload.get("issue"):
            raise DeliveryFailed("Linear did not create the issue (success = false)", _excerpt(data))
        return _issue_outcome(payload["issue"], None)

    async def _graphql(
        self, client: httpx2.AsyncClient, headers: dict[str, str], query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        import httpx2  # already loaded: ``client`` is an httpx2 client

        from incident_monitor.egress.transport import describe_transport_error, send

        content = json.dumps({"query": query, "variables": variables}).encode()
        try:
            answer = await send(
                client, self.egress_policy, "POST", self.config.api_url, content=content, headers=headers
            )
        except EgressRefused as exc:
            raise DeliveryFailed(f"Linear {describe_transport_error(exc, timeout_seconds=0)}") from None
        except httpx2.TransportError as exc:
            raise OutcomeUnknown(
                "Linear " + describe_transport_error(exc, timeout_seconds=self.config.timeout_seconds)
            ) from None
        excerpt = answer.excerpt(_EXCERPT_CHARS)
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        codes = {_error_code(e) for e in errors or []}
        if answer.status == 429 or "RATELIMITED" in codes:
            wait = _rate_limit_wait(answer.headers)
            if wait > MAX_RETRY_AFTER_SECONDS:
                raise DeliveryFailed(f"Linear rate limit: retry after {int(wait)} s; publish again later", excerpt)
            raise OutcomeUnknown("Linear rate limited the request", wait=wait)
        if answer.status >= 500:
            raise OutcomeUnknown(f"Linear answered {answer.status}")
        variable = secret_ref_variable(self.config.token) if self.config.token else "the token variable"
        if answer.status == 401 or "AUTHENTICATION_ERROR" in codes:
            raise DeliveryFailed(
                f"Linear rejected the credentials (authentication error): check the {self.config.auth} in {variable} "
                f"and that auth = '{self.config.auth}' matches its kind",
                excerpt,
            )
        if answer.status == 403 or "FORBIDDEN" in codes:
            raise DeliveryFailed(
                f"the credentials in {variable} may not write to team {self.config.team_id} (forbidden)", excerpt
            )
        if errors and any("already exists" in str(e.get("message", "")).lower() for e in errors if isinstance(e, dict)):
            # The derived id is taken: an earlier attempt created it. Look it up rather than fail.
            raise OutcomeUnknown("Linear says the derived id already exists", wait=0)
        if errors:
            messages = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))[:300]
            raise DeliveryFailed(
                f"Linear refused the request (GraphQL error: {messages}): check team_id and label_ids", excerpt
            )
        data = body.get("data") if isinstance(body, dict) else None
        if answer.status != 200 or not isinstance(data, dict):
            raise DeliveryFailed(f"Linear answered {answer.status} without data", excerpt)
        return data


def _error_code(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    extensions = error.get("extensions") or {}
    return str(extensions.get("code", "")).upper() if isinstance(extensions, dict) else ""


def _rate_limit_wait(headers: httpx2.Headers) -> float:
    wait = retry_after_seconds(headers.get("retry-after"))
    if wait is not None:
        return wait
    # Linear: X-RateLimit-Requests-Reset is the reset time in epoch milliseconds.
    reset = headers.get("x-ratelimit-requests-reset")
    try:
        return max(float(reset) / 1000 - datetime.now(UTC).timestamp(), 0.0) + 0.5 if reset else 5.0
    except ValueError:
        return 5.0


def _first(data: dict[str, Any], field: str) -> dict[str, Any] | None:
    connection = data.get(field) or {}
    nodes = connection.get("nodes") if isinstance(connection, dict) else None
    return nodes[0] if isinstance(nodes, list) and nodes and isinstance(nodes[0], dict) else None


def _excerpt(data: Any) -> str:
    return json.dumps(data)[:_EXCERPT_CHARS]


def _issue_outcome(issue: dict[str, Any], note: str | None) -> PublishOutcome:
    excerpt = f"{issue.get('identifier') or issue.get('id')}: {issue.get('title', '')}"
    return PublishOutcome(
        status="published",
        external_id=str(issue.get("id")),
        external_url=issue.get("url"),
        response_excerpt=(excerpt + (f" ({note})" if note else ""))[:_EXCERPT_CHARS],
    )


def _comment_outcome(issue: dict[str, Any] | None, comment: dict[str, Any]) -> PublishOutcome:
    on = f"{issue.get('identifier') or issue.get('id')}" if issue else "an open issue"
    return PublishOutcome(
        status="commented",
        external_id=str(issue.get("id")) if issue else str(comment.get("id")),
        external_url=comment.get("url"),
        response_excerpt=f"duplicate of {on}: commented (comment {comment.get('id')})",
    )
