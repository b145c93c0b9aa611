"""Token-bucket rate limits per principal (MCP routes), per intake key, and per client address for
refused intake credentials (401s: a key cannot be guessed faster than the bucket refills).

A refused request gets 429 with ``Retry-After`` (whole seconds, at least 1). Buckets live in this
process; several replicas would each allow the configured rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Send

from incident_monitor.server.asgi_json import send_json

MAX_BUCKETS = 10_000  # least recently used buckets are dropped beyond this (a dropped bucket starts full)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # The intake endpoint takes tokens from worker threads, the MCP guard from the event loop.
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Spend one token for ``key``: None when allowed, else the seconds until one is available."""
        with self._lock:
            return self._take(key)

    def _refilled(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return bucket

    def _take(self, key: str) -> float | None:
        bucket = self._refilled(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def blocked(self, key: str) -> int | None:
        """Without spending: None when ``key`` has a token left, else the whole seconds until it has one."""
        with self._lock:
            tokens = self._refilled(key).tokens
        return None if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.rate))

    def retry_after(self, key: str) -> int | None:
        """Spend one token: None when allowed, else the whole seconds to put in ``Retry-After`` (at least 1)."""
        wait = self.take(key)
        return None if wait is None else max(1, math.ceil(wait))

    async def refuse(self, key: str, send: Send) -> bool:
        """Answer 429 and return True when ``key`` is over its limit."""
        retry_after = self.retry_after(key)
        if retry_after is None:
            return False
        await send_json(
            send,
            429,
            {
                "error": "rate_limited",
                "error_description": f"too many requests; retry after {retry_after} s (http.rate_limits)",
            },
            headers=[(b"retry-after", str(retry_after).encode())],
        )
        return True
