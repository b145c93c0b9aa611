"""What every HTTP adapter shares: the attempt loop (backoff honouring ``Retry-After``, retries only when the
outcome is unknown) and the readiness checks for a token and an endpoint URL.

An adapter writes one attempt (``attempt_once``) that returns an outcome, raises ``OutcomeUnknown`` (a timeout,
a 5xx, a rate limit: wait, then try again — the adapter's own lookup or idempotency key keeps the retry from
writing twice) or raises ``DeliveryFailed`` (a definite refusal: stop and record it).
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio

from incident_monitor.destinations.base import PublishOutcome
from incident_monitor.destinations.settings import DestinationConfig
from incident_monitor.egress.rules import EgressPolicy, literal_address_problem, scheme_problem
from incident_monitor.secret_ref import resolve_secret, secret_ref_variable

log = logging.getLogger(__name__)

# The longest a delivery waits between attempts (a longer Retry-After ends the delivery instead).
MAX_RETRY_AFTER_SECONDS = 30.0


class DeliveryFailed(Exception):
    """A definite failure: stop and record it (``disable``: why the destination is gone for good)."""

    def __init__(self, error: str, excerpt: str | None = None, *, disable: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.excerpt = excerpt
        self.disable = disable


class OutcomeUnknown(Exception):
    """The attempt's outcome is unknown (timeout, 5xx) or it was rate limited: wait, then try again.

    ``wait``: seconds the peer asked for (Retry-After), else None for the exponential backoff.
    """

    def __init__(self, error: str, wait: float | None = None, *, excerpt: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.wait = wait
        self.excerpt = excerpt


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


def backoff_seconds(attempt: int, base: float) -> float:
    """The wait after failed attempt ``attempt`` (1-based) when the peer named none: base, twice that, four times, …"""
    return min(base * 2.0 ** (attempt - 1), MAX_RETRY_AFTER_SECONDS)


def plural_attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


async def deliver_with_retries(
    attempt_once: Callable[[], Awaitable[PublishOutcome]],
    *,
    label: str,
    destination_id: str,
    max_attempts: int,
    backoff_base: float,
    gave_up: Callable[[str, int], str],
) -> PublishOutcome:
    """Up to ``max_attempts`` calls of ``attempt_once``; the outcome carries how many were made.

    ``gave_up(last_error, attempts)`` words the failure when every attempt ended with an unknown outcome.
    Never raises: an unexpected error is a failed outcome naming only its type (its text may hold a secret).
    """
    attempt = 0
    last: OutcomeUnknown | None = None
    try:
        for attempt in range(1, max_attempts + 1):
            try:
                outcome = await attempt_once()
            except OutcomeUnknown as exc:
                last = exc
                log.info("%s %s: attempt %d: %s", label, destination_id, attempt, exc.error)
                if attempt < max_attempts:
                    await anyio.sleep(exc.wait if exc.wait is not None else backoff_seconds(attempt, backoff_base))
                continue
            return outcome.model_copy(update={"attempts": attempt})
    except DeliveryFailed as exc:
        log.warning("%s %s: %s", label, destination_id, exc.error)
        return PublishOutcome(
            status="failed",
            attempts=max(attempt, 1),
            error=exc.error,
            response_excerpt=exc.excerpt,
            disable_reason=exc.disable,
        )
    except Exception as exc:  # adapters report failures as outcomes, never raise
        log.error("%s %s: unexpected %s", label, destination_id, type(exc).__name__)
        return PublishOutcome(
            status="failed", attempts=max(attempt, 1), error=f"{label} adapter error: {type(exc).__name__}"
        )
    assert last is not None
    return PublishOutcome(
        status="failed", attempts=attempt, error=gave_up(last.error, attempt), response_excerpt=last.excerpt
    )


# --- readiness ---------------------------------------------------------------------------------------------


def enabled_reasons(config: DestinationConfig) -> list[str]:
    return [] if config.enabled else [f"destination '{config.id}' is disabled (set enabled = true to publish)"]


def secret_reasons(ref: str | None, *, field: str, kind: str, holder: str) -> list[str]:
    """Why the secret ``field`` cannot be used (naming only its variable); ``kind``: 'a GitHub token',
    ``holder``: 'the GitHub token' (what the variable must hold)."""
    if ref is None:
        return [f"no {field}: set {field} = 'env:VARIABLE_NAME' and put {kind} in that variable"]
    if resolve_secret(ref) is None:
        return [f"environment variable {secret_ref_variable(ref)} is not set or empty: put {holder} in it"]
    return []


def url_reasons(field: str, url: str, policy: EgressPolicy) -> list[str]:
    """Why ``url`` is refused before any network I/O: its scheme, or an IP-literal host the rules refuse."""
    reasons: list[str] = []
    if scheme_problem(url, policy) is not None:
        reasons.append(
            f"{field} is not https://: use https:// or set allow_insecure_http = true for local testing"
            if url.startswith("http://")
            else f"{field}: {scheme_problem(url, policy)}"
        )
    address = literal_address_problem(url, policy)
    if address:
        reasons.append(f"{field}: {address}")
    return reasons
