"""What several replicas need, checked at start-up: PostgreSQL, stateless HTTP, shared request-state keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from incident_monitor.config import MonitorConfig
from incident_monitor.errors import ConfigError
from incident_monitor.server.replicas import (
    REQUEST_STATE_KEYS_VARIABLE,
    check_replica_settings,
    request_state_keys,
    request_state_security,
)
from incident_monitor.service.monitor import database_url
from incident_monitor.store.engine import create_store_engine

KEY = "k" * 40


def test_one_replica_needs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUEST_STATE_KEYS_VARIABLE, raising=False)
    check_replica_settings(replicas=1, stateless=False, database="sqlite")
    assert request_state_security() is None  # the SDK's process-local key


def test_replicas_on_postgresql_stateless_with_shared_keys_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUEST_STATE_KEYS_VARIABLE, f"{KEY}, {'n' * 32}")
    check_replica_settings(replicas=3, stateless=True, database="postgresql")
    assert request_state_keys() == [KEY, "n" * 32]
    assert request_state_security() is not None


def test_replicas_refuse_each_missing_piece_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUEST_STATE_KEYS_VARIABLE, raising=False)
    with pytest.raises(ConfigError) as refused:
        check_replica_settings(replicas=2, stateless=False, database="sqlite")
    message = refused.value.message
    assert message.startswith("[http] replicas = 2:")
    assert "INCIDENT_MONITOR_DATABASE_URL" in message
    assert "[http] stateless = true" in message
    assert REQUEST_STATE_KEYS_VARIABLE in message


def test_a_short_request_state_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUEST_STATE_KEYS_VARIABLE, f"{KEY},short-secret-value")
    with pytest.raises(ConfigError) as refused:
        request_state_keys()
    assert "key 2 is shorter than 32" in refused.value.message
    assert "short-secret-value" not in refused.value.message


def test_store_url_and_password_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCIDENT_MONITOR_DATABASE_URL", raising=False)
    config = MonitorConfig.model_validate(
        {"store": {"url": "postgresql+psycopg://monitor@db:5432/im", "password": "env:IM_TEST_DB_PASSWORD"}}
    )
    monkeypatch.setenv("IM_TEST_DB_PASSWORD", "p@ss/word")
    assert database_url(config) == "postgresql+psycopg://monitor:p%40ss%2Fword@db:5432/im"
    # The environment's URL wins over the config's, taken whole (the config's password is for its own url).
    assert database_url(config, "postgresql+psycopg://other@h/x") == "postgresql+psycopg://other@h/x"
    monkeypatch.delenv("IM_TEST_DB_PASSWORD")
    with pytest.raises(ConfigError, match=r"store\.password: environment variable IM_TEST_DB_PASSWORD is unset"):
        database_url(config)


def test_store_url_as_a_reference_and_bad_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCIDENT_MONITOR_DATABASE_URL", raising=False)
    config = MonitorConfig.model_validate({"store": {"url": "env:IM_TEST_DB_URL"}})
    monkeypatch.setenv("IM_TEST_DB_URL", "postgresql+psycopg://u:secret@h:5432/d")
    assert database_url(config) == "postgresql+psycopg://u:secret@h:5432/d"
    with pytest.raises(ValueError, match="url: use postgresql\\+psycopg://"):
        MonitorConfig.model_validate({"store": {"url": "mysql://u@h/d"}})
    assert database_url(MonitorConfig()) is None  # SQLite in the data directory


def test_an_unsupported_database_url_from_the_environment_names_the_fix_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        create_store_engine(tmp_path, "mysql+pymysql://monitor:hunter2-secret@db:3306/im")
    assert "use postgresql+psycopg://user@host:port/db" in refused.value.message
    assert "hunter2" not in refused.value.message
