"""The one canonical JSON form: what is hashed (evidence digests, policy versions) and what is signed or stored
byte for byte (webhook bodies, telemetry lines). Sorted keys, no spaces, UTF-8 kept as is."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
