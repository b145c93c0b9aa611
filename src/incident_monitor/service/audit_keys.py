"""The audit key ring: the secrets that MAC audit rows and sign checkpoints, never stored in the database.

Where the keys come from, first match wins:

1. ``INCIDENT_MONITOR_AUDIT_KEY``: one or more secrets (at least 32 characters each), comma-separated,
   the first current and the others kept so rows written under them still verify;
2. a key file: ``INCIDENT_MONITOR_AUDIT_KEY_FILE`` or ``[audit] key_file``;
3. the default key file ``audit-keys.json`` beside the config file when that directory is a private
   one (``init``'s: a ``secrets.env`` beside the config), else in the user's config dir (platformdirs).

A key file that does not exist yet is created (0600, in a 0700 directory) with a fresh key.

A key file is JSON: ``{"current": id, "keys": [{"id", "secret", "created_at"}]}``. Keys are known by
id (a digest of the secret) and every audit row names the id of the key that MACs it; rotating adds
a key and makes it current, so older rows keep verifying under theirs. The checkpoint signing key
(Ed25519) is derived from each audit key, so one secret is all there is to keep safe, and its public
half is what an offline verifier needs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from incident_monitor.config import AuditSettings
from incident_monitor.errors import ConfigError

KEY_ENV = "INCIDENT_MONITOR_AUDIT_KEY"
KEY_FILE_ENV = "INCIDENT_MONITOR_AUDIT_KEY_FILE"
DEFAULT_KEY_FILENAME = "audit-keys.json"
MIN_SECRET_CHARS = 32
_SIGNING_LABEL = b"incident-monitor audit checkpoint signing key v1"


def default_key_dir() -> Path:
    return platformdirs.user_config_path("incident-monitor")


def key_id_for(secret: bytes) -> str:
    return "ak_" + hashlib.sha256(b"incident-monitor audit key id\0" + secret).hexdigest()[:16]


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A checkpoint public key as printed by ``audit public-key`` (64 hex characters)."""
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError:
        raise ConfigError("public key: expected 64 hex characters (as printed by `audit public-key`)") from None


@dataclass(frozen=True)
class AuditKey:
    key_id: str
    secret: bytes = field(repr=False)

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        seed = hmac.new(self.secret, _SIGNING_LABEL, hashlib.sha256).digest()
        return Ed25519PrivateKey.from_private_bytes(seed)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()


@dataclass
class AuditKeyring:
    """The current key (MACs new rows, signs new checkpoints) and every older one still trusted."""

    current: AuditKey
    keys: dict[str, AuditKey]
    source: str  # where the keys came from, for status and posture (never the secret)
    key_file: Path | None = None
    # False for a scratch monitor's throwaway key: it never signs a checkpoint (it would land in the real file).
    signs_checkpoints: bool = True
    # Digests of checkpoint lines whose signature verified under these keys (posture re-reads the file often).
    verified_checkpoints: set[bytes] = field(default_factory=set, repr=False)

    @classmethod
    def ephemeral(cls) -> AuditKeyring:
        """A throwaway key for scratch monitors (posture probes' private databases)."""
        key = AuditKey(key_id_for(secret := secrets.token_bytes(32)), secret)
        return cls(current=key, keys={key.key_id: key}, source="ephemeral (in memory)", signs_checkpoints=False)

    def get(self, key_id: str | None) -> AuditKey | None:
        return self.keys.get(key_id) if key_id else None

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {key_id: key.public_key for key_id, key in self.keys.items()}


def _from_env(value: str) -> AuditKeyring:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or any(len(p) < MIN_SECRET_CHARS for p in parts):
        raise ConfigError(
            f"{KEY_ENV}: each comma-separated key must be at least {MIN_SECRET_CHARS} characters "
            '(generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    keys = [AuditKey(key_id_for(p.encode()), p.encode()) for p in parts]
    return AuditKeyring(current=keys[0], keys={k.key_id: k for k in keys}, source=f"environment ({KEY_ENV})")


def _new_key_entry() -> dict[str, str]:
    secret = secrets.token_bytes(32)
    return {
        "id": key_id_for(secret),
        "secret": base64.b64encode(secret).decode(),
        "created_at": datetime.now(UTC).isoformat(),
    }


def _write_key_file(path: Path, document: dict[str, object]) -> None:
    """Written whole to a 0600 temporary file, then renamed over the old one (never half a key file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _create_key_file(path: Path, document: dict[str, object]) -> None:
    """Like _write_key_file, but only if no key file exists: of processes starting together (replicas on one
    host), the first one's key is the one every process reads."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first: theirs stands
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_key_file(path: Path) -> AuditKeyring:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys = [AuditKey(entry["id"], base64.b64decode(entry["secret"], validate=True)) for entry in document["keys"]]
        current_id = document["current"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"audit key file {path} is not a valid key file (JSON with 'current' and 'keys')") from None
    by_id = {key.key_id: key for key in keys}
    for key in keys:
        if key_id_for(key.secret) != key.key_id:
            raise ConfigError(f"audit key file {path}: key {key.key_id} does not match its secret (edited by hand?)")
    if current_id not in by_id:
        raise ConfigError(f"audit key file {path}: 'current' names no key in 'keys'")
    return AuditKeyring(current=by_id[current_id], keys=by_id, source=f"key file {path}", key_file=path)


def key_file_path(settings: AuditSettings, config_dir: Path | None = None) -> Path:
    configured = os.environ.get(KEY_FILE_ENV) or settings.key_file
    if configured:
        return Path(configured).expanduser()
    return (config_dir or default_key_dir()) / DEFAULT_KEY_FILENAME


def load_keyring(settings: AuditSettings, config_dir: Path | None = None) -> AuditKeyring:
    """The key ring for this process; creates the default key file (0600) when nothing is configured.

    ``config_dir``: the directory of the config file in use; the default key file goes beside it (where
    ``incident-monitor init`` keeps the secrets), else in the user's config dir.
    """
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return _from_env(from_env)
    path = key_file_path(settings, config_dir)
    # A configured file that is missing is created too: a key that vanished shows up at the next
    # verify (checkpoints signed by a key no longer in the ring), not as a refusal to start.
    if not path.exists():
        entry = _new_key_entry()
        _create_key_file(path, {"current": entry["id"], "keys": [entry]})
    return _read_key_file(path)


def rotate_key_file(keyring: AuditKeyring) -> AuditKeyring:
    """Add a fresh key to the key file and make it current; older keys stay to verify older rows."""
    if keyring.key_file is None:
        raise ConfigError(
            f"the audit keys come from {keyring.source}: rotate by putting a new key first in {KEY_ENV} "
            "and keeping the old ones after it (comma-separated)"
        )
    document = json.loads(keyring.key_file.read_text(encoding="utf-8"))
    entry = _new_key_entry()
    document["keys"].append(entry)
    document["current"] = entry["id"]
    _write_key_file(keyring.key_file, document)
    return _read_key_file(keyring.key_file)


def is_inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())
