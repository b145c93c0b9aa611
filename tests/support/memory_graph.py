"""What the outbound MCP destination writes into the real server-memory."""

from __future__ import annotations

import json

ENTITIES = json.dumps(
    [
        {
            "name": "$idempotency_key",
            "entityType": "incident",
            "observations": [
                "$draft.title",
                "severity: {$incident.severity}",
                "evidence digest: {$evidence.digest}",
                "fingerprint: {$incident.fingerprint}",
            ],
        }
    ]
)
