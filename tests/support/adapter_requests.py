"""Publish requests, permits and a webhook adapter for destination tests."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from incident_monitor.destinations.base import PublishOutcome, PublishRequest
from incident_monitor.destinations.settings import WebhookConfig
from incident_monitor.destinations.webhook import WebhookAdapter
from incident_monitor.policy.permit import issue_permit

SECRET_VAR = "IM_TEST_WEBHOOK_SECRET"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def make_request(**overrides: Any) -> PublishRequest:
    fields: dict[str, Any] = {
        "receipt_id": "rcpt_1",
        "idempotency_key": "idem_0123456789abcdef",
        "draft_id": "draft_1",
        "incident_id": "inc_1",
        "destination_id": "hook",
        "route_id": "route_1",
        "title": "Checkout latency over SLO",
        "body": "p99 latency 2.3 s for 15 min",
        "severity": "high",
        "labels": ["checkout", "latency"],
        "fingerprint": "fp_abc",
        "evidence": {"p99_ms": 2300, "window": "15m"},
        "evidence_digest": "sha256:" + "0" * 64,
    }
    fields.update(overrides)
    return PublishRequest(**fields)


def permit_for(request: PublishRequest, **overrides: str) -> Any:
    fields = {
        "receipt_id": request.receipt_id,
        "destination_id": request.destination_id,
        "evidence_digest": request.evidence_digest,
        "idempotency_key": request.idempotency_key,
    }
    fields.update(overrides)
    return issue_permit(**fields)


def make_adapter(url: str, tmp_path: Path, **config: Any) -> WebhookAdapter:
    settings: dict[str, Any] = {
        "id": "hook",
        "url": url,
        "secret": f"env:{SECRET_VAR}",
        "allow_insecure_http": True,
        "allow_private_networks": True,
        "backoff_seconds": 0,
        "timeout_seconds": 5,
    }
    settings.update(config)
    return WebhookAdapter(WebhookConfig(**settings), data_dir=tmp_path)


async def publish(adapter: WebhookAdapter, request: PublishRequest | None = None) -> PublishOutcome:
    request = request or make_request()
    return await adapter.publish(request, permit_for(request))
