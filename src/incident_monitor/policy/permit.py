"""Publish permits: the only key that opens a destination adapter.

The publishing service mints a permit after every gate passed and the pending receipt is committed;
adapters refuse any call without a valid one. The key lives only in this process, so a permit cannot
be forged from outside nor carried across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

_PERMIT_KEY = secrets.token_bytes(32)


class PermitError(PermissionError):
    """A destination adapter was called without a valid permit for exactly this publish."""


@dataclass(frozen=True, slots=True)
class PublishPermit:
    receipt_id: str
    destination_id: str
    evidence_digest: str
    idempotency_key: str
    signature: str


def _sign(receipt_id: str, destination_id: str, evidence_digest: str, idempotency_key: str) -> str:
    message = "\x1f".join((receipt_id, destination_id, evidence_digest, idempotency_key)).encode()
    return hmac.new(_PERMIT_KEY, message, hashlib.sha256).hexdigest()


def issue_permit(*, receipt_id: str, destination_id: str, evidence_digest: str, idempotency_key: str) -> PublishPermit:
    """Mint a permit. Called only by the publishing service, after every gate passed."""
    return PublishPermit(
        receipt_id=receipt_id,
        destination_id=destination_id,
        evidence_digest=evidence_digest,
        idempotency_key=idempotency_key,
        signature=_sign(receipt_id, destination_id, evidence_digest, idempotency_key),
    )


def verify_permit(
    permit: object, *, receipt_id: str, destination_id: str, evidence_digest: str, idempotency_key: str
) -> None:
    """Raise PermitError unless ``permit`` was minted here for exactly this publish."""
    if not isinstance(permit, PublishPermit):
        raise PermitError("destination adapters run only with a publish permit from the policy layer")
    expected = _sign(receipt_id, destination_id, evidence_digest, idempotency_key)
    if not hmac.compare_digest(permit.signature, expected) or (
        permit.receipt_id,
        permit.destination_id,
        permit.evidence_digest,
        permit.idempotency_key,
    ) != (receipt_id, destination_id, evidence_digest, idempotency_key):
        raise PermitError("publish permit does not match this publish (forged, or issued for another one)")
