"""Behaviour behind the benchmark-driven fixes: what each one must keep doing, and what it changed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.server.http_app import bind_socket
from incident_monitor.service.audit_checkpoints import verify_audit_log
from incident_monitor.service.tokens import LAST_USED_RESOLUTION, last_use_due
from incident_monitor.store.engine import DATABASE_FILENAME, dispose_engine
from incident_monitor.store.startup import open_engine
from support.monitors import MonitorFactory, call_while_a_writer_holds_the_lock
from support.paths import ROOT, TESTS

PRE_MIGRATIONS_DATABASE = TESTS / "fixtures" / "pre_migrations.sqlite3"


def test_connections_accepted_on_the_bound_socket_have_nagle_off() -> None:
    """Without TCP_NODELAY each HTTP response waited ~40 ms for the client's delayed ACK."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def test_last_use_is_written_at_most_once_a_minute() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert last_use_due(None, now)
    assert not last_use_due(now - timedelta(seconds=59), now)
    assert last_use_due(now - LAST_USED_RESOLUTION, now)
    assert last_use_due(now + timedelta(seconds=5), now)  # a clock that went back: write, don't keep a future time


@pytest.mark.sqlite_only  # SQLite's query planner on the SQLite file (the index itself is in the migrations)
def test_an_old_database_gets_the_list_index_at_open(tmp_path: Path) -> None:
    # A database from before the index predates migrations too: the committed one, without the index.
    shutil.copyfile(PRE_MIGRATIONS_DATABASE, tmp_path / DATABASE_FILENAME)
    db = sqlite3.connect(tmp_path / DATABASE_FILENAME)
    db.execute("DROP INDEX ix_incidents_status_severity_last_seen")
    db.commit()
    db.close()
    engine = open_engine(tmp_path)  # as a server started on a database from before the index
    dispose_engine(engine)
    db = sqlite3.connect(tmp_path / DATABASE_FILENAME)
    plan = " ".join(
        str(row)
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM incidents WHERE status = 'open' AND severity = 'high' "
            "ORDER BY last_seen_at DESC, incident_id DESC LIMIT 51"
        )
    )
    db.close()
    assert "ix_incidents_status_severity_last_seen" in plan and "TEMP B-TREE" not in plan


def test_concurrent_reports_from_threads_are_all_stored_and_audited(make_monitor: MonitorFactory) -> None:
    """Units of work queue on the engine's lock: nothing lost, one chained audit row per report."""
    from incident_monitor.domain.io import IncidentReport
    from incident_monitor.policy.principal import LOCAL_AGENT
    from incident_monitor.service.intake import report_incident

    monitor = make_monitor(use_clock=False)
    failures: list[BaseException] = []

    def reporter(worker: int) -> None:
        try:
            for i in range(15):
                report = IncidentReport(
                    title="Smoke failed", source="ci", event="ci.smoke.failed", level="error", fingerprint=f"fp-{i % 5}"
                )
                report_incident(monitor, LOCAL_AGENT, report)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reporter, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    with monitor.session() as session:
        incidents = session.exec(select(Incident)).all()
        assert sorted(i.occurrence_count for i in incidents) == [18] * 5
        reports = session.exec(select(AuditEvent).where(AuditEvent.action == "report_incident")).all()
        assert len(reports) == 90
        assert verify_audit_log(monitor, session).ok


def test_the_server_and_the_benchmark_floors_run_on_one_uvicorn_stack() -> None:
    """Both name the stack from server/http_stack.py, and that stack is installed (a dependency)."""
    import ast
    import importlib.util
    from pathlib import Path

    import incident_monitor.server.http_app as http_app
    from incident_monitor.server.http_stack import UVICORN_HTTP, UVICORN_LOOP

    assert importlib.util.find_spec(UVICORN_HTTP) is not None
    assert UVICORN_LOOP == "asyncio" or importlib.util.find_spec(UVICORN_LOOP) is not None
    floors = ROOT / "benchmarks" / "floors.py"
    for source in (Path(http_app.__file__).read_text(), floors.read_text()):
        calls = [
            node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("uvicorn.Config", "uvicorn.run")
        ]
        assert calls
        for call in calls:
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            assert (keywords.get("http"), keywords.get("loop")) == ("UVICORN_HTTP", "UVICORN_LOOP"), ast.unparse(call)


def test_a_token_is_checked_without_waiting_for_the_write_lock_and_revocation_is_immediate(
    make_monitor: MonitorFactory,
) -> None:
    """Bearer authentication (every HTTP request, every stdio call with a token) is a read outside any unit of
    work: it answers while another unit holds the write lock, and still sees a revocation at once."""
    from incident_monitor.errors import CredentialError
    from incident_monitor.policy.principal import local_operator
    from incident_monitor.service import tokens

    monitor = make_monitor(use_clock=False)
    issued = tokens.create_token(monitor, local_operator(), name="ci-agent", scopes=["read"])
    assert tokens.authenticate_token(monitor, issued.secret).name == "ci-agent"  # first use: recorded
    checked = call_while_a_writer_holds_the_lock(monitor, lambda: tokens.authenticate_token(monitor, issued.secret))
    assert checked.name == "ci-agent"
    tokens.revoke_token(monitor, local_operator(), "ci-agent")
    try:
        tokens.authenticate_token(monitor, issued.secret)
    except CredentialError as exc:
        assert "revoked" in exc.message
    else:
        raise AssertionError("a revoked token was accepted")
