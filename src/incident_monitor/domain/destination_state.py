"""Destination state the config cannot hold: a destination a receiver declared gone (HTTP 410) is disabled here.

A row exists only while the destination is disabled; re-enabling deletes it. Readiness reads this
table (a local read, no network), so a disabled destination blocks preview and publish.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from incident_monitor.domain.types import UTCDateTime, utcnow


class DestinationState(SQLModel, table=True):
    __tablename__ = "destination_states"

    destination_id: str = Field(primary_key=True)
    disabled_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reason: str


def read_disabled(engine: Engine) -> dict[str, str]:
    """destination_id → why it is disabled, read outside any open unit of work.

    Readiness is asked from inside a governed call that already holds SQLite's write lock; a raw
    autocommit read (no BEGIN IMMEDIATE) does not wait for it. No parameters, so no paramstyle.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT destination_id, disabled_at, reason FROM destination_states")
        rows = cursor.fetchall()
        cursor.close()
    finally:
        connection.close()
    return {row[0]: f"disabled since {row[1]}: {row[2]}" for row in rows}
