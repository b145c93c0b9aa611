"""A code-change run delegated to a coding-agent platform (seed 002), and its per-launch webhook secret.

Our ``run_id`` (``ccr_…``) is made when the change is requested, before any launch, so the webhook URL and secret
are known before the platform answers and a retried launch sends the same ones. The platform's own id is
``platform_run_id``.

Per-launch secrets are never stored: each is an HMAC of our run id under one random key kept in the data
directory (mode 0600), so the webhook endpoint re-derives it to verify, and a leaked run secret says nothing
about another run's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError, field_validator
from sqlmodel import Field, SQLModel

from incident_monitor.domain.types import UTCDateTime, utcnow

INTERFACE_VERSION = "2026-06-12"
INTERFACE_HEADER = "X-Incident-Interface-Version"
CODE_CHANGE_EVENT = "code_change.requested"
FOLLOW_UP_EVENT = "code_change.follow_up"
CODE_CHANGE_EVENTS = frozenset({CODE_CHANGE_EVENT, FOLLOW_UP_EVENT})
MAX_SUMMARY_CHARS = 2_000
MAX_URL_CHARS = 2_000
KEY_FILENAME = "code-change-webhooks.key"


class CodeChangeStatus(StrEnum):
    requested = "requested"  # the draft exists, awaiting approval and publish_draft
    running = "running"
    finished = "finished"
    error = "error"  # the platform reported error
    failed = "failed"  # we decided it failed (finished without pr_url, past max_run_minutes, launch failed)
    stopped = "stopped"

    @property
    def terminal(self) -> bool:
        return self in (
            CodeChangeStatus.finished,
            CodeChangeStatus.error,
            CodeChangeStatus.failed,
            CodeChangeStatus.stopped,
        )


class CodeChangeRunBase(SQLModel):
    run_id: str = Field(primary_key=True)
    incident_id: str = Field(index=True)
    destination_id: str
    repository: str
    status: CodeChangeStatus = Field(default=CodeChangeStatus.requested, index=True)
    summary: str = ""
    pr_url: str | None = None
    branch: str | None = None
    platform_url: str | None = None
    failure: str | None = None
    follow_ups: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# What the read tools return. No docstrings (they would become schema descriptions): get_code_change and
# list_code_changes are in the default agent's tools/list, whose size is budgeted (issue 10).
class CodeChangeSummary(BaseModel):
    run_id: str
    incident_id: str
    status: CodeChangeStatus
    pr_url: str | None
    updated_at: datetime


class CodeChangeView(CodeChangeSummary):
    summary: str
    branch: str | None
    platform_url: str | None
    created_at: datetime
    finished_at: datetime | None


class CodeChangeRun(CodeChangeRunBase, table=True):
    __tablename__ = "code_change_runs"

    platform_run_id: str | None = Field(default=None, index=True)
    draft_id: str = Field(index=True)
    receipt_id: str | None = None
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # when the launch (or follow-up) ran
    summary_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # the observation the summary is from
    next_poll_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    # The poll lease: the replica polling this run now, and until when (a lapsed lease is anyone's).
    poll_owner: str | None = None
    poll_lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


def webhook_key(data_dir: Path) -> bytes:
    """The data directory's key for per-launch secrets, created (0600) on first use."""
    path = data_dir / KEY_FILENAME
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its key
            return bytes.fromhex(path.read_text().strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex())
        return key


def launch_secret(key: bytes, run_id: str) -> str:
    """The Standard Webhooks secret ('whsec_<base64>') for one run's callbacks."""
    digest = hmac.new(key, f"code-change-webhook:{run_id}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


# --- what the platform says (untrusted) -------------------------------------------------------------------


def web_url(value: Any) -> str | None:
    """An http(s) URL of bounded length, else None (never a javascript: or data: link shown to responders)."""
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS or not value.isprintable() or " " in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return value


class PlatformStatus(BaseModel):
    """A validated ``GET /agents/{id}`` answer or webhook body: bad fields are dropped, never trusted."""

    status: Literal["running", "finished", "error"]
    summary: str = ""
    pr_url: str | None = None
    branch: str | None = None

    @field_validator("summary", mode="before")
    @classmethod
    def _summary(cls, value: Any) -> str:
        return value[:MAX_SUMMARY_CHARS] if isinstance(value, str) else ""

    @field_validator("pr_url", mode="before")
    @classmethod
    def _pr_url(cls, value: Any) -> str | None:
        return web_url(value)

    @field_validator("branch", mode="before")
    @classmethod
    def _branch(cls, value: Any) -> str | None:
        return value[:255] if isinstance(value, str) and value.isprintable() else None


def parse_status(raw: bytes) -> PlatformStatus | None:
    """The platform's status document, or None when it is not one."""
    try:
        return PlatformStatus.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
