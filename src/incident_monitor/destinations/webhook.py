"""Webhook destination: signed HTTP POSTs following the Standard Webhooks spec.

Every delivery carries ``webhook-id`` = the publish's idempotency key, on every retry and every
re-publish, so a receiver that dedupes by ``webhook-id`` sees each incident once. The signing secret
lives in an environment variable; only its name ever appears in readiness reasons, errors and logs.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2
from pydantic import ConfigDict, Field, field_validator
from standardwebhooks import Webhook

from incident_monitor import __version__
from incident_monitor.destinations.base import (
    DestinationAdapter,
    DestinationConfig,
    PublishOutcome,
    PublishRequest,
    Readiness,
)
from incident_monitor.destinations.egress import (
    EgressPolicy,
    EgressRefused,
    describe_transport_error,
    egress_client,
    literal_address_problem,
    policy_for,
    send,
)
from incident_monitor.secret_ref import SecretRef, is_env_ref, resolve_secret, resolved_secrets, secret_ref_variable

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

EVENT_TYPE = "incident.published"
USER_AGENT = f"incident-monitor-mcp/{__version__}"
MAX_RETRY_AFTER_SECONDS = 30.0
RESPONSE_EXCERPT_CHARS = 500
# Enough for any acknowledgement; a receiver cannot make us buffer an unbounded body.
_MAX_RESPONSE_BYTES = 64 * 1024
_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
# Standard Webhooks: signing secrets SHOULD be 24 to 64 random bytes.
_MIN_SECRET_BYTES = 24

# The fields of a PublishRequest that make up the event's "data" (``attempt`` is bookkeeping).
_DATA_FIELDS = frozenset(
    {
        "receipt_id",
        "idempotency_key",
        "draft_id",
        "incident_id",
        "destination_id",
        "route_id",
        "title",
        "body",
        "severity",
        "labels",
        "fingerprint",
        "evidence",
        "evidence_digest",
    }
)


class WebhookConfig(DestinationConfig):
    # A literal secret pasted into `secret` (or a token in `url`) must not be echoed by pydantic's errors.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["webhook"] = "webhook"
    url: str = Field(
        description="The receiver's https:// endpoint, or env:NAME of a variable holding it (set at run time)."
    )
    secret: SecretRef | None = Field(
        default=None,
        description="env:NAME of a variable holding a Standard Webhooks secret ('whsec_<base64>').",
    )
    allow_insecure_http: bool = Field(default=False, description="Allow http:// URLs (local testing only).")
    allow_private_networks: bool = Field(
        default=False,
        description="Allow private, loopback and link-local receivers (checked after DNS resolution).",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    max_payload_bytes: int = Field(256_000, ge=1024)
    backoff_seconds: float = Field(0.5, ge=0, le=30, description="Base of the exponential backoff.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("env:"):
            if not is_env_ref(value):
                raise ValueError("url: an environment reference must read 'env:VARIABLE_NAME'")
            return value  # the variable's value is checked by readiness, when it is read
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def resolved_url(self) -> tuple[str | None, str | None]:
        """The URL to post to, or why there is none (an ``env:`` reference naming only its variable)."""
        if not self.url.startswith("env:"):
            return self.url, None
        variable = secret_ref_variable(self.url)
        value = resolve_secret(self.url)
        if value is None:
            return None, f"environment variable {variable} is not set or empty: put the receiver's URL in it"
        url = value.get_secret_value().strip()
        problem = url_problem(url)
        if problem:
            return None, f"environment variable {variable}: {problem}"
        return url, None


def url_problem(value: str) -> str | None:
    """Why ``value`` cannot be a webhook URL, or None."""
    example = "e.g. url = 'https://hooks.example.com/incident'"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a malformed or out-of-range port
        # httpx2 (the mcp SDK's maintained fork of httpx, loaded by every server) has httpx's URL parser, so
        # this accepts exactly what deliveries can send, without importing httpx at start-up (see egress).
        httpx2.URL(value)
    except (ValueError, httpx2.InvalidURL):
        return f"url is not a valid URL; {example}"
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        return f"url must be an http(s) URL with a host; {example}"
    if parts.username is not None or parts.password is not None:
        return (
            "url must not contain credentials (user:password@); deliveries are authenticated by "
            "their signature, set `secret` instead"
        )
    return None


def event_data(request: PublishRequest) -> dict[str, Any]:
    """The incident as destinations see it (shared with the telemetry adapter)."""
    return request.model_dump(mode="json", include=set(_DATA_FIELDS))


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait for a ``Retry-After`` (delay-seconds or HTTP date), capped; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def parse_webhook_secret(value: str) -> bytes | None:
    """The key bytes of a 'whsec_<base64>' secret, or None when it is not a usable secret.

    Stricter than ``standardwebhooks.Webhook``, which silently drops non-base64 characters and so
    accepts typos as a different (wrong) key.
    """
    if not value.startswith(_SECRET_PREFIX):
        return None
    encoded = value.removeprefix(_SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)  # accept unpadded base64, as the library does
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) >= _MIN_SECRET_BYTES else None


_WHSEC = re.compile(r"whsec_[A-Za-z0-9+/=_-]*")
_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/=]+")
_URL_TAIL = re.compile(r"(https?://[^\s?#'\"]*)[?#][^\s'\"]*")


def sanitize_error(exc: BaseException) -> str:
    """A short, single-line description of an exception that carries no secret, signature or query string."""
    message = str(exc).splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = _WHSEC.sub("whsec_[redacted]", text)
    text = _SIGNATURE.sub("v1,[redacted]", text)
    text = _URL_TAIL.sub(r"\1?[redacted]", text)
    return text[:200]


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class WebhookAdapter(DestinationAdapter[WebhookConfig]):
    kind = "webhook"

    def __repr__(self) -> str:
        return f"WebhookAdapter(id={self.config.id!r}, url={self.config.url!r})"

    @property
    def egress_policy(self) -> EgressPolicy:
        return policy_for(self.config, max_response_bytes=_MAX_RESPONSE_BYTES)

    def secret_values(self) -> list[str]:
        return resolved_secrets(self.config.secret)

    def readiness(self) -> Readiness:
        config = self.config
        reasons: list[str] = []
        if not config.enabled:
            reasons.append(f"destination '{config.id}' is disabled (set enabled = true to publish)")
        url, url_missing = config.resolved_url()
        if url is None:
            reasons.append(f"url: {url_missing}")
        else:
            if urlsplit(url).scheme == "http" and not config.allow_insecure_http:
                reasons.append(
                    "url uses plain http://: use https:// or set allow_insecure_http = true for local testing"
                )
            address_problem = literal_address_problem(url, self.egress_policy)
            if address_problem:
                reasons.append(f"url: {address_problem}")
        _, problem = self._signer()
        if problem:
            reasons.append(problem)
        return Readiness(ready=not reasons, reasons=reasons)

    def _signer(self) -> tuple[Webhook | None, str | None]:
        """The signer built from the configured secret, or a reason (naming only the variable) why not."""
        ref = self.config.secret
        if ref is None:
            return None, (
                "no signing secret: set secret = 'env:VARIABLE_NAME' and put a Standard Webhooks "
                "secret ('whsec_<base64>') in that variable"
            )
        variable = secret_ref_variable(ref)
        secret = resolve_secret(ref)
        if secret is None:
            return (
                None,
                f"environment variable {variable} is not set or empty: put the webhook signing secret in it",
            )
        key = parse_webhook_secret(secret.get_secret_value())
        if key is None:
            return None, (
                f"environment variable {variable} does not hold a valid Standard Webhooks secret: expected "
                f"'whsec_' followed by base64 of at least {_MIN_SECRET_BYTES} random bytes"
            )
        return Webhook(key), None

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        try:
            return await self._send(request)
        except Exception as exc:  # adapters report failures as outcomes, never raise
            error = sanitize_error(exc)
            log.error("webhook %s: unexpected error: %s", self.config.id, error)
            return PublishOutcome(status="failed", attempts=0, error=f"webhook delivery crashed ({error})")

    async def _send(self, request: PublishRequest) -> PublishOutcome:
        config = self.config
        signer, problem = self._signer()
        if signer is None:  # the variable changed since readiness was checked
            return PublishOutcome(status="failed", attempts=0, error=f"destination not ready: {problem}")
        url, url_missing = config.resolved_url()
        if url is None:
            return PublishOutcome(status="failed", attempts=0, error=f"destination not ready: url: {url_missing}")
        webhook_id = request.idempotency_key
        if not webhook_id.isascii() or not webhook_id.isprintable() or " " in webhook_id:
            return PublishOutcome(
                status="failed",
                attempts=0,
                error="idempotency key is not usable as a webhook-id (printable ASCII)",
            )

        # Serialized once: every attempt sends (and signs) exactly the same bytes.
        body = json.dumps(
            {"type": EVENT_TYPE, "timestamp": datetime.now(UTC).isoformat(), "data": event_data(request)},
            sort_keys=True,
            separators=(",", ":"),
        )
        size = len(body.encode())
        if size > config.max_payload_bytes:
            return PublishOutcome(
                status="failed",
                attempts=0,
                error=(
                    f"webhook payload is {size} bytes, over max_payload_bytes = {config.max_payload_bytes}: "
                    "shorten the draft or its evidence, or raise max_payload_bytes"
                ),
            )

        last_error = "webhook was not called"
        excerpt: str | None = None
        attempt = 0
        async with egress_client(self.egress_policy) as client:
            import httpx  # already loaded by egress_client (lazy: see egress)

            for attempt in range(1, config.max_attempts + 1):
                wait: float | None = None
                try:
                    status, raw, retry_after = await self._post(client, url, signer, webhook_id, body)
                except EgressRefused as exc:
                    return self._failed(f"webhook {describe_transport_error(exc, timeout_seconds=0)}", attempt, None)
                except httpx.TimeoutException:
                    last_error = f"webhook timed out (timeout_seconds = {config.timeout_seconds:g})"
                except httpx.TransportError as exc:
                    last_error = f"could not reach the webhook ({sanitize_error(exc)})"
                else:
                    excerpt = raw.decode("utf-8", errors="replace")[:RESPONSE_EXCERPT_CHARS]
                    log.info("webhook %s: attempt %d answered %d", config.id, attempt, status)
                    if 200 <= status < 300:
                        return PublishOutcome(
                            status="published",
                            external_id=_external_id(raw, webhook_id),
                            attempts=attempt,
                            response_excerpt=excerpt,
                        )
                    if 300 <= status < 400:
                        return self._failed(
                            f"webhook answered a redirect ({status}); configure the final URL",
                            attempt,
                            excerpt,
                        )
                    if status == 410:
                        outcome = self._failed(
                            f"webhook answered 410 Gone: destination '{config.id}' is now disabled; fix url, then "
                            f"re-enable it with `incident-monitor destinations enable {config.id}`",
                            attempt,
                            excerpt,
                        )
                        return outcome.model_copy(update={"disable_reason": "webhook answered 410 Gone"})
                    if status != 429 and status < 500:
                        return self._failed(
                            f"webhook answered {status} after {_plural(attempt)}: {self._hint(status)}",
                            attempt,
                            excerpt,
                        )
                    last_error = f"webhook answered {status}"
                    wait = retry_after_seconds(retry_after)
                log.info("webhook %s: attempt %d failed: %s", config.id, attempt, last_error)
                if attempt < config.max_attempts:
                    if wait is None:
                        wait = min(config.backoff_seconds * 2 ** (attempt - 1), MAX_RETRY_AFTER_SECONDS)
                    await anyio.sleep(wait)
        return self._failed(
            f"{last_error} after {_plural(attempt)}: check that the receiver is up and healthy, then publish "
            "again (the same webhook-id lets it drop duplicates)",
            attempt,
            excerpt,
        )

    async def _post(
        self, client: httpx.AsyncClient, url: str, signer: Webhook, webhook_id: str, body: str
    ) -> tuple[int, bytes, str | None]:
        # Signed per attempt: the timestamp is the attempt's, so late retries stay inside the tolerance.
        now = datetime.now(UTC)
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": signer.sign(webhook_id, now, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        answer = await send(client, self.egress_policy, "POST", url, content=body.encode(), headers=headers)
        return answer.status, answer.body, answer.headers.get("retry-after")

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            variable = secret_ref_variable(self.config.secret) if self.config.secret else "the secret variable"
            return f"check the receiver's signing secret (it must match the one in {variable})"
        if status in (404, 405, 410):
            return "check url"
        if status == 413:
            return "the receiver refused the payload size; lower max_payload_bytes or shorten the draft"
        return "the receiver rejected the delivery; check its logs"

    def _failed(self, error: str, attempts: int, excerpt: str | None) -> PublishOutcome:
        log.warning("webhook %s: %s", self.config.id, error)
        return PublishOutcome(status="failed", attempts=attempts, error=error, response_excerpt=excerpt)


def _external_id(raw: bytes, fallback: str) -> str:
    """The receiver's delivery id when its JSON answer has one, else the webhook-id."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return fallback
    value = answer.get("id") if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        return fallback
    return str(value)
