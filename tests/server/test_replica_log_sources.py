"""Log sources on several replicas (PostgreSQL, real processes): one replica tails each source, every line is
reported once, and when that replica is killed another takes the source over where it stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from incident_monitor.config import load_config
from incident_monitor.service.monitor import Monitor
from support.databases import raw_sql
from support.log_files import CI_LOG_SOURCE_CONFIG
from support.replica_processes import Replica, replica_set

pytestmark = pytest.mark.postgres_only

CONFIG = (
    """
[http]
replicas = 3
stateless = true
"""
    + CI_LOG_SOURCE_CONFIG
)


WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
]


def eventually(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(f"ERROR {line}\n" for line in lines))


def test_one_replica_tails_the_source_and_another_takes_over_when_it_dies(tmp_path: Path, store_url: str) -> None:
    (tmp_path / "ws" / "logs").mkdir(parents=True)
    log = tmp_path / "ws" / "logs" / "ci.log"
    log.touch()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    monitor = Monitor.open(config=load_config(config), data_dir=tmp_path / "setup")

    def reported() -> dict[str, int]:
        return dict(raw_sql(monitor, "SELECT title, occurrence_count FROM incidents WHERE source = 'ci'"))

    def holder(replicas: list[Replica]) -> Replica | None:
        rows = raw_sql(monitor, "SELECT lease_owner FROM log_source_states WHERE source_id = 'ci-log'")
        owner = rows[0][0] if rows else None
        return next((r for r in replicas if owner and f":{r.process.pid}:" in owner), None)

    try:
        with replica_set(config, tmp_path, store_url) as servers:
            replicas = servers.start(3)
            # Distinct words, not numbers: a source's fingerprint masks digits, so "step 1" and "step 2" are one.
            first_batch = [f"step {name} failed" for name in WORDS[:10]]
            append(log, first_batch)
            eventually(lambda: len(reported()) == 10, "the first ten lines reported")
            tailing = holder(replicas)
            assert tailing is not None, "no replica holds the source's lease"

            tailing.kill()
            second_batch = [f"step {name} failed" for name in WORDS[10:]]
            append(log, second_batch)
            eventually(lambda: len(reported()) == 15, "the next five lines reported by another replica")
            successor = holder(replicas)
            assert successor is not None and successor is not tailing
        counts = reported()
        assert counts == {title: 1 for title in first_batch + second_batch}, "a line was lost or reported twice"
        print(
            f"\nREPLICAS log source: 15 lines -> {len(counts)} incidents, each reported once; tailed by "
            f"{tailing.name}, then (after kill -9) by {successor.name}"
        )
    finally:
        monitor.close()
