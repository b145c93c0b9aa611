"""Fixtures only (and the hook that skips one backend's tests on the other's pass): what they are built from lives
in ``support`` (monitors, databases, paths, receivers, fakes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from incident_monitor.config import MonitorConfig
from incident_monitor.policy.principal import Principal
from incident_monitor.service import self_monitoring
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.publishing import attach_checkpoint_delivery
from incident_monitor.store.engine import DATABASE_URL_VARIABLE
from support.coding_agent import TOKEN, TOKEN_VARIABLE, World, open_world
from support.databases import ON_POSTGRES, schema_url
from support.monitors import (
    AGENT,
    OPERATOR,
    WEBHOOK_SECRET_VARIABLE,
    FakeClock,
    MonitorFactory,
    flow_config,
    new_webhook_secret,
)
from support.paths import NODE_TOOLS
from support.pg_cluster import PostgresCluster
from support.receivers import WebhookReceiver


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
    """On the PostgreSQL pass: a fresh schema for this test, exported as the database URL (subprocesses inherit it)."""
    if not ON_POSTGRES:
        monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    database = request.getfixturevalue("postgres_tests_database")
    schema = cluster.create_schema(database)
    url = schema_url(cluster.url(database), schema)
    monkeypatch.setenv(DATABASE_URL_VARIABLE, url)
    yield url
    cluster.drop_schema(database, schema)


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


@pytest.fixture(autouse=True)
def audit_key_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's audit key and checkpoints in a config dir of its own (platformdirs reads XDG_CONFIG_HOME),
    never the user's, and no audit key from the environment."""
    config_home = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.delenv("INCIDENT_MONITOR_AUDIT_KEY", raising=False)
    monkeypatch.delenv("INCIDENT_MONITOR_AUDIT_KEY_FILE", raising=False)
    return config_home / "incident-monitor"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
                databases[data_dir] = schema_url(cluster.url(database), cluster.create_schema(database))
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
        attach_checkpoint_delivery(self_monitoring.attach(monitor))  # as the CLI and servers assemble it
        opened.append(monitor)
        return monitor

    yield factory
    for monitor in opened:
        monitor.close()


@pytest.fixture
def agent() -> Principal:
    return AGENT


@pytest.fixture
def operator() -> Principal:
    return OPERATOR


@pytest.fixture
def coding_agent_world(
    make_monitor: MonitorFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    """``coding_agent_world(webhooks=True, **platform_knobs)``: the reference coding-agent platform on 127.0.0.1,
    a monitor configured for it (its token in the environment) and, with webhooks, the HTTP app serving the
    status webhook (support/coding_agent.py)."""
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    with ExitStack() as stack:
        yield lambda **options: open_world(stack, make_monitor, clock, **options)
