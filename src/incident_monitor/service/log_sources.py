"""Operators' and agents' view of the log sources: list, status, readiness, reset-offset, replay-latest.

Each is a governed call (scope-checked, audited). Resetting offsets and replaying lines are admin
actions; replayed lines are reported as the source itself (``source:<id>``), through intake like any
other line, and move no offset.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select, update

from incident_monitor.config import LogSourceSettings
from incident_monitor.domain.log_source_state import LogSourceFile, LogSourceState
from incident_monitor.errors import InvalidInput, MonitorError, NotFound
from incident_monitor.policy.principal import Principal, source_principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.intake import report_incident
from incident_monitor.service.log_files import PathRefused, match_files, open_inside, real_root
from incident_monitor.service.log_parsing import LogParser
from incident_monitor.service.log_tailing import source_event_report
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import read_scope

_FILES = LogSourceFile.__table__  # type: ignore[attr-defined]
_STATES = LogSourceState.__table__  # type: ignore[attr-defined]

MAX_REPLAY_LINES = 10_000
MAX_REPLAY_BYTES = 16 * 1024 * 1024


# One source in ``list_sources`` (the tool). No docstring: it would become a schema description, and every
# byte counts in the default agent's tools/list budget (tests/server/test_tool_surface.py).
class SourceBrief(BaseModel):
    log_source_id: str
    problem: str | None  # None: ready


class SourceList(BaseModel):
    sources: list[SourceBrief]


class SourceFileView(BaseModel):
    path: str
    offset: int
    size: int
    device: int
    inode: int
    updated_at: datetime


class SourceStatus(BaseModel):
    log_source_id: str
    project_id: str
    source_id: str
    path: str
    format: str
    min_level: str
    poll_interval_seconds: float
    ready: bool
    problem: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_polled_at: datetime | None
    last_problem: str | None
    reports: int
    repeats: int
    rejected: int
    undecodable_bytes: int
    warnings: int
    files: list[SourceFileView]


class ReplayResult(BaseModel):
    log_source_id: str
    lines: int
    events: int
    reports: int
    rejected: int
    incident_ids: list[str]


def source_problem(monitor: Monitor, settings: LogSourceSettings) -> str | None:
    """Why the source cannot be read now (None: it can). Opens each matched file with every check of a poll."""
    workspace = monitor.config.workspace
    if workspace is None:
        return "no [workspace] root configured"
    try:
        root = real_root(workspace.root)
        for relative in match_files(root, settings.path):
            try:
                open_inside(root, relative).close()
            except FileNotFoundError:
                continue
    except PathRefused as exc:
        return exc.message
    return None


def source_readiness(monitor: Monitor) -> dict[str, str | None]:
    """Every source's id → its problem (None when ready). Local checks only; no unit of work."""
    return {s.id: source_problem(monitor, s) for s in monitor.config.sources}


def _settings(monitor: Monitor, source_id: str) -> LogSourceSettings:
    settings = monitor.config.log_source(source_id)
    if settings is None:
        known = ", ".join(s.id for s in monitor.config.sources) or "(none configured)"
        raise NotFound(f"source '{source_id}' not found; configured sources: {known}")
    return settings


def list_sources(monitor: Monitor, principal: Principal) -> SourceList:
    """Each source and why it cannot be read (None: ready)."""
    with governed_call(monitor, principal, "list_sources", {}):
        return SourceList(
            sources=[
                SourceBrief(log_source_id=s.id, problem=source_problem(monitor, s)) for s in monitor.config.sources
            ]
        )


def source_statuses(monitor: Monitor, principal: Principal) -> list[SourceStatus]:
    """Every source in full: binding, readiness, lease, counters and files (the CLI's ``sources list``)."""
    with governed_call(monitor, principal, "list_sources", {"detail": True}):
        return [_status(monitor, s) for s in monitor.config.sources]


def _status(monitor: Monitor, settings: LogSourceSettings) -> SourceStatus:
    with read_scope(monitor.engine) as connection:
        state = connection.execute(select(_STATES).where(_STATES.c.source_id == settings.id)).mappings().first()
        files = connection.execute(
            select(_FILES).where(_FILES.c.source_id == settings.id).order_by(_FILES.c.path)
        ).mappings()
        file_views = [SourceFileView.model_validate(dict(f)) for f in files]
    problem = source_problem(monitor, settings)
    record = LogSourceState.model_validate(dict(state)) if state is not None else LogSourceState(source_id=settings.id)
    return SourceStatus(
        log_source_id=settings.id,
        project_id=settings.project_id,
        source_id=settings.source_id,
        path=settings.path,
        ready=problem is None,
        problem=problem,
        format=settings.format,
        min_level=settings.min_level,
        poll_interval_seconds=settings.poll_interval_seconds,
        lease_owner=record.lease_owner,
        lease_expires_at=record.lease_expires_at,
        last_polled_at=record.last_polled_at,
        last_problem=record.last_problem,
        reports=record.reports,
        repeats=record.repeats,
        rejected=record.rejected,
        undecodable_bytes=record.undecodable_bytes,
        warnings=record.warnings,
        files=file_views,
    )


def source_status(monitor: Monitor, principal: Principal, source_id: str) -> SourceStatus:
    with governed_call(monitor, principal, "list_sources", {"id": source_id}) as call:
        call.subject_id = source_id
        return _status(monitor, _settings(monitor, source_id))


def reset_source_offset(
    monitor: Monitor, principal: Principal, source_id: str, *, to: Literal["start", "end"] = "start"
) -> SourceStatus:
    """Move every file of the source to its start (read again) or its end (skip what is there)."""
    with governed_call(monitor, principal, "reset_source_offset", {"id": source_id, "to": to}) as call:
        settings = _settings(monitor, source_id)
        call.subject_id = source_id
        connection = call.session.connection()
        offset = 0 if to == "start" else _FILES.c.size
        changed = connection.execute(update(_FILES).where(_FILES.c.source_id == source_id).values(offset=offset))
        call.notes.append(f"{changed.rowcount} file offset(s) moved to the {to}")
    return _status(monitor, settings)


def _last_lines(fd: int, size: int, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` complete lines of a file and the offset they start at."""
    end = size
    block = 64 * 1024
    start = end
    data = b""
    while start > 0 and data.count(b"\n") <= lines and end - start < MAX_REPLAY_BYTES:
        start = max(0, start - block)
        data = os.pread(fd, end - start, start)
    complete = data[: data.rfind(b"\n") + 1]
    cut = 0
    if complete.count(b"\n") > lines:
        cut = len(complete)
        for _ in range(lines + 1):
            cut = complete.rfind(b"\n", 0, cut)
        cut += 1
    return complete[cut:], start + cut


def replay_latest(monitor: Monitor, principal: Principal, source_id: str, *, lines: int = 100) -> ReplayResult:
    """Report the source's last ``lines`` lines again (through intake, deduplicated); offsets stay where they are."""
    if not 1 <= lines <= MAX_REPLAY_LINES:
        raise InvalidInput(f"lines: {lines} is out of range; give 1 to {MAX_REPLAY_LINES}")
    with governed_call(monitor, principal, "replay_source", {"id": source_id, "lines": lines}) as call:
        settings = _settings(monitor, source_id)
        call.subject_id = source_id
        workspace = monitor.config.workspace
        assert workspace is not None
        root = real_root(workspace.root)
        parser = LogParser(settings)
        reporter = source_principal(settings.id)
        result = ReplayResult(log_source_id=source_id, lines=0, events=0, reports=0, rejected=0, incident_ids=[])
        for relative in match_files(root, settings.path):
            opened = open_inside(root, relative)
            try:
                data, start = _last_lines(opened.fd, opened.size, lines)
            finally:
                opened.close()
            result.lines += data.count(b"\n")
            parsed = parser.parse(data)
            result.events += len(parsed.events)
            for event in parsed.events:
                report = source_event_report(settings, monitor, event, relative, start + event.start)
                try:
                    reported = report_incident(monitor, reporter, report)
                except MonitorError:
                    result.rejected += 1
                    continue
                result.reports += 1
                if reported.incident_id not in result.incident_ids:
                    result.incident_ids.append(reported.incident_id)
        call.notes.append(f"replayed {result.lines} line(s): {result.reports} report(s), {result.rejected} refused")
        return result


def announce_sources(monitor: Monitor) -> None:
    """One stderr line per source when a server starts: what it tails, and a refused path at once."""
    for settings in monitor.config.sources:
        problem = source_problem(monitor, settings)
        state = "tailing" if problem is None else f"REFUSED: {problem}"
        print(f"incident-monitor: log source {settings.id} ({settings.path}): {state}", file=sys.stderr, flush=True)
