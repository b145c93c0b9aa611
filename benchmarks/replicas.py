"""report_incident over Streamable HTTP on 1 and 3 replicas sharing PostgreSQL, beside SQLite on 1, in one run.

``python -m benchmarks.replicas [--quick]`` starts a private PostgreSQL 15 cluster (tests/support/pg_cluster.py,
Debian's ``postgresql`` package), then for 8 and 32 concurrent client sessions (each calling in turn,
spread round-robin over the replicas as a load balancer would) measures calls/s and latency. Writes
benchmarks/results/replicas.json and prints the table (the one in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.run import (
    ROOT,
    SERVER_SCRIPT,
    WEBHOOK_SECRET,
    Figures,
    free_port,
    http_process,
    http_session,
    machine,
    tool_calls,
)

sys.path.insert(0, str(ROOT / "tests"))
from support.pg_cluster import PostgresCluster

CONFIG = """
[http]
replicas = {replicas}
stateless = true

[http.rate_limits]
principal_per_minute = 1000000
principal_burst = 100000
"""


@dataclass
class Row:
    store: str
    replicas: int
    clients: int
    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float


async def one_run(work: Path, store: str, url: str | None, replicas: int, clients: int, calls: int) -> Row:
    config = work / f"config-{replicas}.toml"
    config.write_text(CONFIG.format(replicas=replicas))
    env = {
        **os.environ,
        "INCIDENT_MONITOR_CONFIG": str(config),
        "INCIDENT_MONITOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "INCIDENT_MONITOR_REQUEST_STATE_KEYS": secrets.token_urlsafe(32),
        # One audit key for the replicas of a run (one chain); checkpoints in the run's own directory.
        "INCIDENT_MONITOR_AUDIT_KEY": secrets.token_urlsafe(32),
        "XDG_CONFIG_HOME": str(work / "xdg-config"),
    }
    if url is not None:
        env["INCIDENT_MONITOR_DATABASE_URL"] = url
    else:
        env.pop("INCIDENT_MONITOR_DATABASE_URL", None)
    ports = [free_port() for _ in range(replicas)]
    with ExitStack() as processes:
        for n, port in enumerate(ports):
            data_dir = work / f"data-{store}-{replicas}-{clients}" / f"r{n}"
            command = [str(SERVER_SCRIPT), "serve", "--transport", "http", "--no-auth", "--port", str(port),
                       "--data-dir", str(data_dir)]  # fmt: skip
            processes.enter_context(http_process(command, env, port, work / "replicas.log"))
        async with AsyncExitStack() as sessions:
            opened = [
                await sessions.enter_async_context(http_session(f"http://127.0.0.1:{ports[i % replicas]}/mcp"))
                for i in range(clients)
            ]
            latencies, elapsed = await tool_calls(opened, "report_incident", f"{store}{replicas}x{clients}", calls)
    figures = Figures.of(latencies, elapsed)
    return Row(store, replicas, clients, calls, figures.calls_per_s or 0.0, figures.p50_ms, figures.p99_ms)


async def run(quick: bool, work: Path) -> list[Row]:
    rows: list[Row] = []
    cluster = PostgresCluster().start()
    try:
        for clients in (8, 32):
            calls = (150 if quick else 600) * (2 if clients == 32 else 1)
            rows.append(await one_run(work, "sqlite", None, 1, clients, calls))
            for replicas in (1, 3):
                database = cluster.create_database("bench")
                rows.append(await one_run(work, "postgresql", cluster.url(database), replicas, clients, calls))
    finally:
        cluster.stop()
    return rows


def print_table(rows: list[Row]) -> None:
    print("| store | replicas | clients | calls | calls/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        figures = f"{r.calls_per_s:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f}"
        print(f"| {r.store} | {r.replicas} | {r.clients} | {r.calls} | {figures} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls per run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="incident-monitor-replicas-") as tmp:
        rows = asyncio.run(run(args.quick, Path(tmp)))
    print_table(rows)
    out = ROOT / "benchmarks" / "results" / "replicas.json"
    out.write_text(json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
