"""The benchmark command works (``--quick``: small sizes, a few seconds per benchmark). No timing is asserted
here — the figures are the benchmark's output; what is asserted is that every benchmark ran and wrote its
figures, and the dedupe storm's exact counts (the benchmark asserts them itself and fails otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from incident_monitor.server.http_stack import UVICORN_HTTP, UVICORN_LOOP
from support.paths import ROOT
from support.pg_cluster import PG_BIN

# The report and intake rows on PostgreSQL (the run's own cluster), when its binaries are installed.
POSTGRESQL_ROWS = (
    "report_incident stdio, 1 client (PostgreSQL)",
    "report_incident stdio, 8 concurrent (PostgreSQL)",
    "report_incident Streamable HTTP, 1 client (PostgreSQL)",
    "report_incident Streamable HTTP, 8 concurrent clients (PostgreSQL)",
    "intake endpoint, 8 connections (PostgreSQL)",
)
SIDES = {"governed", "floor", "durable"}


# The benchmarks measure the SQLite default and read its file (replicas on PostgreSQL: benchmarks/replicas.py).
@pytest.mark.sqlite_only
def test_quick_benchmark_run_writes_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "median ms" in run.stdout and "p99 ms" in run.stdout
    document = json.loads(output.read_text())
    assert document["mode"] == "quick"
    assert document["machine"]["cpus"] >= 1 and document["machine"]["python"]
    # The floors run on the governed server's uvicorn stack (server/http_stack.py), so ratios compare like with like.
    assert document["machine"]["http_stack"] == {"http": UVICORN_HTTP, "loop": UVICORN_LOOP}
    names = [b["name"] for b in document["benchmarks"]]
    for expected in (
        "report_incident stdio, 1 client",
        "report_incident stdio, 8 concurrent",
        "report_incident Streamable HTTP, 1 client",
        "report_incident Streamable HTTP, 8 concurrent clients",
        "tools/list (default agent) stdio",
        "get_status stdio",
        # The same two calls by a raw JSON-RPC client: the server's share, apart from the SDK client's parsing.
        "raw client: tools/list stdio",
        "raw client: get_status stdio",
        "intake endpoint, 8 connections",
        "dedupe storm",
        "memory, RSS",
        "list_incidents status+severity, page of 50, 1,000 stored",
        "list_incidents status+severity, page of 50, 10,000 stored",
        "stdio cold start",
        "approve -> publish -> receipt",
        "console incident list, default view",
        "console incident detail with run timeline",
        "log source tailing",
    ):
        assert any(n.startswith(expected) for n in names), (expected, names)
    for bench in document["benchmarks"]:
        assert bench["governed"]["n"] > 0 and bench["governed"]["p50_ms"] > 0, bench
        assert bench["target"], bench
    # Every report, light-call and intake figure also stands against its durable floor (issue 18).
    for bench in document["benchmarks"]:
        if bench["name"].startswith(("report_incident", "tools/list", "get_status", "intake endpoint")):
            assert bench["durable"]["n"] > 0 and bench["durable_ratio"] > 0, bench
            assert bench["floor"]["n"] > 0 and bench["ratio"] > 0, bench
    assert "x durable" in run.stdout
    if (PG_BIN / "initdb").exists():
        assert document["skipped"] == []
        assert document["machine"]["postgresql"].startswith("postgres (PostgreSQL) 15")
        # The PostgreSQL floors are durable: the tests' cluster turns fsync off, the benchmark's turns it on.
        settings = document["machine"]["postgresql_settings"]
        assert (settings["fsync"], settings["synchronous_commit"], settings["full_page_writes"]) == ("on",) * 3
        rows = {b["name"]: b for b in document["benchmarks"] if b["name"].endswith("(PostgreSQL)")}
        assert sorted(rows) == sorted(POSTGRESQL_ROWS)
        for name, bench in rows.items():
            assert name in run.stdout, name  # printed whole, not cut at the column's width
            assert bench["target"].startswith(">= 0.8x durable" if name.startswith("report") else ">= 0.5x durable")
            # Each side's server CPU, the cluster's CPU and the statements a call sends, per call.
            for figure in ("server_cpu_ms_per_call", "database_cpu_ms_per_call", "database_statements_per_call"):
                assert set(bench["extra"][figure]) == SIDES, (name, figure)
            statements = bench["extra"]["database_statements_per_call"]
            # The durable floor writes (at least its INSERT and COMMIT), the no-op floor sends nothing.
            assert statements["floor"] == 0 and statements["durable"] >= 2 and statements["governed"] > 0, bench
    else:
        assert document["skipped"] and "make postgresql" in document["skipped"][0]
    # The last line sums up the targets (met and missed count every benchmark that has one).
    last = run.stdout.strip().splitlines()[-1]
    with_target = [b for b in document["benchmarks"] if b["passed"] is not None]
    met = sum(1 for b in with_target if b["passed"])
    assert last.startswith(f"targets: {met} met, {len(with_target) - met} missed"), last
    storm = next(b for b in document["benchmarks"] if b["name"].startswith("dedupe storm"))
    assert storm["extra"]["counts"]["incidents"] == 100
    assert storm["extra"]["counts"]["min_occurrences"] == storm["extra"]["counts"]["max_occurrences"] == 10


def test_postgresql_rows_are_skipped_with_one_line_when_its_binaries_are_missing(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    missing = tmp_path / "no-postgresql" / "bin"
    only = ["--only", "report-stdio-pg", "--only", "report-http-pg", "--only", "intake-pg"]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output), *only],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "INCIDENT_MONITOR_TEST_PG_BIN": str(missing)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    skip_lines = [line for line in run.stdout.splitlines() if "PostgreSQL rows skipped" in line]
    assert skip_lines == [
        f"PostgreSQL rows skipped: {missing / 'initdb'} is missing (Debian's PostgreSQL 15 binaries; "
        "install them with `make postgresql`)"
    ]
    document = json.loads(output.read_text())
    assert document["skipped"] == skip_lines
    assert document["benchmarks"] == [] and document["machine"]["postgresql"] is None
    assert run.stdout.strip().splitlines()[-1] == "targets: 0 met, 0 missed"


def test_help_lists_the_postgresql_rows() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    for name in ("report-stdio-pg", "report-http-pg", "intake-pg"):
        assert name in run.stdout
