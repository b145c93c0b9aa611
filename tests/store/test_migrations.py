"""Migrations: a database written before them upgrades keeping every row, the chain and the receipts.

The fixtures were written by the code as it stood before migrations (tests/fixtures/make_pre_migrations_*.py):
a SQLite file, and for PostgreSQL a pg_dump of the same rows in that schema.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from sqlmodel import select as select_models

from incident_monitor.cli import main as cli_main
from incident_monitor.config import MonitorConfig
from incident_monitor.domain.code_change import CodeChangeRun
from incident_monitor.domain.enums import ReceiptStatus
from incident_monitor.domain.models import AuditEvent, Receipt, table_of
from incident_monitor.errors import SchemaOutdated
from incident_monitor.service.audit_checkpoints import verify_audit_log
from incident_monitor.service.monitor import Monitor
from incident_monitor.store import migrate
from incident_monitor.store.engine import DATABASE_FILENAME, create_store_engine
from incident_monitor.store.schema import HEAD_REVISION
from support.databases import ON_POSTGRES
from support.monitors import MonitorFactory
from support.paths import TESTS
from support.pg_cluster import PG_BIN, PostgresCluster

FIXTURES = TESTS / "fixtures"
SQLITE_FIXTURE = FIXTURES / "pre_migrations.sqlite3"
POSTGRES_FIXTURE = FIXTURES / "pre_migrations.postgres.sql"
# Columns later revisions added: absent from the fixture; NULL after the upgrade (the audit MACs until the first
# checkpoint seals the rows written before them).
ADDED_SINCE = {"receipts": {"claimed_by", "lease_expires_at"}, "audit_events": {"key_id", "mac"}}
# Tables later revisions added: absent from the fixture, empty after the upgrade.
TABLES_ADDED_SINCE = {"log_source_files", "log_source_states", "code_change_runs"}
CLI = Path(sys.executable).parent / "incident-monitor"


@dataclass
class OldDatabase:
    data_dir: Path
    url: str | None  # None: the SQLite file in data_dir
    config: Path  # an empty config (the defaults)

    def args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--config", str(self.config)]

    def engine(self) -> Engine:
        return create_store_engine(self.data_dir, self.url)


@pytest.fixture
def old_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> OldDatabase:
    """The pre-migration database on this pass's backend, exported as the database URL on PostgreSQL."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    if not ON_POSTGRES:
        shutil.copyfile(SQLITE_FIXTURE, data_dir / DATABASE_FILENAME)
        return OldDatabase(data_dir, None, config)
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = cluster.create_database("premigrations")
    subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", name,
         "-v", "ON_ERROR_STOP=1", "-q", "-f", str(POSTGRES_FIXTURE)],
        check=True, capture_output=True,
    )  # fmt: skip
    url = cluster.url(name)
    monkeypatch.setenv("INCIDENT_MONITOR_DATABASE_URL", url)
    return OldDatabase(data_dir, url, config)


def rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the fixture has, its columns, in primary-key order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in TABLES_ADDED_SINCE:
                continue
            columns = [c for c in table.columns if c.name not in ADDED_SINCE.get(table.name, set())]
            query = select(*columns).order_by(*table.primary_key.columns)
            out[table.name] = [dict(row._mapping) for row in connection.execute(query)]
    return out


@pytest.fixture(scope="module")
def fixture_rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[dict[str, Any]]]]:
    # A copy: even a read-only open of a WAL database leaves -shm/-wal files beside it.
    copy = tmp_path_factory.mktemp("fixture") / SQLITE_FIXTURE.name
    shutil.copyfile(SQLITE_FIXTURE, copy)
    engine = create_engine(f"sqlite:///file:{copy}?mode=ro&uri=true")
    try:
        yield rows(engine)
    finally:
        engine.dispose()


def test_the_fixture_holds_every_kind_of_row(fixture_rows: dict[str, list[dict[str, Any]]]) -> None:
    counts = {table: len(found) for table, found in fixture_rows.items()}
    assert all(counts[t] > 0 for t in ("incidents", "drafts", "approval_requests", "receipts", "audit_events"))
    assert counts["api_tokens"] == counts["intake_keys"] == 1
    assert {r["status"].value for r in fixture_rows["receipts"]} == {"published", "blocked"}


def test_db_upgrade_keeps_every_row_the_chain_and_the_receipts(
    old_database: OldDatabase, fixture_rows: dict[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["db", "current", *old_database.args()]) == 0
    assert "no revision stored" in capsys.readouterr().out

    assert cli_main(["db", "upgrade", *old_database.args()]) == 0
    assert f"upgraded from the schema from before migrations to {HEAD_REVISION}" in capsys.readouterr().out

    engine = old_database.engine()
    try:
        assert migrate.current(engine) == HEAD_REVISION
        assert rows(engine) == fixture_rows
        with engine.connect() as connection:
            leases = connection.execute(select(Receipt.claimed_by, Receipt.lease_expires_at)).all()  # type: ignore[call-overload]
        assert leases and all(lease == (None, None) for lease in leases)
    finally:
        engine.dispose()

    # The rows from before keyed MACs pass as the chain's unsealed prefix; this first verify seals them with the
    # audit key and signs a checkpoint, after which every row must carry a MAC (docs/deployment.md, upgrading).
    assert cli_main(["audit", "verify", *old_database.args()]) == 0
    assert "audit chain intact:" in capsys.readouterr().out
    engine = old_database.engine()
    try:
        with engine.connect() as connection:
            macs = connection.execute(select(AuditEvent.seq, AuditEvent.mac)).all()  # type: ignore[call-overload]
        assert len(macs) > len(fixture_rows["audit_events"]) and all(mac for _, mac in macs)
    finally:
        engine.dispose()
    # The upgraded database serves: a governed call appends to the same chain, and the receipts read back.
    monitor = Monitor.open(config=MonitorConfig(), data_dir=old_database.data_dir, migrate=False)
    try:
        assert cli_main(["audit", "verify", *old_database.args()]) == 0
        with monitor.session() as session:
            verified = verify_audit_log(monitor, session)
            assert verified.ok, verified.problem
            assert (verified.head_seq or 0) > len(fixture_rows["audit_events"]) + 2
            published = [r for r in session.exec(select_models(Receipt)).all() if r.status is ReceiptStatus.published]
        assert len(published) == 2 and all(r.external_id for r in published)
    finally:
        monitor.close()

    assert cli_main(["db", "upgrade", *old_database.args()]) == 0
    assert "nothing to do" in capsys.readouterr().out


# What the code between the first keyed MACs / log sources / code changes and migrations added at every open of a
# SQLite file (no version table): the MAC columns, the denials index, the log-source tables with SQLite's INTEGER
# (and the code-change table, below).
RELEASE_BEFORE_MIGRATIONS_ADDED = (
    "ALTER TABLE audit_events ADD COLUMN key_id VARCHAR",
    "ALTER TABLE audit_events ADD COLUMN mac VARCHAR",
    "CREATE INDEX ix_audit_events_decision_at ON audit_events (decision, at)",
    "CREATE TABLE log_source_files (source_id VARCHAR NOT NULL, device INTEGER NOT NULL, inode INTEGER NOT NULL, "
    'path VARCHAR NOT NULL, "offset" INTEGER NOT NULL, size INTEGER NOT NULL, head_digest VARCHAR NOT NULL, '
    "updated_at DATETIME NOT NULL, PRIMARY KEY (source_id, device, inode))",
    "INSERT INTO log_source_files VALUES ('ci-log', 65024, 5308417, 'logs/ci.log', 4096, 8192, '64:ab', "
    "'2026-11-26 12:00:00.000000')",
    "CREATE TABLE log_source_states (source_id VARCHAR NOT NULL, lease_owner VARCHAR, lease_expires_at DATETIME, "
    "last_polled_at DATETIME, reports INTEGER NOT NULL, repeats INTEGER NOT NULL, rejected INTEGER NOT NULL, "
    "undecodable_bytes INTEGER NOT NULL, warnings INTEGER NOT NULL, last_problem VARCHAR, last_problem_at DATETIME, "
    "PRIMARY KEY (source_id))",
)


@pytest.mark.sqlite_only  # only SQLite files were written by that release (PostgreSQL came with migrations)
def test_a_database_of_the_release_just_before_migrations_gets_only_what_it_lacks(
    tmp_path: Path, fixture_rows: dict[str, list[dict[str, Any]]]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(SQLITE_FIXTURE, data_dir / DATABASE_FILENAME)
    engine = create_engine(f"sqlite:///{data_dir / DATABASE_FILENAME}")
    with engine.begin() as connection:
        for statement in RELEASE_BEFORE_MIGRATIONS_ADDED:
            connection.exec_driver_sql(statement)
        table_of(CodeChangeRun).create(connection)  # as that release's create_all made it, indexes included
    engine.dispose()

    assert cli_main(["db", "upgrade", "--data-dir", str(data_dir)]) == 0

    engine = create_store_engine(data_dir)
    try:
        assert migrate.current(engine) == HEAD_REVISION
        assert rows(engine) == fixture_rows
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
            assert connection.exec_driver_sql('SELECT source_id, inode, "offset" FROM log_source_files').all() == [
                ("ci-log", 5308417, 4096)
            ]
    finally:
        engine.dispose()


def test_serve_no_migrate_refuses_an_outdated_schema_naming_the_command(old_database: OldDatabase) -> None:
    with pytest.raises(SchemaOutdated, match=r"incident-monitor db upgrade"):
        Monitor.open(config=MonitorConfig(), data_dir=old_database.data_dir, migrate=False)
    done = subprocess.run(
        [str(CLI), "serve", "--transport", "http", "--port", "0", "--no-migrate", *old_database.args()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "run `incident-monitor db upgrade`" in done.stderr.lower()
    engine = old_database.engine()
    try:
        assert migrate.current(engine) is None  # nothing was changed
    finally:
        engine.dispose()


def test_replicas_starting_together_migrate_once(old_database: OldDatabase) -> None:
    upgrades = [
        subprocess.Popen([str(CLI), "db", "upgrade", *old_database.args()], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in upgrades]
    assert [process.returncode for process in upgrades] == [0, 0, 0]
    assert sum("upgraded from" in out for out in outputs) == 1, outputs
    assert sum("nothing to do" in out for out in outputs) == 2, outputs


def test_the_head_constant_is_the_migrations_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_current_head() == HEAD_REVISION
    assert [r.revision for r in migrate.history()][-1] == HEAD_REVISION


def test_migrations_from_empty_build_exactly_the_models_schema(
    make_monitor: MonitorFactory, tmp_path: Path, store_url: str | None
) -> None:
    """The tables a new database gets (create_all, stamped) and the ones the migrations build are the same."""
    monitor = make_monitor()  # a fresh database of this pass's backend: create_all + stamp
    monitor.close()
    engine = create_store_engine(tmp_path / "fresh", store_url)
    try:
        with engine.begin() as connection:
            if ON_POSTGRES:  # the same (per-test) schema: rebuild it through the migrations instead
                SQLModel.metadata.drop_all(connection)
                connection.exec_driver_sql("DROP TABLE alembic_version")
            from alembic import command

            command.upgrade(migrate.alembic_config(connection), "head")
            differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_opening_a_current_database_does_not_import_alembic(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    """Start-up stays fast: with the stored revision at the head, one small read and no Alembic import."""
    monitor = make_monitor()  # creates and stamps the schema (this pass's backend)
    code = (
        "import sys; from pathlib import Path; from incident_monitor.config import MonitorConfig; "
        "from incident_monitor.service.monitor import Monitor; "
        f"m = Monitor.open(config=MonitorConfig(), data_dir=Path({str(monitor.data_dir)!r})); m.close(); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
