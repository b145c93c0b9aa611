"""Telemetry destination: one JSON line per published incident in a local JSONL file.

Idempotent on the idempotency key: a re-publish finds its earlier line and appends nothing. The file
is scanned on every publish, which is fine for the volumes this destination sees.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import anyio

from incident_monitor.destinations.base import DestinationAdapter, PublishOutcome, PublishRequest, event_data
from incident_monitor.destinations.delivery import enabled_reasons
from incident_monitor.destinations.settings import TelemetryConfig
from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.readiness import Readiness

if sys.platform != "win32":
    import fcntl


# One lock per file serializes this process's threads; flock (where available) covers other processes.
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path.resolve(), threading.Lock())


class TelemetryAdapter(DestinationAdapter[TelemetryConfig]):
    kind = "telemetry"

    @property
    def file_path(self) -> Path:
        path = Path(self.config.path).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    def readiness(self) -> Readiness:
        reasons = enabled_reasons(self.config)
        problem = _writability_problem(self.file_path)
        if problem:
            reasons.append(problem)
        return Readiness(ready=not reasons, reasons=reasons)

    async def _deliver(self, request: PublishRequest) -> PublishOutcome:
        path = self.file_path
        record = {**event_data(request), "published_at": datetime.now(UTC).isoformat()}
        line = canonical_json(record).encode()
        try:
            line_number = await anyio.to_thread.run_sync(_append_once, path, request.idempotency_key, line)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return PublishOutcome(
                status="failed",
                attempts=1,
                error=f"could not write telemetry file {path}: {reason}; check the path and its permissions",
            )
        return PublishOutcome(status="published", external_id=f"{path.name}:{line_number}", attempts=1)


def _append_once(path: Path, idempotency_key: str, line: bytes) -> int:
    """Append ``line`` unless a line with this idempotency key exists; return that line's 1-based number."""
    with _lock_for(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as file:
            if sys.platform != "win32":
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file closes
            file.seek(0)
            count = 0
            last = b"\n"
            for count, existing in enumerate(file, start=1):
                if _key_of(existing) == idempotency_key:
                    return count
                last = existing
            # A torn last line (crash mid-write) is closed off so the new record starts on its own line.
            prefix = b"" if last.endswith(b"\n") else b"\n"
            file.write(prefix + line + b"\n")
            file.flush()
            os.fsync(file.fileno())
            return count + 1


def _key_of(raw: bytes) -> str | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None  # a torn or foreign line: skip it
    key = record.get("idempotency_key") if isinstance(record, dict) else None
    return key if isinstance(key, str) else None


def _writability_problem(path: Path) -> str | None:
    """Why ``path`` could not be appended to (without creating anything), or None."""
    if path.is_dir():
        return f"telemetry path {path} is a directory: set path to a file name"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"telemetry file {path} is not writable: check its permissions"
    ancestor = path.parent
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create directory {path.parent}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot write in {ancestor}: check its permissions or set path elsewhere"
    return None
