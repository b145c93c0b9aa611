"""What the surface tests read back: every log record, every table, every file under a data dir."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from support.databases import rows_text
from support.mcp_helpers import error_text
from support.receivers import WebhookReceiver


class LogRecords(logging.Handler):
    """Keeps every record: message, arguments, extra fields and traceback, as text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{self.format(record)} {vars(record)!r}")


@contextmanager
def all_logs() -> Iterator[LogRecords]:
    """Every record logged at DEBUG and above while the block runs."""
    records = LogRecords()
    root = logging.getLogger()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(records)
        root.setLevel(level)


def tables(data_dir: Path, *names: str) -> str:
    """The rows of the named tables (all tables when none is named) of the database at ``data_dir``, as text."""
    return rows_text(data_dir, *names)


def files(data_dir: Path) -> str:
    """Every byte under ``data_dir`` (database, WAL, telemetry), which also holds freed pages SQL no longer shows."""
    return "\n".join(
        path.read_bytes().decode("utf-8", "replace") for path in sorted(data_dir.rglob("*")) if path.is_file()
    )


def deliveries(receiver: WebhookReceiver, data_dir: Path) -> str:
    """What the webhook receiver got (bodies and headers) and the telemetry file."""
    telemetry = data_dir / "telemetry.jsonl"
    return "\n".join(
        [f"{d.body.decode()} {d.headers!r}" for d in receiver.deliveries]
        + [telemetry.read_text() if telemetry.exists() else ""]
    )


async def recorded_ok(client: Client, seen: list[str], tool: str, **arguments: Any) -> dict[str, Any]:
    """Call ``tool`` expecting success; the whole result (content and structured content) goes in ``seen``."""
    result = await client.call_tool(tool, arguments)
    seen.append(result.model_dump_json())
    assert not result.is_error, f"{tool} refused: {error_text(result)}"
    assert result.structured_content is not None
    return result.structured_content


async def recorded_refusal(client: Client, seen: list[str], tool: str, **arguments: Any) -> str:
    """Call ``tool`` expecting a refusal; the whole result goes in ``seen``; returns the error text."""
    result = await client.call_tool(tool, arguments)
    seen.append(result.model_dump_json())
    assert result.is_error, f"{tool} should have been refused"
    return error_text(result)
