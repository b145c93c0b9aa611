"""The running monitor: config, database, destination adapters and clock, opened once per process.

It also holds the monitor's decision listeners: what runs after each governed decision is recorded
(self-monitoring is one, registered where a monitor is assembled: ``self_monitoring.attach``). They
live on the monitor, not in a module-level registry, so two monitors in one process never share them,
and ``governed`` reaches them without importing what they import (intake → governed would be a cycle).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.engine import Engine
from sqlmodel import Session

from incident_monitor.config import MonitorConfig, Settings, load_config
from incident_monitor.destinations.base import DestinationAdapter
from incident_monitor.destinations.registry import build_adapters
from incident_monitor.domain.destination_state import read_disabled
from incident_monitor.domain.enums import Decision
from incident_monitor.domain.readiness import Readiness
from incident_monitor.domain.types import utcnow
from incident_monitor.errors import ConfigError
from incident_monitor.locations import SECRETS_FILE, Locations, find_locations, load_secrets_file
from incident_monitor.policy.principal import Principal
from incident_monitor.secret_ref import is_env_ref, resolve_secret, secret_ref_variable
from incident_monitor.service.audit_keys import AuditKeyring, load_keyring
from incident_monitor.service.downstream.connections import DownstreamConnections
from incident_monitor.store.engine import DATABASE_URL_VARIABLE, PoolOptions, dispose_engine, session_scope, unit_scope
from incident_monitor.store.group_commit import UnitOfWork
from incident_monitor.store.startup import open_engine


def database_url(config: MonitorConfig, explicit: str | None = None) -> str | None:
    """The database to open: ``explicit`` (INCIDENT_MONITOR_DATABASE_URL), else ``[store] url``; None for SQLite.

    ``[store] url`` may be ``env:NAME`` (the whole URL in a variable) and ``[store] password`` an ``env:NAME``
    holding the password, so no secret sits in the config file.
    """
    given = explicit or os.environ.get(DATABASE_URL_VARIABLE)
    url = given or config.store.url
    if not url:
        return None
    if is_env_ref(url):
        secret = resolve_secret(url)
        if secret is None:
            raise ConfigError(
                f"store.url: environment variable {secret_ref_variable(url)} is unset or empty; "
                "export the database URL there"
            )
        url = secret.get_secret_value()
    if config.store.password and not given:  # the password goes with [store] url, not with a URL given whole
        password = resolve_secret(config.store.password)
        if password is None:
            raise ConfigError(
                f"store.password: environment variable {secret_ref_variable(config.store.password)} is unset or "
                "empty; export the database password there"
            )
        url = make_url(url).set(password=password.get_secret_value()).render_as_string(hide_password=False)
    return url


def pool_options(config: MonitorConfig) -> PoolOptions:
    store = config.store
    return PoolOptions(
        pool_size=store.pool_size,
        max_overflow=store.max_overflow,
        pool_timeout_seconds=store.pool_timeout_seconds,
        connect_timeout_seconds=store.connect_timeout_seconds,
        statement_timeout_ms=store.statement_timeout_ms,
    )


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One governed decision as the audit log recorded it (passed to each decision listener)."""

    principal: Principal
    action: str
    decision: Decision
    reasons: list[str]
    arguments: Any
    subject_id: str | None = None
    run_id: str | None = None


# Called after the decision's own transaction committed; a listener's failure is its own to handle.
DecisionListener = Callable[["Monitor", DecisionRecord], None]


def private_config_dir(config_path: Path | None) -> Path | None:
    """The config's directory when it is a private one (``init``'s layout: a secrets file beside the config).

    The default audit key goes there; a config in a shared place (the repo's examples/) does not get a key
    written beside it: the user's config dir is used instead.
    """
    if config_path is None:
        return None
    directory = config_path.resolve().parent
    return directory if (directory / SECRETS_FILE).exists() else None


@dataclass
class Monitor:
    config: MonitorConfig
    engine: Engine
    data_dir: Path
    # Held here for readiness checks only; only the publishing service calls publish().
    destinations: dict[str, DestinationAdapter[Any]]
    clock: Callable[[], datetime] = field(default=utcnow)
    decision_listeners: list[DecisionListener] = field(default_factory=list)
    # MACs audit rows and signs checkpoints (service/audit_keys.py); a scratch monitor gets a throwaway one.
    audit_keys: AuditKeyring = field(default_factory=AuditKeyring.ephemeral)
    audit_rows_since_checkpoint: int = 0
    # Run by close(), before the database closes (the audit checkpoint on shutdown).
    on_close: list[Callable[[Monitor], None]] = field(default_factory=list)
    # Each signed audit checkpoint (as JSON) goes to these too: publishing.attach_checkpoint_delivery.
    checkpoint_sinks: list[Callable[[Monitor, dict[str, Any]], object]] = field(default_factory=list)
    # Sessions with the guarded downstream MCP servers; connected by the serving transport (``running()``).
    downstream: DownstreamConnections = field(default_factory=lambda: DownstreamConnections([]))

    def __post_init__(self) -> None:
        if not self.downstream and self.config.downstream:
            self.downstream = DownstreamConnections(list(self.config.downstream))

    @classmethod
    def open(
        cls,
        *,
        config: MonitorConfig | None = None,
        config_path: Path | None = None,
        data_dir: Path,
        clock: Callable[[], datetime] = utcnow,
        database: str | None = None,
        migrate: bool = True,
    ) -> Monitor:
        """``database``: a database URL (default: INCIDENT_MONITOR_DATABASE_URL, then ``[store] url``, then the
        SQLite file in ``data_dir``). ``migrate=False`` refuses a schema older than this code (SchemaOutdated)."""
        config = config if config is not None else load_config(config_path)
        data_dir = data_dir.resolve()
        engine = open_engine(data_dir, database_url(config, database), pool=pool_options(config), migrate=migrate)
        return cls(
            config=config,
            engine=engine,
            data_dir=data_dir,
            destinations=build_adapters(list(config.destinations), data_dir),
            clock=clock,
            audit_keys=load_keyring(config.audit, private_config_dir(config_path)),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Monitor:
        """Open what the settings name, else the ``init`` location (locations.py); refuse when neither."""
        found = find_locations(settings.config, settings.data_dir)
        return cls.at(found, database=settings.database_url, migrate=settings.migrate)

    @classmethod
    def at(cls, found: Locations, *, database: str | None = None, migrate: bool = True) -> Monitor:
        """Open found locations; the secrets file beside the config fills the environment first (so it may hold
        INCIDENT_MONITOR_DATABASE_URL or the variable ``[store] password`` names)."""
        load_secrets_file(found.secrets_file)
        return cls.open(config_path=found.config, data_dir=found.data_dir, database=database, migrate=migrate)

    def readiness(self, destination_id: str, disabled_now: Mapping[str, str] | None = None) -> Readiness:
        """``disabled_now``: the disabled destinations already read (``read_disabled``), for a caller asking
        about every destination at once; without it they are read here."""
        adapter = self.destinations.get(destination_id)
        if adapter is None:
            return Readiness(ready=False, reasons=[f"destination '{destination_id}' is not configured"])
        disabled = (read_disabled(self.engine) if disabled_now is None else disabled_now).get(destination_id)
        if disabled is not None:
            return Readiness(
                ready=False,
                reasons=[
                    f"{disabled}; fix the destination, then re-enable it with "
                    f"`incident-monitor destinations enable {destination_id}`"
                ],
            )
        return adapter.readiness()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine) as session:
            yield session

    @contextmanager
    def unit(self) -> Iterator[UnitOfWork]:
        """A unit of work whose ORM session is made only if used (store/group_commit.py): governed calls."""
        with unit_scope(self.engine) as unit:
            yield unit

    def close(self) -> None:
        for hook in list(self.on_close):
            hook(self)
        self.on_close.clear()
        dispose_engine(self.engine)
