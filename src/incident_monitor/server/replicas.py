"""What several replicas behind one load balancer need: stateless HTTP and shared request-state keys.

Sealed request state (2026-07-28 ``requestState``) keys are shared by every replica through the environment.

A server question (elicitation) travels to the client sealed and comes back on a retry that any replica
may answer, so all replicas must unseal with the same keys (and the same audience: the server name).
``INCIDENT_MONITOR_REQUEST_STATE_KEYS`` holds them, comma-separated, newest first (the first seals, all
unseal: rotate by prepending). Unset: a process-local key, fine for one process, refused with
``[http] replicas`` above 1 by ``check_replica_settings``.
"""

from __future__ import annotations

import os

from mcp.server.request_state import RequestStateSecurity

from incident_monitor.errors import ConfigError

REQUEST_STATE_KEYS_VARIABLE = "INCIDENT_MONITOR_REQUEST_STATE_KEYS"
MIN_KEY_CHARS = 32


def request_state_keys() -> list[str]:
    raw = os.environ.get(REQUEST_STATE_KEYS_VARIABLE, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for index, key in enumerate(keys):
        if len(key) < MIN_KEY_CHARS:
            # Never echo the key: name its position only.
            raise ConfigError(
                f"{REQUEST_STATE_KEYS_VARIABLE}: key {index + 1} is shorter than {MIN_KEY_CHARS} characters; "
                'use e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
    return keys


def request_state_security() -> RequestStateSecurity | None:
    """Shared keys from the environment, or None (the SDK then makes a process-local key)."""
    keys = request_state_keys()
    return RequestStateSecurity(keys=keys) if keys else None


def check_replica_settings(*, replicas: int, stateless: bool, database: str) -> None:
    """Refuse a replica set that would break: a request may reach any replica, so nothing may live in one.

    ``database`` is the engine's dialect name. Raises ConfigError naming the setting and the fix.
    """
    if replicas <= 1:
        return
    problems = []
    if database != "postgresql":
        problems.append(
            "the store is a SQLite file, which only one host can serve: set INCIDENT_MONITOR_DATABASE_URL "
            "(or [store] url) to a PostgreSQL database shared by every replica"
        )
    if not stateless:
        problems.append(
            "legacy (handshake) clients keep a session in one replica: set [http] stateless = true so any "
            "replica can answer any request"
        )
    if not request_state_keys():
        problems.append(
            f"sealed request state needs keys every replica shares: set {REQUEST_STATE_KEYS_VARIABLE} to the "
            "same value on every replica"
        )
    if problems:
        raise ConfigError(f"[http] replicas = {replicas}: " + "; ".join(problems))
