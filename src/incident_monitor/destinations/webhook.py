"""Webhook destination: signed HTTP POSTs following the Standard Webhooks spec.

Every delivery carries ``webhook-id`` = the publish's idempotency key, on every retry and every
re-publish, so a receiver that dedupes by ``webhook-id`` sees each incident once. The signing secret
lives in an environment variable; only its name ever appears in readiness reasons, errors and logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from standardwebhooks import Webhook

from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest, event_data
from incident_monitor.destinations.delivery import (
    DeliveryFailed,
    OutcomeUnknown,
    deliver_with_retries,
    enabled_reasons,
    plural_attempts,
    retry_after_seconds,
    url_reasons,
)
from incident_monitor.destinations.settings import WebhookConfig
from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.readiness import Readiness
from incident_monitor.egress.rules import USER_AGENT, EgressPolicy, EgressRefused, policy_for
from incident_monitor.secret_ref import resolve_secret, resolved_secrets, secret_ref_variable

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

EVENT_TYPE = "incident.published"
RESPONSE_EXCERPT_CHARS = 500
_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
# Standard Webhooks: signing secrets SHOULD be 24 to 64 random bytes.
_MIN_SECRET_BYTES = 24


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


class WebhookAdapter(DestinationAdapter[WebhookConfig]):
    kind = "webhook"

    def __repr__(self) -> str:
        return f"WebhookAdapter(id={self.config.id!r}, url={self.config.url!r})"

    @property
    def egress_policy(self) -> EgressPolicy:
        return policy_for(self.config)

    def secret_values(self) -> list[str]:
        return resolved_secrets(self.config.secret)

    def readiness(self) -> Readiness:
        reasons = enabled_reasons(self.config)
        url, url_missing = self.config.resolved_url()
        reasons += [f"url: {url_missing}"] if url is None else url_reasons("url", url, self.egress_policy)
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
        body = canonical_json(
            {"type": EVENT_TYPE, "timestamp": datetime.now(UTC).isoformat(), "data": event_data(request)}
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

        from incident_monitor.egress.transport import egress_client  # lazy: the HTTP stack loads on first send

        async with egress_client(self.egress_policy) as client:
            attempts = 0

            async def attempt_once() -> PublishOutcome:
                nonlocal attempts
                attempts += 1
                return await self._attempt(client, url, signer, webhook_id, body, attempts)

            return await deliver_with_retries(
                attempt_once,
                label="webhook",
                destination_id=config.id,
                max_attempts=config.max_attempts,
                backoff_base=config.backoff_seconds,
                gave_up=lambda error, n: (
                    f"{error} after {plural_attempts(n)}: check that the receiver is up and healthy, then publish "
                    "again (the same webhook-id lets it drop duplicates)"
                ),
            )

    async def _attempt(
        self, client: httpx2.AsyncClient, url: str, signer: Webhook, webhook_id: str, body: str, attempt: int
    ) -> PublishOutcome:
        """One signed POST: an outcome, DeliveryFailed (definite) or OutcomeUnknown (worth another attempt)."""
        import httpx2

        from incident_monitor.egress.transport import describe_transport_error, send

        config = self.config
        # Signed per attempt: the timestamp is the attempt's, so late retries stay inside the tolerance.
        now = datetime.now(UTC)
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": signer.sign(webhook_id, now, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            answer = await send(client, self.egress_policy, "POST", url, content=body.encode(), headers=headers)
        except EgressRefused as exc:
            raise DeliveryFailed(f"webhook {describe_transport_error(exc, timeout_seconds=0)}") from None
        except httpx2.TimeoutException:
            raise OutcomeUnknown(f"webhook timed out (timeout_seconds = {config.timeout_seconds:g})") from None
        except httpx2.TransportError as exc:
            raise OutcomeUnknown(f"could not reach the webhook ({sanitize_error(exc)})") from None
        status = answer.status
        excerpt = answer.excerpt(RESPONSE_EXCERPT_CHARS)
        log.info("webhook %s: attempt %d answered %d", config.id, attempt, status)
        if 200 <= status < 300:
            return PublishOutcome(
                status="published", external_id=_external_id(answer.body, webhook_id), response_excerpt=excerpt
            )
        if 300 <= status < 400:
            raise DeliveryFailed(f"webhook answered a redirect ({status}); configure the final URL", excerpt)
        if status == 410:
            raise DeliveryFailed(
                f"webhook answered 410 Gone: destination '{config.id}' is now disabled; fix url, then "
                f"re-enable it with `incident-monitor destinations enable {config.id}`",
                excerpt,
                disable="webhook answered 410 Gone",
            )
        if status != 429 and status < 500:
            raise DeliveryFailed(
                f"webhook answered {status} after {plural_attempts(attempt)}: {self._hint(status)}", excerpt
            )
        raise OutcomeUnknown(
            f"webhook answered {status}", retry_after_seconds(answer.headers.get("retry-after")), excerpt=excerpt
        )

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            variable = secret_ref_variable(self.config.secret) if self.config.secret else "the secret variable"
            return f"check the receiver's signing secret (it must match the one in {variable})"
        if status in (404, 405, 410):
            return "check url"
        if status == 413:
            return "the receiver refused the payload size; lower max_payload_bytes or shorten the draft"
        return "the receiver rejected the delivery; check its logs"


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
