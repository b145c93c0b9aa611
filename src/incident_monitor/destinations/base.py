"""The one protocol every destination adapter implements.

An adapter is constructed from its config model and the data directory. The publishing service
calls ``publish`` with a ``PublishRequest`` and a permit; ``publish`` checks the permit and
readiness, then hands over to the adapter's ``_deliver``. Adapters never raise for a delivery
failure: they return an outcome, so the receipt always records what happened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel

from incident_monitor.destinations.settings import DestinationConfig
from incident_monitor.domain.readiness import Readiness
from incident_monitor.policy.permit import PublishPermit, verify_permit
from incident_monitor.policy.redaction import redact_text


class CallFailed(Exception):
    """A call to a destination other than a publish (a run's status, stop, ping) failed. The message says what
    failed and never carries a secret."""


class PublishRequest(BaseModel):
    """Everything an adapter may send. Evidence is already redacted."""

    receipt_id: str
    idempotency_key: str
    draft_id: str
    incident_id: str
    destination_id: str
    route_id: str | None
    title: str
    body: str
    severity: str
    labels: list[str]
    fingerprint: str
    evidence: dict[str, Any]
    evidence_digest: str
    attempt: int = 1


# The fields of a PublishRequest that make up the event destinations see (``attempt`` is bookkeeping).
_EVENT_FIELDS = frozenset(
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


def event_data(request: PublishRequest) -> dict[str, Any]:
    """The incident as destinations see it (the webhook's ``data``, the telemetry line)."""
    return request.model_dump(mode="json", include=set(_EVENT_FIELDS))


class PublishOutcome(BaseModel):
    status: Literal["published", "commented", "failed"]
    external_id: str | None = None
    external_url: str | None = None
    attempts: int = 1
    error: str | None = None
    response_excerpt: str | None = None
    # Set when the destination answered that it is gone for good (e.g. HTTP 410): publishing there stops
    # until an operator re-enables it.
    disable_reason: str | None = None


ConfigT = TypeVar("ConfigT", bound=DestinationConfig)


class DestinationAdapter(ABC, Generic[ConfigT]):
    """Subclass as ``DestinationAdapter[KindConfig]``: ``self.config`` is then typed as that kind's config."""

    kind: ClassVar[str]

    def __init__(self, config: ConfigT, *, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    @property
    def id(self) -> str:
        return self.config.id

    @abstractmethod
    def readiness(self) -> Readiness:
        """Whether a publish could succeed now (config complete, secrets present). No network."""

    async def publish(self, request: PublishRequest, permit: PublishPermit) -> PublishOutcome:
        verify_permit(
            permit,
            receipt_id=request.receipt_id,
            destination_id=self.id,
            evidence_digest=request.evidence_digest,
            idempotency_key=request.idempotency_key,
        )
        readiness = self.readiness()
        if not readiness.ready:
            return PublishOutcome(
                status="failed", attempts=0, error="destination not ready: " + "; ".join(readiness.reasons)
            )
        return scrub_outcome(await self._deliver(request), self.secret_values())

    def secret_values(self) -> list[str]:
        """The resolved secrets this adapter sends; scrubbed from every outcome it returns."""
        return []

    @abstractmethod
    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        """Send the request. Must be idempotent on ``request.idempotency_key``."""


def scrub_outcome(outcome: PublishOutcome, secrets: list[str]) -> PublishOutcome:
    """The outcome with every occurrence of a secret replaced, so a receiver echoing a credential cannot
    plant it in a receipt: the adapter's own secrets first, then whatever redaction recognises (a
    receiver's reply is free text from outside, kept as the receipt's ``response_excerpt``)."""
    secrets = [s for s in secrets if len(s) >= 4]
    updates: dict[str, str] = {}
    for name in ("error", "response_excerpt", "external_id", "external_url", "disable_reason"):
        value = getattr(outcome, name)
        if isinstance(value, str):
            scrubbed = value
            for secret in secrets:
                scrubbed = scrubbed.replace(secret, "[redacted]")
            scrubbed = redact_text(scrubbed)
            if scrubbed != value:
                updates[name] = scrubbed
    return outcome.model_copy(update=updates) if updates else outcome
