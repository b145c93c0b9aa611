"""Destination state the config cannot hold: what the receivers said.

``DestinationState``: a destination a receiver declared gone (HTTP 410) is disabled here. A row
exists only while the destination is disabled; re-enabling deletes it. Readiness reads this table
(a local read, no network), so a disabled destination blocks preview and publish.

``DestinationDelivery``: how its publishes went lately (failures in a row, the last error and when),
so status can say a destination is failing; it never blocks a publish (the next one may succeed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from incident_monitor.domain.types import UTCDateTime, utcnow


class DestinationState(SQLModel, table=True):
    __tablename__ = "destination_states"

    destination_id: str = Field(primary_key=True)
    disabled_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reason: str


class DestinationDelivery(SQLModel, table=True):
    __tablename__ = "destination_deliveries"

    destination_id: str = Field(primary_key=True)
    consecutive_failures: int = 0
    last_error: str | None = None  # a PublishOutcome's error: adapters keep secrets out of it
    last_failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# No parameters, so no paramstyle: the same text runs on the raw driver connection or a SQLAlchemy one.
DISABLED_QUERY = "SELECT destination_id, disabled_at, reason FROM destination_states"


def disabled_reasons(rows: Iterable[Sequence[Any]]) -> dict[str, str]:
    """destination_id → why it is disabled, from DISABLED_QUERY's rows as the driver returns them."""
    return {row[0]: f"disabled since {row[1]}: {row[2]}" for row in rows}


def read_disabled(engine: Engine) -> dict[str, str]:
    """destination_id → why it is disabled, read outside any open unit of work.

    Readiness is asked from inside a governed call that already holds SQLite's write lock; a raw
    autocommit read (no BEGIN IMMEDIATE) does not wait for it.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(DISABLED_QUERY)
        rows = cursor.fetchall()
        cursor.close()
    finally:
        connection.close()
    return disabled_reasons(rows)
