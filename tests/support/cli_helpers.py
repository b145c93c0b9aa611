"""Running ``incident-monitor`` in process: ``main(argv)`` with stdout/stderr captured by capsys.

Tests isolate the locations every command falls back to (the platform's user config and data
directories, read from XDG_* on Linux) and the INCIDENT_MONITOR_* variables, so nothing reads or
writes the real user's set-up and nothing a command loads into the environment outlives the test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from incident_monitor.cli import main
from incident_monitor.service import self_monitoring
from incident_monitor.service.monitor import Monitor

LOCATION_VARIABLES = (
    "INCIDENT_MONITOR_CONFIG",
    "INCIDENT_MONITOR_DATA_DIR",
    "INCIDENT_MONITOR_TOKEN",
    "INCIDENT_MONITOR_HTTP_AGENT_TOKEN",
)


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """XDG dirs under ``home``; no INCIDENT_MONITOR_* location or token variables (restored after the test)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    for name in LOCATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> Done:
    """``incident-monitor ARGV`` in this process; argparse's exits become return codes."""
    capsys.readouterr()  # drop anything printed before
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Done(code, out, err)


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    config: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> Done:
        """``incident-monitor ARGS --data-dir … --config …`` as an operator would type it."""
        return run_cli(self.capsys, [*args, "--data-dir", str(self.data_dir), "--config", str(self.config)])

    @contextmanager
    def monitor(self) -> Iterator[Monitor]:
        """The same data directory and config, opened in-process (real clock, assembled like the CLI)."""
        opened = self_monitoring.attach(Monitor.open(config_path=self.config, data_dir=self.data_dir))
        try:
            yield opened
        finally:
            opened.close()


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def table_rows(text: str) -> list[list[str]]:
    """The rows of the table printer's output, header dropped, split on whitespace."""
    return [line.split() for line in lines(text)[1:]]
