"""Console sign-in sessions: an encrypted cookie, so any replica can serve any request.

The cookie carries the credential the operator signed in with (a monitor token or a JWT), its
session id and expiry, encrypted and authenticated with Fernet (AES + HMAC) under a key every
replica shares. Each request decrypts it and verifies the credential again through the HTTP app's
own authenticator, so a revoked or expired token ends the session at once. Nothing is stored on the
server; the browser never sees the credential in readable form (HttpOnly, encrypted).

The key comes from ``INCIDENT_MONITOR_CONSOLE_KEY`` (one or more Fernet keys, comma-separated, the
first used to encrypt: rotation), else from ``console-session.key`` in the data directory (created
on first use, mode 0600; replicas sharing a data directory share it).

CSRF: every form carries a token derived from the session id (HMAC under the same key); sign-in
carries a random value that must match a short-lived cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from incident_monitor.errors import ConfigError

KEY_VARIABLE = "INCIDENT_MONITOR_CONSOLE_KEY"
KEY_FILENAME = "console-session.key"
SESSION_COOKIE = "im_console"
LOGIN_COOKIE = "im_console_login"
SESSION_LIFETIME = timedelta(hours=8)
LOGIN_LIFETIME = timedelta(minutes=30)


def _read_key_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes creating it at once, one wins and the other reads the winner's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


def load_keys(data_dir: Path) -> list[bytes]:
    """The session keys, newest first: from the environment, else the data directory's key file."""
    configured = os.environ.get(KEY_VARIABLE, "").strip()
    raw = [k.strip().encode() for k in configured.split(",") if k.strip()] if configured else []
    if not raw:
        raw = [_read_key_file(data_dir / KEY_FILENAME)]
    try:
        for key in raw:
            Fernet(key)
    except ValueError:
        source = KEY_VARIABLE if configured else str(data_dir / KEY_FILENAME)
        raise ConfigError(
            f"{source}: not a valid console session key; generate one with "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`'
        ) from None
    return raw


@dataclass(frozen=True)
class ConsoleSession:
    credential: str
    session_id: str
    expires_at: datetime


class SessionCodec:
    """Seal and open session cookies, and derive the CSRF token of a session."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = MultiFernet([Fernet(k) for k in keys])
        # Derived from the current key, so replicas agree on CSRF tokens without another secret.
        self.csrf_key = hashlib.sha256(b"incident-monitor console csrf\0" + keys[0]).digest()

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SessionCodec:
        return cls(load_keys(data_dir))

    def seal(self, credential: str, now: datetime) -> tuple[str, ConsoleSession]:
        session = ConsoleSession(credential, secrets.token_urlsafe(16), now + SESSION_LIFETIME)
        payload = {"c": credential, "s": session.session_id, "e": session.expires_at.isoformat()}
        return self.keys.encrypt(json.dumps(payload).encode()).decode(), session

    def open(self, cookie: str, now: datetime) -> ConsoleSession | None:
        """The session a cookie holds, or None when it is forged, from another key, or expired."""
        try:
            payload = json.loads(self.keys.decrypt(cookie.encode()))
            session = ConsoleSession(str(payload["c"]), str(payload["s"]), datetime.fromisoformat(payload["e"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > now else None

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self.csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, session_id: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(session_id), str(presented))


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_nonce_valid(cookie: str | None, presented: str | None) -> bool:
    return bool(cookie) and bool(presented) and hmac.compare_digest(str(cookie), str(presented))
