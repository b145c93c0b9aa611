"""Shared fixtures: monitors over real SQLite files, a controllable clock, principals, secrets."""

from __future__ import annotations

import base64
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Engine

from incident_monitor.config import MonitorConfig
from incident_monitor.policy.principal import LOCAL_AGENT, Principal, local_operator
from incident_monitor.policy.scopes import DEFAULT_AGENT_SCOPES, OPERATOR_SCOPES
from incident_monitor.service import self_monitoring
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import create_store_engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The examples' webhook receiver doubles as the tests' receiver.
sys.path.insert(0, str(EXAMPLES))
from pg_cluster import PostgresCluster  # noqa: E402  (tests/ is on the path: pytest's rootdir conftest)
from webhook_receiver import WebhookReceiver  # noqa: E402  (examples/ is on the path just above)

WEBHOOK_SECRET_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_SECRET"
# The suite runs twice: against SQLite (default) and with INCIDENT_MONITOR_TEST_DATABASE=postgres against a private
# PostgreSQL cluster, where every test gets a fresh schema through INCIDENT_MONITOR_DATABASE_URL.
ON_POSTGRES = os.environ.get("INCIDENT_MONITOR_TEST_DATABASE", "sqlite") == "postgres"
DATABASE_URL_VARIABLE = "INCIDENT_MONITOR_DATABASE_URL"


def database_url_env() -> dict[str, str]:
    """The database URL variable when set (the PostgreSQL pass), for child processes given a minimal environment."""
    url = os.environ.get(DATABASE_URL_VARIABLE)
    return {DATABASE_URL_VARIABLE: url} if url else {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if ON_POSTGRES and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific (runs in the SQLite pass)"))
        if not ON_POSTGRES and item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL pass of `make test`)"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The private PostgreSQL cluster of this test session (started on first use, stopped at the end)."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_tests_database(postgres: PostgresCluster) -> str:
    return postgres.create_database("tests")


@pytest.fixture(autouse=True)
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """On the PostgreSQL pass: a fresh schema for this test, exported as the database URL (subprocesses inherit it).

    A schema, not a database: CREATE DATABASE takes about a second here, CREATE SCHEMA a few milliseconds.
    """
    if not ON_POSTGRES:
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    database = request.getfixturevalue("postgres_tests_database")
    schema = cluster.create_schema(database)
    url = cluster.url(database) + f"?options=-csearch_path%3D{schema}"
    monkeypatch.setenv(DATABASE_URL_VARIABLE, url)
    yield url
    cluster.drop_schema(database, schema)


NODE_TOOLS = ROOT / "tools" / "node" / "node_modules"


@pytest.fixture(scope="session")
def node_bin() -> Path:
    """The pinned Node tools (conformance suite, Inspector CLI, server-memory, Node 22).

    `make test` installs them; a missing install is a failure, not a skip, so CI cannot pass without them.
    """
    bin_dir = NODE_TOOLS / ".bin"
    if not (bin_dir / "node").exists():
        pytest.fail("Node tools are not installed: run `make test` (it runs npm ci in tools/node)")
    return bin_dir


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A clock tests move by hand (approval expiry, rates) instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def receiver(webhook_secret: str) -> Iterator[WebhookReceiver]:
    """The examples' signature-verifying webhook receiver on 127.0.0.1, for the configured secret."""
    with WebhookReceiver(webhook_secret) as started:
        yield started


@pytest.fixture
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh Standard Webhooks secret, exported where the config's env: reference points."""
    secret = new_webhook_secret()
    monkeypatch.setenv(WEBHOOK_SECRET_VARIABLE, secret)
    return secret


def flow_config(webhook_url: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A config like examples/config.toml, pointing its webhook at ``webhook_url``."""
    config: dict[str, Any] = {
        "destinations": [
            {
                "id": "ops-webhook",
                "kind": "webhook",
                "url": webhook_url or "http://127.0.0.1:9/hooks/incident",
                "secret": f"env:{WEBHOOK_SECRET_VARIABLE}",
                "allow_insecure_http": True,
                "allow_private_networks": True,
                "timeout_seconds": 5,
                "max_attempts": 2,
                "backoff_seconds": 0,
            },
            {"id": "telemetry", "kind": "telemetry", "path": "telemetry.jsonl"},
        ],
        "routes": [
            {
                "id": "runtime-failures",
                "destination_id": "ops-webhook",
                "priority": 10,
                "match": {"route_tags": ["runtime-failure"]},
            },
            {
                "id": "safety-signals",
                "destination_id": "ops-webhook",
                "priority": 20,
                "approval_policy": "always",
                "match": {"risk_categories": ["tool_policy"]},
            },
        ],
        "default_destination": {"destination_id": "telemetry"},
    }
    config.update(overrides)
    return config


MonitorFactory = Callable[..., Monitor]


@pytest.fixture
def make_monitor(
    tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest, store_url: str | None
) -> Iterator[MonitorFactory]:
    """Open a monitor on a real database: ``make_monitor(config_dict, data_dir=...)``.

    A SQLite file in the data directory; on the PostgreSQL pass the test's schema for the first data directory
    opened (the one subprocesses reach through the environment) and a schema of its own for every other one.
    """
    opened: list[Monitor] = []
    databases: dict[Path, str | None] = {}

    def database_for(data_dir: Path) -> str | None:
        if store_url is None:
            return None
        if data_dir not in databases:
            if not databases:
                databases[data_dir] = store_url
            else:
                cluster: PostgresCluster = request.getfixturevalue("postgres")
                database = request.getfixturevalue("postgres_tests_database")
                schema = cluster.create_schema(database)
                databases[data_dir] = cluster.url(database) + f"?options=-csearch_path%3D{schema}"
        return databases[data_dir]

    def factory(
        config: dict[str, Any] | None = None, *, data_dir: Path | None = None, use_clock: bool = True
    ) -> Monitor:
        data_dir = data_dir or tmp_path / "data"
        monitor = Monitor.open(
            config=MonitorConfig.model_validate(config if config is not None else flow_config()),
            data_dir=data_dir,
            database=database_for(data_dir.resolve()),
            **({"clock": clock} if use_clock else {}),
        )
        self_monitoring.attach(monitor)  # as the CLI and servers assemble it
        opened.append(monitor)
        return monitor

    yield factory
    for monitor in opened:
        monitor.close()


@contextmanager
def store_engine(data_dir: Path) -> Iterator[Engine]:
    """The database a CLI or server given ``data_dir`` (and this environment) uses, without opening a monitor."""
    engine = create_store_engine(data_dir, os.environ.get(DATABASE_URL_VARIABLE))
    try:
        yield engine
    finally:
        engine.dispose()


def raw_sql(target: Monitor | Engine, *statements: str | tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run SQL behind the service's back (as someone with database access would), on either backend.

    Each statement is SQL with ``?`` placeholders, or (SQL, params); one transaction; the last one's rows returned.
    """
    engine = target.engine if isinstance(target, Monitor) else target
    connection = engine.raw_connection()
    rows: list[tuple[Any, ...]] = []
    try:
        cursor = connection.cursor()
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            if engine.dialect.name != "sqlite":
                sql = sql.replace("?", "%s")
            cursor.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
        connection.commit()
    finally:
        connection.close()
    return rows


# Principals: the local agent (default agent scopes), the local operator, and made-to-measure ones.
AGENT = LOCAL_AGENT
OPERATOR = local_operator()


def principal(name: str, *scopes: str) -> Principal:
    return Principal(name=name, scopes=frozenset(s if ":" in s else f"incident_monitor:{s}" for s in scopes))


@pytest.fixture
def agent() -> Principal:
    return AGENT


@pytest.fixture
def operator() -> Principal:
    return OPERATOR


__all__ = ["DEFAULT_AGENT_SCOPES", "OPERATOR_SCOPES", "FakeClock", "flow_config", "new_webhook_secret", "principal"]


T = TypeVar("T")


def call_while_a_writer_holds_the_lock(monitor: Monitor, call: Callable[[], T]) -> T:
    """``call`` made from another thread while a unit of work holds SQLite's write lock; fails if it waited."""

    @contextmanager
    def writer_holding_the_lock() -> Iterator[None]:
        held, release = threading.Event(), threading.Event()

        def writer() -> None:
            with monitor.session():
                held.set()
                release.wait(30)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert held.wait(30)
            yield
        finally:
            release.set()
            thread.join()

    outcome: list[T] = []
    with writer_holding_the_lock():
        checker = threading.Thread(target=lambda: outcome.append(call()))
        checker.start()
        checker.join(20)
        assert outcome, "the call waited for the writer"
    return outcome[0]
