"""What the log sources have read, and which replica tails each one.

``LogSourceFile``: one row per file a source has read, keyed by the file's identity (device and inode),
so a rename (rotation) keeps its offset and a new file at the same path starts at zero. The row is
written in the same unit of work as the reports its bytes produced: after a crash either both are
stored or neither, so a restart neither loses nor repeats a line.

``LogSourceState``: one row per source: the lease (which replica tails it, until when; claimed with a
conditional UPDATE, so it works the same on SQLite and PostgreSQL) and its counters and last problem.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from incident_monitor.domain.types import UTCDateTime


class LogSourceFile(SQLModel, table=True):
    __tablename__ = "log_source_files"

    source_id: str = Field(primary_key=True)  # the [[sources]] id
    # 64-bit: device and inode numbers, offsets and sizes outgrow PostgreSQL's 32-bit INTEGER (SQLite's is 64-bit).
    device: int = Field(primary_key=True, sa_type=BigInteger)
    inode: int = Field(primary_key=True, sa_type=BigInteger)
    path: str  # where the file was last seen, relative to the workspace root
    offset: int = Field(default=0, sa_type=BigInteger)  # bytes consumed: every complete line before it is reported
    size: int = Field(default=0, sa_type=BigInteger)  # the file's size when last read (smaller now: truncated)
    head_digest: str = ""  # sha256 of its first bytes: an inode reused by a new file is told apart
    updated_at: datetime = Field(sa_type=UTCDateTime)


class LogSourceState(SQLModel, table=True):
    __tablename__ = "log_source_states"

    source_id: str = Field(primary_key=True)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_polled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reports: int = 0  # reports sent through intake
    repeats: int = 0  # repeats within the cooldown (occurrence count bumped, no report)
    rejected: int = 0  # reports intake refused (noise, limits)
    undecodable_bytes: int = Field(default=0, sa_type=BigInteger)  # bytes skipped because they were not UTF-8
    warnings: int = 0  # truncations, rotated files that vanished, over-long lines
    last_problem: str | None = None  # why it could not read, e.g. a path refused (no secrets: paths only)
    last_problem_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
