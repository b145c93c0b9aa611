"""A private PostgreSQL 15 cluster for the tests (a helper, not a test module).

Debian's ``postgresql`` package provides the binaries; the cluster lives in a temporary directory,
listens on a free loopback port and is stopped at the end. PostgreSQL refuses to run as root, so as
root its tools run as the ``postgres`` user (``runuser``). Durability is off (fsync, full pages):
the tests check behaviour, not crash safety of the test machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("INCIDENT_MONITOR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing): `make test` installs the Debian "
                "package `postgresql`, or run `apt-get install -y postgresql`"
            )
        self.root = Path(tempfile.mkdtemp(prefix="incident-monitor-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._counter = 0
        self._admins: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=300 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log")]
        if action in ("start", "restart"):
            command += ["-o", options]
        subprocess.run(_as_postgres([*command, *extra, action]), check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        for connection in self._admins.values():
            connection.close()
        try:
            self.pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def _admin(self, database: str) -> Any:
        import psycopg

        known = self._admins.get(database)
        if known is None or known.closed or known.broken:  # the cluster may have been restarted by a test
            self._admins[database] = psycopg.connect(
                f"host=127.0.0.1 port={self.port} user=postgres dbname={database}", autocommit=True
            )
        return self._admins[database]

    def _admin_execute(self, database: str, sql: str) -> None:
        import psycopg

        try:
            self._admin(database).execute(sql)
        except psycopg.OperationalError:  # the cluster was restarted under this connection: once more, anew
            self._admins.pop(database).close()
            self._admin(database).execute(sql)

    def create_schema(self, database: str) -> str:
        self._counter += 1
        name = f"s{self._counter}"
        self._admin_execute(database, f"CREATE SCHEMA {name}")
        return name

    def drop_schema(self, database: str, schema: str) -> None:
        self._admin_execute(database, f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def create_database(self, prefix: str = "t") -> str:
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
