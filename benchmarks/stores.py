"""Where a benchmark's governed server and its durable floor keep their rows: SQLite files in the run's work
directory (the default), or a database of the run's private PostgreSQL cluster.

The cluster is the tests' (tests/support/pg_cluster.py, Debian's ``postgresql`` package), restarted with
PostgreSQL's durable defaults: the tests turn fsync and synchronous commit off, a durable floor needs them on.
Its server processes are metered too (CPU and statements per call, through pg_stat_statements), since on
PostgreSQL part of every call's cost is spent there, outside the server process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from incident_monitor.store.engine import DATABASE_URL_VARIABLE

if TYPE_CHECKING:
    from support.pg_cluster import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent

# Back to PostgreSQL's defaults for what the tests' cluster turns off (later -c options win), and the
# extension that counts the statements each call sends.
DURABLE_OPTIONS = (
    "-c fsync=on -c full_page_writes=on -c synchronous_commit=on -c shared_preload_libraries=pg_stat_statements"
)


def pg_bin() -> Path:
    """Where the tests' cluster takes its binaries (INCIDENT_MONITOR_TEST_PG_BIN, else Debian's)."""
    return _pg_cluster_module().PG_BIN


def _pg_cluster_module() -> Any:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    import support.pg_cluster

    return support.pg_cluster


def postgresql_missing() -> str | None:
    """Why the PostgreSQL rows cannot run here (one line saying how to fix it), or None when they can."""
    initdb = pg_bin() / "initdb"
    if initdb.exists():
        return None
    return (
        f"PostgreSQL rows skipped: {initdb} is missing (Debian's PostgreSQL 15 binaries; "
        "install them with `make postgresql`)"
    )


def postgresql_version() -> str | None:
    """The installed server's version (``postgres --version``), for the machine block; None when absent."""
    postgres = pg_bin() / "postgres"
    if not postgres.exists():
        return None
    done = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


@dataclass(frozen=True)
class Store:
    """``url`` None: SQLite files in the work directory; else a PostgreSQL database of the run's cluster."""

    label: str = ""  # appended to the benchmark's name
    slug: str = ""  # appended to its data directories
    url: str | None = None
    meter: DatabaseMeter | None = None  # the cluster's CPU and the database's statements (PostgreSQL)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """The servers' environment on this store (the SQLite rows never inherit a caller's database URL)."""
        env = dict(env)
        if self.url is None:
            env.pop(DATABASE_URL_VARIABLE, None)
        else:
            env[DATABASE_URL_VARIABLE] = self.url
        return env

    def durable_target(self, sqlite_path: str) -> str:
        """The durable floor's database: beside the governed server's (the same disk, or the same database)."""
        return self.url or sqlite_path


SQLITE = Store()


class DatabaseMeter:
    """CPU of the cluster's processes and statements run in one database, read before and after each side's calls."""

    def __init__(self, cluster: PostgresCluster, database: str) -> None:
        self.postmaster = psutil.Process(int((cluster.data / "postmaster.pid").read_text().split()[0]))
        self.cluster = cluster
        self.database = database

    def cpu_snapshot(self) -> dict[int, float]:
        """CPU seconds so far of the postmaster and each of its processes, by pid."""
        seconds = {}
        for process in (self.postmaster, *self.postmaster.children()):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    def cpu_seconds_since(self, before: dict[int, float]) -> float:
        """CPU the cluster spent since ``before``. Backends live as long as their connection (the servers' pools
        and the floors' one connection), so this holds a side's calls' work; a process gone since (the meter's
        own psql's backend) is left out rather than counted negative."""
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in self.cpu_snapshot().items())

    def statements(self) -> int:
        """Statements run so far in the database (BEGIN, COMMIT and SAVEPOINT included: each is a round trip)."""
        sql = (
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{self.database}')"
        )
        return int(self.cluster.psql(sql).strip())


@contextmanager
def postgresql_cluster() -> Iterator[PostgresCluster]:
    """The run's cluster, durable, with pg_stat_statements; stopped (and its directory removed) at the end."""
    cluster = _pg_cluster_module().PostgresCluster().start()
    try:
        cluster.pg_ctl("restart", "-o", DURABLE_OPTIONS)
        # The meters read pg_stat_statements from here, so their own queries are not counted in the benchmark's.
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        yield cluster
    finally:
        cluster.stop()


def postgresql_store(cluster: PostgresCluster, name: str) -> Store:
    """A fresh database for one benchmark (its governed server and its durable floor share it)."""
    database = cluster.create_database(name)
    cluster.psql("CREATE EXTENSION pg_stat_statements", database)
    return Store(" (PostgreSQL)", "-pg", cluster.url(database), DatabaseMeter(cluster, database))


def durability_settings(cluster: PostgresCluster) -> dict[str, str]:
    """What the run measured with (asserted by the smoke test: the floors are durable)."""
    names = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "server_version")
    return {name: cluster.psql(f"SHOW {name}").strip() for name in names}
