"""Scoped intake keys: report for one project (and optionally one source) on the HTTP intake endpoint, nothing else.

Random, shown once, stored as SHA-256 hashes, compared in constant time, disabled rather than deleted
(the audit log keeps naming them).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import bindparam
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql.compiler import Compiled
from sqlmodel import col, select

from incident_monitor.domain.models import IntakeKey, IntakeKeyBase, new_id
from incident_monitor.errors import CredentialError, InvalidInput, NotFound
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import REPORT
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.tokens import hash_token, last_use_due

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


# The lookup by hash, compiled once per dialect (see _read_key).
_KEYS = IntakeKey.__table__  # type: ignore[attr-defined]
_KEY_BY_HASH = select(_KEYS).where(_KEYS.c.key_hash == bindparam("key_hash"))


@lru_cache(maxsize=4)
def _compiled_key_by_hash(dialect: Dialect) -> tuple[Compiled, list[Callable[[Any], Any] | None]]:
    compiled = _KEY_BY_HASH.compile(dialect=dialect)
    return compiled, [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in _KEYS.columns]


def _read_key(engine: Engine, digest: str) -> tuple[IntakeKeyBase, str] | None:
    """The key row with this hash, read outside any unit of work.

    Every unit of work takes the engine's write lock and SQLite's (BEGIN IMMEDIATE), so reading the
    key in one made each intake request queue behind every report being written, twice. This is a
    plain read on a pooled connection: in autocommit (SQLite WAL) it sees every committed change,
    so a key disabled a moment ago is refused on its next request.
    """
    compiled, processors = _compiled_key_by_hash(engine.dialect)
    params = compiled.construct_params({"key_hash": digest})
    arguments: Any = [params[name] for name in compiled.positiontup or ()] if compiled.positional else params
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(compiled.string, arguments)
            values = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool (which ends any transaction the driver began)
    if values is None:
        return None
    row = {
        column.name: processor(value) if processor else value
        for column, processor, value in zip(_KEYS.columns, processors, values, strict=True)
    }
    return IntakeKeyBase.model_validate(row), row["key_hash"]


def _record_use(monitor: Monitor, key_id: str, now: datetime) -> None:
    """Write ``last_used_at`` (at most once a minute per key): the only write authentication does."""
    with monitor.session() as session:
        row = session.get(IntakeKey, key_id)
        if row is None or row.disabled_at is not None:
            raise CredentialError(f"intake key '{key_id}' was disabled; ask an operator for a new one")
        row.last_used_at = now
        session.add(row)


def authenticate_intake_key(monitor: Monitor, secret: str) -> IntakeKeyBase:
    """The key a secret stands for; CredentialError (never naming the secret) otherwise.

    Checked against the database on every request (no cache): a disabled key is refused at once.
    """
    digest = hash_token(secret)
    found = _read_key(monitor.engine, digest)
    if found is None or not hmac.compare_digest(found[1], digest):
        raise CredentialError("intake key not recognised: create one with `incident-monitor intake-keys create`")
    key = found[0]
    if key.disabled_at is not None:
        raise CredentialError(f"intake key '{key.key_id}' was disabled; ask an operator for a new one")
    now = monitor.clock()
    if last_use_due(key.last_used_at, now):
        _record_use(monitor, key.key_id, now)
        key.last_used_at = now
    return key
