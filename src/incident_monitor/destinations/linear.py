"""Linear destination (GraphQL over httpx).

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
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import Field

from incident_monitor.destinations.base import (
    DestinationAdapter,
    DestinationConfig,
    PublishOutcome,
    PublishRequest,
    Readiness,
)
from incident_monitor.destinations.delivery_errors import DeliveryFailed, OutcomeUnknown
from incident_monitor.destinations.egress import (
    EgressPolicy,
    EgressRefused,
    describe_transport_error,
    egress_client,
    policy_for,
    send,
)
from incident_monitor.destinations.webhook import MAX_RETRY_AFTER_SECONDS, retry_after_seconds
from incident_monitor.secret_ref import SecretRef, resolve_secret, resolved_secrets, secret_ref_variable

if TYPE_CHECKING:
    import httpx

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


class LinearConfig(DestinationConfig):
    kind: Literal["linear"] = "linear"
    team_id: str = Field(min_length=1, description="The team issues are created in (its id, from Linear).")
    token: SecretRef | None = Field(default=None, description="env:NAME of a variable holding the API key or token.")
    auth: Literal["api_key", "oauth"] = Field(
        default="api_key", description="api_key: a personal API key; oauth: an OAuth access token (Bearer)."
    )
    label_ids: list[str] = Field(default_factory=list, description="Label ids added to every issue.")
    api_url: str = "https://api.linear.app/graphql"
    allow_insecure_http: bool = False
    allow_private_networks: bool = False
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    backoff_seconds: float = Field(1.0, ge=0, le=30)


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
        config = self.config
        reasons: list[str] = []
        if not config.enabled:
            reasons.append(f"destination '{config.id}' is disabled (set enabled = true to publish)")
        if config.token is None:
            reasons.append("no token: set token = 'env:VARIABLE_NAME' and put a Linear API key in that variable")
        elif resolve_secret(config.token) is None:
            reasons.append(
                f"environment variable {secret_ref_variable(config.token)} is not set or empty: put the Linear "
                "API key (or OAuth token) in it"
            )
        if not config.api_url.startswith("https://") and not config.allow_insecure_http:
            reasons.append("api_url is not https://: use https:// or set allow_insecure_http = true for local testing")
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
        headers = self._headers()
        if headers is None:
            return PublishOutcome(status="failed", attempts=0, error="destination not ready: token missing")
        attempt = 0
        last_error = "Linear was not called"
        try:
            async with egress_client(self.egress_policy) as client:
                for attempt in range(1, self.config.max_attempts + 1):
                    try:
                        outcome = await self._publish_once(client, headers, request)
                        return outcome.model_copy(update={"attempts": attempt})
                    except OutcomeUnknown as exc:
                        last_error = exc.error
                        log.info("linear %s: attempt %d: %s", self.config.id, attempt, exc.error)
                        if attempt < self.config.max_attempts:
                            wait = exc.wait
                            if wait is None:
                                wait = min(self.config.backoff_seconds * 2 ** (attempt - 1), MAX_RETRY_AFTER_SECONDS)
                            await anyio.sleep(wait)
        except DeliveryFailed as exc:
            log.warning("linear %s: %s", self.config.id, exc.error)
            return PublishOutcome(
                status="failed", attempts=max(attempt, 1), error=exc.error, response_excerpt=exc.excerpt
            )
        except Exception as exc:  # adapters report failures as outcomes, never raise
            log.error("linear %s: unexpected %s", self.config.id, type(exc).__name__)
            return PublishOutcome(
                status="failed", attempts=max(attempt, 1), error=f"linear adapter error: {type(exc).__name__}"
            )
        return PublishOutcome(
            status="failed",
            attempts=attempt,
            error=f"Linear: {last_error} after {attempt} attempt(s); publish again later (the derived issue id "
            "prevents a second issue)",
        )

    async def _publish_once(
        self, client: httpx.AsyncClient, headers: dict[str, str], request: PublishRequest
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
        self, client: httpx.AsyncClient, headers: dict[str, str], query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        import httpx  # already loaded: ``client`` is an httpx client (lazy: see egress)

        content = json.dumps({"query": query, "variables": variables}).encode()
        try:
            answer = await send(
                client, self.egress_policy, "POST", self.config.api_url, content=content, headers=headers
            )
        except EgressRefused as exc:
            raise DeliveryFailed(f"Linear {describe_transport_error(exc, timeout_seconds=0)}") from None
        except httpx.TransportError as exc:
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
        if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise DeliveryFailed(f"Linear answered {answer.status} without data", excerpt)
        return body["data"]


def _error_code(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    extensions = error.get("extensions") or {}
    return str(extensions.get("code", "")).upper() if isinstance(extensions, dict) else ""


def _rate_limit_wait(headers: httpx.Headers) -> float:
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
