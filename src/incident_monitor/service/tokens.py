"""Agent and operator tokens: random, shown once, stored as SHA-256 hashes, expiring, revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from incident_monitor.domain.models import ApiToken, ApiTokenBase, new_id, table_of
from incident_monitor.errors import CredentialError, InvalidInput, NotFound
from incident_monitor.policy.principal import Principal
from incident_monitor.policy.scopes import APPROVE, parse_scopes
from incident_monitor.service.governed import governed_call
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.pinned_reads import PinnedReads, first_committed

TOKEN_PREFIX = "imt_"  # noqa: S105 - a public prefix, not a secret
_NAME_PATTERN = "letters, digits, '.', '_', '-' (1-64 characters)"


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


# "Last used" is kept to the minute: recording every use would make each authenticated request a
# write transaction (and a disk sync) of its own.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def last_use_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a credential's ``last_used_at`` is stale enough to be written again."""
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION or now < last_used_at


class TokenView(ApiTokenBase):
    status: Literal["active", "expired", "revoked"]


def token_status(row: ApiTokenBase, now: datetime) -> Literal["active", "expired", "revoked"]:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


class CreatedToken(BaseModel):
    token: ApiTokenBase
    secret: str  # shown once


def _valid_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise InvalidInput(f"name: '{name[:64]}' is not valid; use {_NAME_PATTERN}")
    if name.startswith(("operator:", "local-", "system:")):
        raise InvalidInput("name: reserved prefix; choose another name")
    return name


def create_token(
    monitor: Monitor,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_in_days: int | None = None,
) -> CreatedToken:
    arguments = {"name": name, "scopes": scopes, "expires_in_days": expires_in_days}
    with governed_call(monitor, principal, "manage_tokens", arguments, subject_id=name) as call:
        name = _valid_name(name)
        try:
            parsed = parse_scopes(scopes)
        except ValueError as exc:
            raise InvalidInput(f"scopes: {exc}") from None
        if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
            raise InvalidInput("expires_in_days: use 1 to 3650, or omit it for a token that does not expire")
        if call.session.exec(select(ApiToken).where(ApiToken.name == name)).first():
            raise InvalidInput(f"name: a token named '{name}' exists; revoke it first or choose another name")
        now = monitor.clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            token_id=new_id("tok"),
            name=name,
            scopes=sorted(parsed),
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            token_hash=hash_token(secret),
        )
        call.session.add(row)
        if APPROVE in parsed and len(parsed) > 1 and "incident_monitor:publish" in parsed:
            call.notes.append("token holds both publish and approve (separate them where you can)")
        call.session.flush()
        return CreatedToken(token=ApiTokenBase.model_validate(row, from_attributes=True), secret=secret)


def list_tokens(monitor: Monitor, principal: Principal) -> list[TokenView]:
    with governed_call(monitor, principal, "manage_tokens", {"list": True}) as call:
        rows = call.session.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()
        now = monitor.clock()
        return [
            TokenView.model_validate(
                {**ApiTokenBase.model_validate(r, from_attributes=True).model_dump(), "status": token_status(r, now)}
            )
            for r in rows
        ]


def revoke_token(monitor: Monitor, principal: Principal, name: str) -> ApiTokenBase:
    with governed_call(monitor, principal, "manage_tokens", {"revoke": name}, subject_id=name) as call:
        row = call.session.exec(select(ApiToken).where(ApiToken.name == name)).first()
        if row is None:
            raise NotFound(f"name: no token named '{name}'; see `incident-monitor tokens list`")
        if row.revoked_at is None:
            row.revoked_at = monitor.clock()
            call.session.add(row)
            call.session.flush()
        return ApiTokenBase.model_validate(row, from_attributes=True)


def reissue_token(monitor: Monitor, principal: Principal, prefix: str, scopes: list[str]) -> CreatedToken:
    """Revoke the active tokens named ``prefix…`` and create a fresh one (a tool's single current token)."""
    for token in list_tokens(monitor, principal):
        if token.name.startswith(prefix) and token.status == "active":
            revoke_token(monitor, principal, token.name)
    return create_token(monitor, principal, name=prefix + secrets.token_hex(3), scopes=scopes)


_TOKENS = table_of(ApiToken)
_TOKEN_BY_HASH = sa_select(_TOKENS).where(_TOKENS.c.token_hash == bindparam("token_hash"))


def kept_token_reads(monitor: Monitor) -> PinnedReads:
    """Read connections kept open for ``authenticate_token`` (store/pinned_reads.py), released when the
    monitor closes: a server checks a credential on every request."""
    reads = PinnedReads(monitor.engine)
    monitor.on_close.append(lambda _: reads.close())
    return reads


def authenticate_token(monitor: Monitor, secret: str, reads: PinnedReads | None = None) -> Principal:
    """The principal a token stands for; CredentialError (never naming the token) otherwise.

    Checked on every request against the latest committed state (a revoked token is refused at once),
    read outside any unit of work so that authenticating never waits behind a write in progress: on
    ``reads`` (connections kept open, the same committed state at a third of the cost), else on a
    connection of its own.
    """
    digest = hash_token(secret)
    row = first_committed(monitor.engine, _TOKEN_BY_HASH, {"token_hash": digest}, reads)
    if row is None or not hmac.compare_digest(row["token_hash"], digest):
        raise CredentialError("token not recognised: create one with `incident-monitor tokens create`")
    token = ApiTokenBase.model_validate(dict(row))
    now = monitor.clock()
    if token.revoked_at is not None:
        raise CredentialError(f"token '{token.name}' was revoked at {token.revoked_at.isoformat()}; issue a new one")
    if token.expires_at is not None and token.expires_at <= now:
        raise CredentialError(f"token '{token.name}' expired at {token.expires_at.isoformat()}; issue a new one")
    if last_use_due(token.last_used_at, now):
        _record_use(monitor, token.token_id, now)
    return Principal(name=token.name, scopes=frozenset(token.scopes), kind="agent", token_id=token.token_id)


def _record_use(monitor: Monitor, token_id: str, now: datetime) -> None:
    """Write ``last_used_at`` (at most once a minute per token): the only write authentication does."""
    with monitor.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            raise CredentialError("token was revoked; issue a new one")
        row.last_used_at = now
        session.add(row)
