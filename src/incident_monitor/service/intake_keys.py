"""Scoped intake keys: report for one project (and optionally one source) on the HTTP intake endpoint, nothing else.

Random, shown once, stored as SHA-256 hashes, compared in constant time, disabled rather than deleted
(the audit log keeps naming them).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from incident_monitor.domain.models import IntakeKey, IntakeKeyBase, new_id, table_of
from incident_monitor.errors import CredentialError, InvalidInput, NotFound
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import REPORT
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import hash_token, last_use_due
from incident_monitor.store.pinned_reads import PinnedReads, first_committed

INTAKE_KEY_PREFIX = "imk_"
INTAKE_KEY_SCOPES = (REPORT,)


class CreatedIntakeKey(BaseModel):
    key: IntakeKeyBase
    secret: str  # shown once


class IntakeKeyView(IntakeKeyBase):
    status: Literal["active", "disabled"]


def key_principal(key: IntakeKeyBase) -> Principal:
    """Who a report through this key was made by, in the audit log: the key, holding only report."""
    return Principal(name=f"intake-key:{key.key_id}", scopes=frozenset(INTAKE_KEY_SCOPES), kind="intake_key")


def looks_like_intake_key(secret: str) -> bool:
    return secret.startswith(INTAKE_KEY_PREFIX)


def create_intake_key(
    monitor: Monitor, principal: Principal, *, project_id: str, source_id: str | None = None
) -> CreatedIntakeKey:
    arguments = {"project_id": project_id, "source_id": source_id}
    with governed_call(monitor, principal, "manage_intake_keys", arguments, subject_id=project_id) as call:
        project = monitor.config.project(project_id)
        if project is None:
            known = ", ".join(p.id for p in monitor.config.projects) or "(none configured)"
            raise InvalidInput(
                f"project: unknown project '{project_id[:64]}'; add a [[projects]] entry to the config "
                f"or use one of: {known}"
            )
        if source_id is not None and source_id not in project.sources:
            raise InvalidInput(
                f"source: '{source_id[:64]}' is not a source of project '{project.id}'; add it to that "
                f"project's sources or use one of: {', '.join(project.sources) or '(none)'}"
            )
        secret = INTAKE_KEY_PREFIX + secrets.token_urlsafe(32)
        row = IntakeKey(
            key_id=new_id("ik"),
            project_id=project.id,
            source_id=source_id,
            scopes=list(INTAKE_KEY_SCOPES),
            created_at=monitor.clock(),
            key_hash=hash_token(secret),
        )
        call.session.add(row)
        call.subject_id = row.key_id
        call.notes.append(f"intake key for project {project.id}" + (f", source {source_id}" if source_id else ""))
        call.session.flush()
        return CreatedIntakeKey(key=IntakeKeyBase.model_validate(row, from_attributes=True), secret=secret)


def list_intake_keys(monitor: Monitor, principal: Principal) -> list[IntakeKeyView]:
    with governed_call(monitor, principal, "manage_intake_keys", {"list": True}) as call:
        rows = call.session.exec(select(IntakeKey).order_by(col(IntakeKey.created_at))).all()
        return [
            IntakeKeyView.model_validate(
                {
                    **IntakeKeyBase.model_validate(r, from_attributes=True).model_dump(),
                    "status": "disabled" if r.disabled_at else "active",
                }
            )
            for r in rows
        ]


def disable_intake_key(monitor: Monitor, principal: Principal, key_id: str) -> IntakeKeyBase:
    with governed_call(monitor, principal, "manage_intake_keys", {"disable": key_id}, subject_id=key_id) as call:
        row = call.session.get(IntakeKey, key_id)
        if row is None:
            raise NotFound(f"key_id: no intake key '{key_id[:64]}'; see `incident-monitor intake-keys list`")
        if row.disabled_at is None:
            row.disabled_at = monitor.clock()
            call.session.add(row)
            call.session.flush()
        return IntakeKeyBase.model_validate(row, from_attributes=True)


_KEYS = table_of(IntakeKey)
_KEY_BY_HASH = sa_select(_KEYS).where(_KEYS.c.key_hash == bindparam("key_hash"))


def _read_key(monitor: Monitor, digest: str, reads: PinnedReads | None) -> IntakeKeyBase | None:
    """The key with this hash, read outside any unit of work (store.engine.read_scope, or a read connection
    kept open: store/pinned_reads.py): an intake request never queues behind the reports being written just
    to check its key."""
    row = first_committed(monitor.engine, _KEY_BY_HASH, {"key_hash": digest}, reads)
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return IntakeKeyBase.model_validate(dict(row))


def _record_use(monitor: Monitor, key_id: str, now: datetime) -> None:
    """Write ``last_used_at`` (at most once a minute per key): the only write authentication does."""
    with monitor.session() as session:
        row = session.get(IntakeKey, key_id)
        if row is None or row.disabled_at is not None:
            raise CredentialError(f"intake key '{key_id}' was disabled; ask an operator for a new one")
        row.last_used_at = now
        session.add(row)


def authenticate_intake_key(monitor: Monitor, secret: str, reads: PinnedReads | None = None) -> IntakeKeyBase:
    """The key a secret stands for; CredentialError (never naming the secret) otherwise.

    Checked against the database on every request (no cache): a disabled key is refused at once. ``reads``:
    the server's read connections kept open (the same committed state, half the cost per check).
    """
    digest = hash_token(secret)
    key = _read_key(monitor, digest, reads)
    if key is None:
        raise CredentialError("intake key not recognised: create one with `incident-monitor intake-keys create`")
    if key.disabled_at is not None:
        raise CredentialError(f"intake key '{key.key_id}' was disabled; ask an operator for a new one")
    now = monitor.clock()
    if last_use_due(key.last_used_at, now):
        _record_use(monitor, key.key_id, now)
        key.last_used_at = now
    return key
