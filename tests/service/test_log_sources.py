"""Log sources over real files and a real SQLite database, polled by hand (no sleeps, a fake clock).

Every count is exact: the lines written are the occurrences stored, so a duplicate or a lost line fails.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from incident_monitor.config import MonitorConfig, load_config
from incident_monitor.errors import ConfigError, InsufficientScope, NotFound
from incident_monitor.policy.principal import LOCAL_AGENT, local_operator
from incident_monitor.service import log_sources, status
from incident_monitor.service.governance import posture
from incident_monitor.service.log_parsing import LogParser
from incident_monitor.service.log_tailing import SourceTailer
from incident_monitor.service.monitor import Monitor
from support.log_files import database_text_at
from support.monitors import FakeClock, MonitorFactory
from support.secret_samples import GITHUB_PAT

OUTSIDE_CANARY = "outside-the-root-canary"


def source_config(root: Path, **source: Any) -> dict[str, Any]:
    return {
        "workspace": {"root": str(root)},
        "projects": [{"id": "app", "sources": ["ci"]}],
        "sources": [
            {
                "kind": "log_file",
                "id": "ci-log",
                "project_id": "app",
                "source_id": "ci",
                "path": "logs/ci.log",
                **source,
            }
        ],
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ws" / "logs").mkdir(parents=True)
    return tmp_path / "ws"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.log"
    path.parent.mkdir()
    path.write_text(f"ERROR {OUTSIDE_CANARY} must never be read\n")
    return path


def tailer(monitor: Monitor, owner: str = "replica-a") -> SourceTailer:
    return SourceTailer(monitor, monitor.config.sources[0], owner=owner)


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def incidents(monitor: Monitor) -> list[tuple[str, int]]:
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        rows = db.execute("SELECT title, occurrence_count FROM incidents WHERE source = 'ci' ORDER BY title").fetchall()
    return [(title, count) for title, count in rows]


def table_count(monitor: Monitor, table: str) -> int:
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 (a test's own names)


def occurrences(monitor: Monitor) -> int:
    return sum(count for _, count in incidents(monitor))


def database_text(monitor: Monitor) -> str:
    return database_text_at(monitor.data_dir)


# --- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"path": "../elsewhere.log"}, "sources[0].path"),
        ({"path": "/var/log/syslog"}, "is absolute"),
        ({"project_id": "nope"}, "sources[0].project_id: unknown project 'nope'"),
        ({"source_id": "web"}, "sources[0].source_id: 'web' is not a source of project 'app'"),
        ({"format": "xml"}, "sources[0].format"),
        ({"kind": "syslog"}, "sources[0].kind"),
    ],
)
def test_a_bad_source_is_refused_at_load_naming_the_key(
    tmp_path: Path, root: Path, change: dict[str, Any], expected: str
) -> None:
    config = source_config(root)
    config["sources"][0].update(change)
    path = tmp_path / "bad.toml"
    path.write_text(_toml(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in caught.value.message


def test_sources_need_a_workspace_root(root: Path) -> None:
    config = source_config(root)
    del config["workspace"]
    with pytest.raises(ValueError, match=r"\[workspace\] root"):
        MonitorConfig.model_validate(config)


def test_a_relative_root_is_relative_to_the_config_file(tmp_path: Path, root: Path) -> None:
    config = source_config(Path("ws"))
    path = tmp_path / "config.toml"
    path.write_text(_toml(config))
    loaded = load_config(path)
    assert loaded.workspace is not None and loaded.workspace.root == tmp_path / "ws"
    defaults = loaded.sources[0]
    assert (defaults.poll_interval_seconds, defaults.max_bytes_per_poll, defaults.fingerprint_cooldown_minutes) == (
        60,
        256 * 1024,
        60,
    )


def _toml(config: dict[str, Any]) -> str:
    lines = [f'[workspace]\nroot = "{config["workspace"]["root"]}"\n'] if "workspace" in config else []
    for project in config["projects"]:
        lines.append(f'[[projects]]\nid = "{project["id"]}"\nsources = {project["sources"]!r}\n'.replace("'", '"'))
    for source in config["sources"]:
        body = "\n".join(f'{k} = "{v}"' for k, v in source.items())
        lines.append(f"[[sources]]\n{body}\n")
    return "\n".join(lines)


# --- tailing -----------------------------------------------------------------------------------------


def test_appended_error_lines_become_reports_and_the_rest_is_skipped(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    append(log, "2026-11-26 INFO build started\n2026-11-26 ERROR step lint failed: exit 1\n")
    outcome = tailer(monitor).poll()
    assert (outcome.reports, outcome.problem) == (1, None)
    append(log, "2026-11-26 WARNING slow step\n2026-11-26 ERROR step test failed: 3 tests\nINFO retried after error\n")
    tailer_b = tailer(monitor)
    assert tailer_b.poll().reports == 1
    assert incidents(monitor) == [("step lint failed: exit 1", 1), ("step test failed: 3 tests", 1)]
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        source, project, reporter = db.execute("SELECT source, project_id, reported_by FROM incidents").fetchone()
    assert (source, project, reporter) == ("ci", "app", "source:ci-log")


def test_the_keyword_scan_finds_each_error_line_once_whatever_its_case() -> None:
    settings = MonitorConfig.model_validate(source_config(Path("/ws"))).sources[0]
    parser = LogParser(settings)
    text = (
        "INFO all good\n"
        "2026-11-26 Error: fatal exception in worker\n"  # three keywords, one line: one event
        "2026-11-26 eRRoR disk full\n"
        '{"level":50,"msg":"pino says boom"}\n'  # pino: a number, no blanks
        "INFO an errorless line\n"  # a keyword inside a word at INFO level: not an event
        "CRITICAL out of memory"  # no newline: the chunk's last line
    )
    events = parser.parse(text.encode()).events
    assert [e.title for e in events] == [
        "fatal exception in worker",
        "disk full",
        "pino says boom",
        "out of memory",
    ]
    assert parser.parse(b"").events == [] and parser.parse(b"INFO quiet\n").events == []


def test_a_partial_last_line_waits_for_its_newline(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    append(log, "ERROR deploy fail")
    tail = tailer(monitor)
    assert tail.poll().reports == 0
    append(log, "ed on host 3\n")
    assert tail.poll().reports == 1
    assert incidents(monitor) == [("deploy failed on host 3", 1)]


def test_a_python_traceback_is_one_report_not_one_per_line(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    append(
        root / "logs" / "ci.log",
        "INFO collecting\n"
        "Traceback (most recent call last):\n"
        '  File "/app/run.py", line 10, in <module>\n'
        "    main()\n"
        '  File "/app/run.py", line 7, in main\n'
        '    raise KeyError("user")\n'
        "KeyError: 'user'\n"
        "INFO done\n",
    )
    assert tailer(monitor).poll().reports == 1
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        title, detail = db.execute("SELECT title, detail FROM incidents").fetchone()
    assert title == "KeyError: 'user'"
    assert 'File "/app/run.py", line 7, in main' in detail and "INFO done" not in detail


def test_java_and_node_stack_traces_are_one_report_each(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    append(
        root / "logs" / "ci.log",
        "12:00:01 ERROR [main] request failed\n"
        "java.lang.IllegalStateException: pool exhausted\n"
        "\tat com.example.Pool.take(Pool.java:42)\n"
        "\tat com.example.App.main(App.java:7)\n"
        "Caused by: java.io.IOException: socket closed\n"
        "\tat com.example.Net.read(Net.java:9)\n"
        "\t... 2 more\n"
        "TypeError: cannot read properties of undefined\n"
        "    at handler (/srv/app.js:10:5)\n"
        "    at process (node:internal/process:1:1)\n",
    )
    assert tailer(monitor).poll().reports == 2
    assert [t for t, _ in incidents(monitor)] == [
        "TypeError: cannot read properties of undefined",
        "[main] request failed",
    ]


@pytest.mark.parametrize(
    ("line", "title"),
    [
        ('{"levelname": "ERROR", "message": "python json failed", "exc_info": "Traceback ..."}', "python json failed"),
        ('{"event": "structlog failed", "level": "error", "timestamp": "2026-11-26T12:00:00Z"}', "structlog failed"),
        ('{"level":50,"time":1764158400000,"msg":"pino failed","pid":1}', "pino failed"),
        ('{"name":"api","level":60,"msg":"bunyan fatal","v":0}', "bunyan fatal"),
    ],
)
def test_json_lines_of_common_loggers(make_monitor: MonitorFactory, root: Path, line: str, title: str) -> None:
    monitor = make_monitor(source_config(root))
    append(root / "logs" / "ci.log", '{"level":30,"msg":"an info line with error in it"}\n' + line + "\n")
    assert tailer(monitor).poll().reports == 1
    assert incidents(monitor) == [(title, 1)]


def test_configured_json_field_names(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(
        source_config(root, format="json", level_field="sev", message_field="text", event_field="kind")
    )
    append(root / "logs" / "ci.log", '{"sev": "CRITICAL", "text": "disk full", "kind": "storage.full"}\n')
    assert tailer(monitor).poll().reports == 1
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        assert db.execute("SELECT title, event, severity FROM incidents").fetchone() == (
            "disk full",
            "storage.full",
            "critical",
        )


def test_a_restart_resumes_where_it_stopped_without_duplicates(
    make_monitor: MonitorFactory, root: Path, tmp_path: Path
) -> None:
    log = root / "logs" / "ci.log"
    first = make_monitor(source_config(root))
    append(log, "".join(f"ERROR job {n} failed on worker-{n}\n" for n in range(5)))
    before = tailer(first, "replica-before")
    before.poll()
    before.release()
    first.close()
    append(log, "".join(f"ERROR job {n} failed on worker-{n}\n" for n in range(5, 8)))
    second = make_monitor(source_config(root), data_dir=tmp_path / "data")
    tailer(second, "replica-after").poll()
    # 8 lines written, 8 occurrences stored: none lost, none counted twice (the titles share one fingerprint).
    assert incidents(second) == [("job 0 failed on worker-0", 8)]
    assert tailer(second, "replica-after").poll().reports == 0
    assert occurrences(second) == 8


def test_a_crashed_replica_s_lease_expires_and_another_resumes(
    make_monitor: MonitorFactory, root: Path, clock: FakeClock
) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    append(log, "ERROR first failure\n")
    assert tailer(monitor, "replica-a").poll().reports == 1
    append(log, "ERROR second failure\n")
    other = tailer(monitor, "replica-b")
    assert other.poll().leased_elsewhere  # replica-a holds the lease (it "crashed" without releasing)
    clock.advance(minutes=5)
    assert other.poll().reports == 1
    assert incidents(monitor) == [("first failure", 1), ("second failure", 1)]


def test_two_replicas_tail_a_source_once(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    a, b = tailer(monitor, "replica-a"), tailer(monitor, "replica-b")
    for n in range(4):
        append(log, f"ERROR failure number {n} on node {n}\n")
        a.poll()
        b.poll()
    assert occurrences(monitor) == 4


def test_rotation_finishes_the_old_file_then_reads_the_new_one(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    tail = tailer(monitor)
    append(log, "ERROR alpha failed\n")
    tail.poll()
    append(log, "ERROR bravo failed\n")  # written before the rotation, not read yet
    log.rename(root / "logs" / "ci.log.1")
    append(log, "ERROR charlie failed\nERROR alpha failed\n")
    tail.poll()
    tail.poll()
    assert incidents(monitor) == [("alpha failed", 2), ("bravo failed", 1), ("charlie failed", 1)]
    assert table_count(monitor, "log_source_files") == 1  # the rotated file, read to its end, is forgotten


def test_truncation_is_detected_and_the_file_read_again(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    tail = tailer(monitor)
    append(log, "INFO " + "x" * 200 + "\nERROR before truncation\n")
    tail.poll()
    log.write_text("ERROR after truncation\n")  # same inode, smaller than the offset
    outcome = tail.poll()
    assert outcome.reports == 1 and any("truncated" in w for w in outcome.warnings)
    assert incidents(monitor) == [("after truncation", 1), ("before truncation", 1)]


def test_undecodable_bytes_are_skipped_and_counted(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    with (root / "logs" / "ci.log").open("ab") as f:
        f.write(b"ERROR bad \xff\xfe bytes here\n")
    assert tailer(monitor).poll().reports == 1
    assert incidents(monitor) == [("bad bytes here", 1)]
    assert log_sources.source_status(monitor, local_operator(), "ci-log").undecodable_bytes == 2


def test_a_repeat_within_the_cooldown_bumps_the_count_without_a_draft(
    make_monitor: MonitorFactory, root: Path, clock: FakeClock
) -> None:
    monitor = make_monitor(source_config(root, fingerprint_cooldown_minutes=10))
    log = root / "logs" / "ci.log"
    tail = tailer(monitor)
    append(log, "ERROR cache miss storm on shard 1\n" * 3)
    outcome = tail.poll()
    assert (outcome.reports, outcome.repeats) == (1, 2)
    clock.advance(minutes=11)
    append(log, "ERROR cache miss storm on shard 2\n")
    assert tail.poll().reports == 1  # past the cooldown: through intake again (deduplicated there)
    assert incidents(monitor) == [("cache miss storm on shard 1", 4)]
    assert table_count(monitor, "drafts") == 1


def test_a_report_intake_refuses_is_counted_and_the_offset_still_moves(
    make_monitor: MonitorFactory, root: Path
) -> None:
    config = source_config(root, event_field="event_type")
    monitor = make_monitor(config)
    append(root / "logs" / "ci.log", '{"level": "error", "msg": "x", "event_type": "worker.heartbeat"}\n')
    tail = tailer(monitor)
    assert (tail.poll().rejected, tail.poll().rejected) == (1, 0)


def test_a_canary_secret_in_a_log_line_is_redacted_everywhere(
    make_monitor: MonitorFactory, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = make_monitor(source_config(root))
    append(root / "logs" / "ci.log", f"ERROR push failed with token {GITHUB_PAT}\nTraceback: token={GITHUB_PAT}\n")
    tailer(monitor).poll()
    statuses = log_sources.source_statuses(monitor, local_operator())
    assert incidents(monitor) == [("push failed with token [REDACTED]", 1)]
    assert GITHUB_PAT not in database_text(monitor)
    assert GITHUB_PAT not in caplog.text
    assert GITHUB_PAT not in str([s.model_dump() for s in statuses])


# --- security ----------------------------------------------------------------------------------------


def test_a_symlink_out_of_the_root_is_refused_with_a_finding(
    make_monitor: MonitorFactory, root: Path, outside: Path
) -> None:
    (root / "logs" / "ci.log").symlink_to(outside)
    monitor = make_monitor(source_config(root))
    outcome = tailer(monitor).poll()
    assert outcome.problem is not None and "outside the workspace root" in outcome.problem
    assert incidents(monitor) == []
    view = status.get_status(monitor, local_operator())
    assert view.readiness.source_ready == {"ci-log": False}
    assert any("log source 'ci-log'" in p for p in view.problems)
    report = posture.run_posture_checks(monitor, local_operator(), [], rules=["log-source-path-refused"])
    assert [f.rule_id for f in report.findings] == ["log-source-path-refused"]
    assert log_sources.source_status(monitor, local_operator(), "ci-log").last_problem == outcome.problem


def test_a_symlinked_directory_out_of_the_root_is_refused(
    make_monitor: MonitorFactory, root: Path, outside: Path
) -> None:
    (root / "logs").rmdir()
    (root / "logs").symlink_to(outside.parent)
    (outside.parent / "ci.log").write_text(f"ERROR {OUTSIDE_CANARY}\n")
    monitor = make_monitor(source_config(root))
    assert tailer(monitor).poll().problem is not None
    assert OUTSIDE_CANARY not in database_text(monitor)


def test_a_symlink_swapped_in_after_start_is_refused(make_monitor: MonitorFactory, root: Path, outside: Path) -> None:
    monitor = make_monitor(source_config(root))
    log = root / "logs" / "ci.log"
    tail = tailer(monitor)
    append(log, "ERROR legit failure\n")
    assert tail.poll().reports == 1
    log.unlink()
    log.symlink_to(outside)
    outcome = tail.poll()
    assert outcome.problem is not None and outcome.reports == 0
    assert OUTSIDE_CANARY not in database_text(monitor)
    assert log_sources.list_sources(monitor, LOCAL_AGENT).sources[0].problem is not None


def test_a_glob_reaching_a_symlink_out_of_the_root_reads_nothing_outside(
    make_monitor: MonitorFactory, root: Path, outside: Path
) -> None:
    (root / "logs" / "a.log").write_text("ERROR inside failure\n")
    (root / "logs" / "b.log").symlink_to(outside)
    monitor = make_monitor(source_config(root, path="logs/*.log"))
    assert tailer(monitor).poll().problem is not None
    assert OUTSIDE_CANARY not in database_text(monitor)


def test_a_fifo_is_refused_without_blocking(make_monitor: MonitorFactory, root: Path) -> None:
    os.mkfifo(root / "logs" / "ci.log")
    monitor = make_monitor(source_config(root))
    outcome = tailer(monitor).poll()
    assert outcome.problem is not None and "not a regular file" in outcome.problem


def test_a_device_is_refused(make_monitor: MonitorFactory, root: Path) -> None:
    (root / "logs" / "ci.log").symlink_to("/dev/null")
    monitor = make_monitor(source_config(root))
    assert tailer(monitor).poll().problem is not None


# --- operators ---------------------------------------------------------------------------------------


def test_reset_offset_is_an_audited_admin_action(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root))
    append(root / "logs" / "ci.log", "ERROR once failed\n")
    tail = tailer(monitor)
    tail.poll()
    with pytest.raises(InsufficientScope):
        log_sources.reset_source_offset(monitor, LOCAL_AGENT, "ci-log")
    with pytest.raises(NotFound):
        log_sources.reset_source_offset(monitor, local_operator(), "nope")
    view = log_sources.reset_source_offset(monitor, local_operator(), "ci-log")
    assert [f.offset for f in view.files] == [0]
    tailer(monitor).poll()  # read again: deduplicated by fingerprint into the same incident
    assert incidents(monitor) == [("once failed", 2)]
    with sqlite3.connect(monitor.data_dir / "incident-monitor.sqlite3") as db:
        rows = db.execute(
            "SELECT principal, decision FROM audit_events WHERE action = 'reset_source_offset'"
        ).fetchall()
    assert sorted(rows) == [
        ("local-agent", "deny"),
        (local_operator().name, "allow"),
        (local_operator().name, "rejected"),
    ]


def test_replay_latest_reports_the_last_lines_again_without_moving_offsets(
    make_monitor: MonitorFactory, root: Path
) -> None:
    monitor = make_monitor(source_config(root))
    append(root / "logs" / "ci.log", "ERROR old failure\n" + "INFO filler\n" * 5 + "ERROR recent failure\n")
    result = log_sources.replay_latest(monitor, local_operator(), "ci-log", lines=3)
    assert (result.lines, result.reports) == (3, 1)
    assert incidents(monitor) == [("recent failure", 1)]
    assert log_sources.source_status(monitor, local_operator(), "ci-log").files == []
    with pytest.raises(InsufficientScope):
        log_sources.replay_latest(monitor, LOCAL_AGENT, "ci-log")


def test_the_inventory_lists_sources(make_monitor: MonitorFactory, root: Path) -> None:
    from incident_monitor.service.governance import inventory

    monitor = make_monitor(source_config(root))
    view = inventory.get_authority_inventory(monitor, local_operator(), [])
    assert [(s.log_source_id, s.principal, s.ready) for s in view.log_sources] == [("ci-log", "source:ci-log", True)]
    assert "ci" in view.sources


def test_a_stack_trace_cut_by_the_byte_budget_is_still_one_report(make_monitor: MonitorFactory, root: Path) -> None:
    monitor = make_monitor(source_config(root, max_bytes_per_poll=4096))
    frames = "".join(f'  File "/app/m{n}.py", line {n}, in f{n}\n    step_{n}()\n' for n in range(60))
    append(
        root / "logs" / "ci.log",
        "INFO " + "x" * 3000 + "\nTraceback (most recent call last):\n" + frames + "OSError: disk\n",
    )
    outcomes = tailer(monitor).poll_until_caught_up()
    assert sum(o.reports for o in outcomes) == 1
    assert incidents(monitor) == [("OSError: disk", 1)]


def test_only_readers_list_sources_and_a_source_can_only_report(make_monitor: MonitorFactory, root: Path) -> None:
    from incident_monitor.policy.principal import source_principal

    monitor = make_monitor(source_config(root))
    assert log_sources.list_sources(monitor, LOCAL_AGENT).sources[0].log_source_id == "ci-log"
    with pytest.raises(InsufficientScope, match="incident_monitor:read"):
        log_sources.list_sources(monitor, source_principal("ci-log"))
    with pytest.raises(InsufficientScope):
        log_sources.reset_source_offset(monitor, source_principal("ci-log"), "ci-log")
    assert source_principal("ci-log").scopes == frozenset({"incident_monitor:report"})
