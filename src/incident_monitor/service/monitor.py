"""The running monitor: config, database, destination adapters and clock, opened once per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from incident_monitor.config import MonitorConfig, Settings, load_config
from incident_monitor.destinations.base import DestinationAdapter
from incident_monitor.destinations.registry import build_adapters
from incident_monitor.domain.destination_state import read_disabled
from incident_monitor.domain.readiness import Readiness
from incident_monitor.domain.types import utcnow
from incident_monitor.store.engine import dispose_engine, open_engine, session_scope


@dataclass
class Monitor:
    config: MonitorConfig
    engine: Engine
    data_dir: Path
    # Held here for readiness checks only; only the publishing service calls publish().
    destinations: dict[str, DestinationAdapter]
    clock: Callable[[], datetime] = field(default=utcnow)

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
        return cls.open(config_path=settings.config, data_dir=settings.data_dir)

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
