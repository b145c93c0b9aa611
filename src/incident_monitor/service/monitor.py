"""The running monitor: config, database, destination adapters and clock, opened once per process.

It also holds the monitor's decision listeners: what runs after each governed decision is recorded
(self-monitoring is one, registered where a monitor is assembled: ``self_monitoring.attach``). They
live on the monitor, not in a module-level registry, so two monitors in one process never share them,
and ``governed`` reaches them without importing what they import (intake → governed would be a cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from incident_monitor.config import MonitorConfig, Settings, load_config
from incident_monitor.destinations.base import DestinationAdapter
from incident_monitor.destinations.registry import build_adapters
from incident_monitor.domain.destination_state import read_disabled
from incident_monitor.domain.enums import Decision
from incident_monitor.domain.readiness import Readiness
from incident_monitor.domain.types import utcnow
from incident_monitor.locations import Locations, find_locations, load_secrets_file
from incident_monitor.policy.principal import Principal
from incident_monitor.store.engine import dispose_engine, open_engine, session_scope


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


@dataclass
class Monitor:
    config: MonitorConfig
    engine: Engine
    data_dir: Path
    # Held here for readiness checks only; only the publishing service calls publish().
    destinations: dict[str, DestinationAdapter[Any]]
    clock: Callable[[], datetime] = field(default=utcnow)
    decision_listeners: list[DecisionListener] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        *,
        config: MonitorConfig | None = None,
        config_path: Path | None = None,
        data_dir: Path,
        clock: Callable[[], datetime] = utcnow,
    ) -> Monitor:
        config = config if config is not None else load_config(config_path)
        data_dir = data_dir.resolve()
        engine = open_engine(data_dir)
        return cls(
            config=config,
            engine=engine,
            data_dir=data_dir,
            destinations=build_adapters(list(config.destinations), data_dir),
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Monitor:
        """Open what the settings name, else the ``init`` location (locations.py); refuse when neither."""
        return cls.at(find_locations(settings.config, settings.data_dir))

    @classmethod
    def at(cls, found: Locations) -> Monitor:
        """Open found locations; the secrets file beside the config fills the environment first."""
        load_secrets_file(found.secrets_file)
        return cls.open(config_path=found.config, data_dir=found.data_dir)

    def readiness(self, destination_id: str) -> Readiness:
        adapter = self.destinations.get(destination_id)
        if adapter is None:
            return Readiness(ready=False, reasons=[f"destination '{destination_id}' is not configured"])
        disabled = read_disabled(self.engine).get(destination_id)
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

    def close(self) -> None:
        dispose_engine(self.engine)
