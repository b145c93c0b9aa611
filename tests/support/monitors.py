"""Monitors over real SQLite files and what the tests build them from: a config like the example's, a clock
moved by hand, principals, webhook secrets, and a call made while another unit of work holds the write lock."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from incident_monitor.policy.principal import LOCAL_AGENT, Principal, local_operator
from incident_monitor.service.monitor import Monitor

WEBHOOK_SECRET_VARIABLE = "INCIDENT_MONITOR_WEBHOOK_SECRET"
MonitorFactory = Callable[..., Monitor]


class FakeClock:
    """A clock tests move by hand (approval expiry, rates) instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


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


def toml_text(config: dict[str, Any]) -> str:
    """``config`` (a flow_config) as a TOML file, for the programs the tests start with ``--config``."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, list):
            return "[" + ", ".join(value(element) for element in item) + "]"
        if isinstance(item, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(v)}" for k, v in item.items()) + " }"
        return json.dumps(item)  # strings (TOML's basic strings take JSON's escapes) and numbers

    lines: list[str] = []
    for key, item in config.items():
        if isinstance(item, list) and item and all(isinstance(element, dict) for element in item):
            for table in item:
                lines += [f"[[{key}]]", *(f"{json.dumps(k)} = {value(v)}" for k, v in table.items())]
        elif isinstance(item, dict):
            lines += [f"[{key}]", *(f"{json.dumps(k)} = {value(v)}" for k, v in item.items())]
        else:
            lines.insert(0, f"{json.dumps(key)} = {value(item)}")
    return "\n".join(lines) + "\n"


# Principals: the local agent (default agent scopes), the local operator, and made-to-measure ones.
AGENT = LOCAL_AGENT
OPERATOR = local_operator()


def principal(name: str, *scopes: str) -> Principal:
    return Principal(name=name, scopes=frozenset(s if ":" in s else f"incident_monitor:{s}" for s in scopes))


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
