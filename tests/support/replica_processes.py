"""Several ``incident-monitor serve --transport http`` processes on one database: replicas on PostgreSQL, or
servers sharing one data directory's SQLite file (a second server started beside a first)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from incident_monitor.server.replicas import REQUEST_STATE_KEYS_VARIABLE
from incident_monitor.store.engine import DATABASE_URL_VARIABLE
from support.pg_cluster import free_port

CLI = Path(sys.executable).parent / "incident-monitor"


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """kill -9: no shutdown, no settle, its connections simply drop."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


@dataclass
class ReplicaSet:
    config: Path
    root: Path
    database_url: str | None  # None: the SQLite file of ``shared_data_dir``
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    shared_data_dir: Path | None = None  # every server in one data directory (else one each under ``root``)

    def start(self, count: int) -> list[Replica]:
        started = [self._spawn(f"replica-{len(self.replicas) + i + 1}") for i in range(count)]
        for replica in started:
            wait_ready(replica)
        self.replicas.extend(started)
        return started

    def _spawn(self, name: str) -> Replica:
        port = free_port()
        data_dir = self.shared_data_dir or self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        env = {**os.environ, **self.env}
        if self.database_url is not None:
            env[DATABASE_URL_VARIABLE] = self.database_url
        command = [
            str(CLI), "serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(self.config), "--data-dir", str(data_dir),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        return Replica(name, port, process, log)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


def wait_ready(replica: Replica, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx2.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise AssertionError(f"{replica.name} exited: {replica.log.read_text(errors='replace')[-2000:]}")
            try:
                if client.get(f"{replica.url}/readyz").status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"{replica.name} not ready after {timeout}s: {replica.log.read_text(errors='replace')}")


@contextmanager
def replica_set(
    config: Path,
    root: Path,
    database_url: str | None,
    env: dict[str, str] | None = None,
    *,
    shared_data_dir: Path | None = None,
) -> Iterator[ReplicaSet]:
    shared = {REQUEST_STATE_KEYS_VARIABLE: secrets.token_urlsafe(32), **(env or {})}
    replicas = ReplicaSet(config, root, database_url, shared, shared_data_dir=shared_data_dir)
    try:
        yield replicas
    finally:
        replicas.stop()
