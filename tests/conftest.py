"""Fixtures only: what they are built from lives in ``support`` (monitors, paths, receivers, fakes)."""

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
from support.coding_agent import TOKEN, TOKEN_VARIABLE, World, open_world
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
from support.receivers import WebhookReceiver


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
def make_monitor(tmp_path: Path, clock: FakeClock) -> Iterator[MonitorFactory]:
    """Open a monitor on a real SQLite file in tmp_path: ``make_monitor(config_dict, data_dir=...)``."""
    opened: list[Monitor] = []

    def factory(
        config: dict[str, Any] | None = None, *, data_dir: Path | None = None, use_clock: bool = True
    ) -> Monitor:
        monitor = Monitor.open(
            config=MonitorConfig.model_validate(config if config is not None else flow_config()),
            data_dir=data_dir or tmp_path / "data",
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
