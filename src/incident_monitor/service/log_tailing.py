"""Tailing a log source: new complete lines → reports through intake, as the principal ``source:<id>``.

Nothing lost, nothing repeated: a poll reads from the stored offset, and the new offset is written in
the same unit of work as the reports its lines produced (intake's units nest in it as savepoints), so a
crash leaves both or neither. A partial last line is left for the next poll. Files are known by their
identity (device, inode, and a digest of their first bytes): a renamed (rotated) file is finished where
it went before the new file at the path is read from its start; a file smaller than its offset was
truncated and is read again from its start.

Replicas: a source is tailed by the replica holding its lease (a row claimed with a conditional UPDATE
that expires), renewed by every poll in the poll's own unit of work.

Cooldown: the first error with a given fingerprint goes through intake (redaction, limits, noise rules,
dedupe); a repeat within ``fingerprint_cooldown_minutes`` only bumps the incident's occurrence count, in
one governed call per poll, so a log repeating one error a million times costs one report.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from incident_monitor.config import LogSourceSettings
from incident_monitor.domain.enums import IncidentStatus
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.log_source_state import LogSourceFile, LogSourceState
from incident_monitor.domain.models import Incident
from incident_monitor.errors import MonitorError
from incident_monitor.policy.principal import Principal, source_principal
from incident_monitor.service.governed import governed_call
from incident_monitor.service.intake import compute_fingerprint, report_incident
from incident_monitor.service.log_files import (
    OpenedFile,
    PathRefused,
    find_by_identity,
    match_files,
    open_inside,
    read_at,
    real_root,
)
from incident_monitor.service.log_parsing import LogEvent, LogParser
from incident_monitor.service.monitor import Monitor
from incident_monitor.store.engine import read_scope

logger = logging.getLogger(__name__)

_FILES = LogSourceFile.__table__  # type: ignore[attr-defined]
_STATES = LogSourceState.__table__  # type: ignore[attr-defined]
_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]

HEAD_BYTES = 64
MIN_LEASE = timedelta(seconds=30)
MAX_COOLDOWN_ENTRIES = 10_000


def replica_id() -> str:
    """This process, for the lease: host, pid and a random part (a restarted pid is another replica)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _head_digest(opened: OpenedFile, size: int) -> str:
    head = os.pread(opened.fd, min(HEAD_BYTES, size), 0)
    return f"{len(head)}:{hashlib.sha256(head).hexdigest()[:32]}"


def _same_head(opened: OpenedFile, stored: str) -> bool:
    length, _, _ = stored.partition(":")
    if not length.isdigit():
        return False
    head = os.pread(opened.fd, int(length), 0)
    return f"{len(head)}:{hashlib.sha256(head).hexdigest()[:32]}" == stored


@dataclass(slots=True)
class PollOutcome:
    source_id: str
    bytes_read: int = 0
    events: int = 0
    reports: int = 0
    repeats: int = 0
    rejected: int = 0
    undecodable_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None  # why the source could not be read (a refused path, a missing root)
    leased_elsewhere: bool = False
    more_pending: bool = False  # the byte budget ran out before the end of a file: poll again soon
    recorded_undecodable: int = 0  # how much of the counts above the state row holds already
    recorded_warnings: int = 0


@dataclass(slots=True)
class _Work:
    opened: OpenedFile
    basis: int | None  # the stored offset this read started from (None: a file not seen before)
    offset: int
    stale_key: tuple[int, int] | None = None  # a row to drop: the file it named is gone


def source_event_report(
    settings: LogSourceSettings, monitor: Monitor, event: LogEvent, path: str, offset: int
) -> IncidentReport:
    """The report for one event, bound to the source's project and source, within the size limits."""
    limits = monitor.config.limits
    context: dict[str, object] = {"log_source": settings.id, "path": path, "offset": offset}
    if event.timestamp:
        context["timestamp"] = event.timestamp[:100]
    title = " ".join(event.title.split())[: limits.max_title_chars] or f"{event.level} in {path}"
    detail = event.detail
    if len(detail) > limits.max_detail_chars:
        marker = "\n[… truncated by the log source]"
        detail = detail[: limits.max_detail_chars - len(marker)] + marker
    return IncidentReport(
        title=title,
        detail=detail,
        source=settings.source_id,
        event=(event.event or f"log.{event.level}")[:200],
        level=event.level,
        project_id=settings.project_id,
        evidence_refs=[f"log:{path}@{offset}"[: limits.max_evidence_ref_chars]],
        context=context,
    )


class SourceTailer:
    """Polls one source. Not thread-safe: one poller per source per process (the runner's thread)."""

    def __init__(self, monitor: Monitor, settings: LogSourceSettings, *, owner: str | None = None) -> None:
        self.monitor = monitor
        self.settings = settings
        self.owner = owner or replica_id()
        self.principal: Principal = source_principal(settings.id)
        self.parser = LogParser(settings)
        # Raw fingerprint (in memory only: the title may hold a secret before intake redacts it) →
        # (incident_id, when that report went through intake).
        self._cooldown: dict[str, tuple[str, datetime]] = {}

    @property
    def lease_length(self) -> timedelta:
        return max(MIN_LEASE, timedelta(seconds=3 * self.settings.poll_interval_seconds))

    # --- one poll --------------------------------------------------------------------------------

    def poll(self) -> PollOutcome:
        outcome = PollOutcome(self.settings.id)
        if self._leased_elsewhere():
            outcome.leased_elsewhere = True
            return outcome
        workspace = self.monitor.config.workspace
        assert workspace is not None  # the config requires one when sources are configured
        try:
            root = real_root(workspace.root)
            work = self._plan(root, outcome)
        except PathRefused as exc:
            return self._refused(outcome, exc.message)
        budget = self.settings.max_bytes_per_poll
        try:
            for item in work:
                if budget <= 0:
                    outcome.more_pending = True
                    break
                budget -= self._read_file(item, budget, outcome)
        finally:
            for item in work:
                item.opened.close()
        if outcome.problem is None and not outcome.leased_elsewhere:
            self._record_clean_poll(outcome)
        return outcome

    def _plan(self, root: Path, outcome: PollOutcome) -> list[_Work]:
        """What to read this poll: rotated files' tails first (older lines), then the files at the path."""
        rows = {(r.device, r.inode): r for r in self._stored_files()}
        current: list[_Work] = []
        seen: set[tuple[int, int]] = set()
        refused: str | None = None
        for relative in match_files(root, self.settings.path):
            try:
                opened = open_inside(root, relative)
            except FileNotFoundError:
                continue  # removed between the listing and the open: the next poll sees what replaced it
            except PathRefused as exc:
                refused = exc.message
                continue
            key = (opened.device, opened.inode)
            seen.add(key)
            row = rows.get(key)
            if row is None:
                current.append(_Work(opened, None, 0))
            elif opened.size < row.offset or not _same_head(opened, row.head_digest):
                # Truncated (smaller than its offset), or rewritten (its first bytes changed; or the inode was
                # reused by a new file): read again from its start.
                outcome.warnings.append(f"{relative} was truncated or replaced: read again from its start")
                current.append(_Work(opened, row.offset, 0))
            else:
                current.append(_Work(opened, row.offset, row.offset))
        if refused is not None:
            for item in current:
                item.opened.close()
            raise PathRefused(refused)
        rotated: list[_Work] = []
        for key, row in rows.items():
            if key in seen:
                continue
            moved = find_by_identity(root, row.path, row.device, row.inode)
            opened_moved: OpenedFile | None = None
            if moved is not None:
                try:
                    opened_moved = open_inside(root, moved)
                except (PathRefused, FileNotFoundError):
                    opened_moved = None
            if opened_moved is not None and (opened_moved.device, opened_moved.inode) == key:
                rotated.append(_Work(opened_moved, row.offset, row.offset, stale_key=key))
            else:
                if opened_moved is not None:
                    opened_moved.close()
                outcome.warnings.append(
                    f"{row.path} was rotated away and is gone: {row.size - row.offset} byte(s) unread"
                )
                self._forget(key)
        return rotated + current

    def _read_file(self, item: _Work, budget: int, outcome: PollOutcome) -> int:
        """Read and report one file's new complete lines; returns the bytes read (against the budget)."""
        opened = item.opened
        size = os.fstat(opened.fd).st_size
        data = read_at(opened, item.offset, min(budget, max(size - item.offset, 0)))
        if not data:
            if item.stale_key is not None:
                self._commit(item, [], item.offset, outcome, size, finished=True)  # a rotated file, done
            return 0
        at_end = item.offset + len(data) >= size
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if not at_end:
                outcome.warnings.append(f"{opened.relative}: a line longer than max_bytes_per_poll was cut")
                cut = len(data)
            elif item.stale_key is not None:
                cut = len(data)  # a rotated file's unterminated last line: nothing more will be written to it
            else:
                return len(data)  # a partial last line waits for its newline
        # Not at the end, or a partial line follows: a stack trace reaching the cut may go on.
        parsed = self.parser.parse(data[:cut], more_pending=not at_end or cut < len(data))
        outcome.bytes_read += parsed.consumed
        outcome.undecodable_bytes += parsed.undecodable_bytes
        outcome.events += len(parsed.events)
        outcome.more_pending = outcome.more_pending or not at_end
        new_offset = item.offset + parsed.consumed
        finished = item.stale_key is not None and new_offset >= size
        self._commit(item, parsed.events, new_offset, outcome, size, finished=finished)
        return len(data)

    # --- the unit of work ---------------------------------------------------------------------------

    def _commit(
        self, item: _Work, events: list[LogEvent], new_offset: int, outcome: PollOutcome, size: int, *, finished: bool
    ) -> None:
        opened = item.opened
        now = self.monitor.clock()
        repeats: dict[str, int] = {}
        reports = rejected = 0
        with self.monitor.session() as session:
            connection = session.connection()
            if not self._claim(connection, now):
                outcome.leased_elsewhere = True
                return
            stored = connection.execute(
                select(_FILES.c.offset).where(
                    _FILES.c.source_id == self.settings.id,
                    _FILES.c.device == opened.device,
                    _FILES.c.inode == opened.inode,
                )
            ).scalar_one_or_none()
            if stored != item.basis:
                # Moved since we read it (an operator's reset-offset, another replica): read again next poll.
                outcome.more_pending = True
                return
            for event in events:
                report = source_event_report(
                    self.settings, self.monitor, event, opened.relative, item.offset + event.start
                )
                key = compute_fingerprint(report)
                hit = self._cooldown.get(key)
                cooldown = timedelta(minutes=self.settings.fingerprint_cooldown_minutes)
                if hit is not None and now - hit[1] < cooldown:
                    repeats[hit[0]] = repeats.get(hit[0], 0) + 1
                    continue
                try:
                    result = report_incident(self.monitor, self.principal, report)
                except MonitorError as exc:
                    rejected += 1
                    logger.info("log source %s: a report was refused: %s", self.settings.id, exc.code)
                    continue
                reports += 1
                self._remember(key, result.incident_id, now)
            if repeats:
                bumped = self._bump(repeats, now)
                for incident_id in set(repeats) - bumped:
                    # Resolved meanwhile: the next repeat goes through intake (and reopens it).
                    self._cooldown = {k: v for k, v in self._cooldown.items() if v[0] != incident_id}
            self._store_offset(connection, item, new_offset, size, now, finished=finished)
            undecodable = outcome.undecodable_bytes - outcome.recorded_undecodable
            warnings = len(outcome.warnings) - outcome.recorded_warnings
            repeat_count = sum(repeats.values())
            connection.execute(
                update(_STATES)
                .where(_STATES.c.source_id == self.settings.id)
                .values(
                    last_polled_at=now,
                    reports=_STATES.c.reports + reports,
                    repeats=_STATES.c.repeats + repeat_count,
                    rejected=_STATES.c.rejected + rejected,
                    undecodable_bytes=_STATES.c.undecodable_bytes + undecodable,
                    warnings=_STATES.c.warnings + warnings,
                )
            )
        outcome.reports += reports
        outcome.repeats += repeat_count
        outcome.rejected += rejected
        outcome.recorded_undecodable += undecodable
        outcome.recorded_warnings += warnings
        if undecodable:
            logger.warning("log source %s: skipped %d undecodable (non UTF-8) byte(s)", self.settings.id, undecodable)

    def _bump(self, repeats: dict[str, int], now: datetime) -> set[str]:
        """Count repeats within the cooldown on their incidents (one governed call); returns those bumped."""
        total = sum(repeats.values())
        bumped: set[str] = set()
        with governed_call(self.monitor, self.principal, "report_incident", {"repeats": repeats}) as call:
            connection = call.session.connection()
            for incident_id, count in sorted(repeats.items()):
                changed = connection.execute(
                    update(_INCIDENTS)
                    .where(_INCIDENTS.c.incident_id == incident_id, _INCIDENTS.c.status != IncidentStatus.resolved)
                    .values(occurrence_count=_INCIDENTS.c.occurrence_count + count, last_seen_at=now)
                ).rowcount
                if changed:
                    bumped.add(incident_id)
            call.subject_id = next(iter(sorted(bumped)), None)
            call.notes.append(
                f"{total} repeat(s) within the fingerprint cooldown of log source {self.settings.id}: "
                "occurrence counts bumped, no new draft"
            )
        return bumped

    def _remember(self, key: str, incident_id: str, now: datetime) -> None:
        if len(self._cooldown) >= MAX_COOLDOWN_ENTRIES:
            cooldown = timedelta(minutes=self.settings.fingerprint_cooldown_minutes)
            self._cooldown = {k: v for k, v in self._cooldown.items() if now - v[1] < cooldown}
            if len(self._cooldown) >= MAX_COOLDOWN_ENTRIES:
                self._cooldown.clear()
        self._cooldown[key] = (incident_id, now)

    def _store_offset(
        self, connection: Connection, item: _Work, new_offset: int, size: int, now: datetime, *, finished: bool
    ) -> None:
        opened = item.opened
        where = and_(
            _FILES.c.source_id == self.settings.id, _FILES.c.device == opened.device, _FILES.c.inode == opened.inode
        )
        if finished:
            connection.execute(delete(_FILES).where(where))  # a rotated file read to its end: never read again
            return
        values = {
            "path": opened.relative,
            "offset": new_offset,
            "size": size,
            "head_digest": _head_digest(opened, size),
            "updated_at": now,
        }
        if item.basis is None:
            connection.execute(
                insert(_FILES).values(source_id=self.settings.id, device=opened.device, inode=opened.inode, **values)
            )
        else:
            connection.execute(update(_FILES).where(where).values(**values))

    # --- lease and state -------------------------------------------------------------------------

    def _claim(self, connection: Connection, now: datetime) -> bool:
        """Hold (or renew) this source's lease; False when another replica holds a live one."""
        until = now + self.lease_length
        claimed = connection.execute(
            update(_STATES)
            .where(
                _STATES.c.source_id == self.settings.id,
                or_(
                    _STATES.c.lease_owner == self.owner,
                    _STATES.c.lease_owner.is_(None),
                    _STATES.c.lease_expires_at < now,
                ),
            )
            .values(lease_owner=self.owner, lease_expires_at=until)
        ).rowcount
        if claimed:
            return True
        exists = connection.execute(select(_STATES.c.source_id).where(_STATES.c.source_id == self.settings.id)).first()
        if exists is not None:
            return False
        connection.execute(
            insert(_STATES).values(source_id=self.settings.id, lease_owner=self.owner, lease_expires_at=until)
        )
        return True

    def _leased_elsewhere(self) -> bool:
        with read_scope(self.monitor.engine) as connection:
            row = connection.execute(
                select(_STATES.c.lease_owner, _STATES.c.lease_expires_at).where(_STATES.c.source_id == self.settings.id)
            ).first()
        if row is None or row.lease_owner in (None, self.owner) or row.lease_expires_at is None:
            return False
        return bool(row.lease_expires_at >= self.monitor.clock())

    def _stored_files(self) -> list[LogSourceFile]:
        with read_scope(self.monitor.engine) as connection:
            rows = connection.execute(select(_FILES).where(_FILES.c.source_id == self.settings.id)).mappings().all()
        return [LogSourceFile.model_validate(dict(r)) for r in rows]

    def _forget(self, key: tuple[int, int]) -> None:
        with self.monitor.session() as session:
            session.connection().execute(
                delete(_FILES).where(
                    _FILES.c.source_id == self.settings.id, _FILES.c.device == key[0], _FILES.c.inode == key[1]
                )
            )

    def _refused(self, outcome: PollOutcome, problem: str) -> PollOutcome:
        outcome.problem = problem
        logger.warning("log source %s: %s", self.settings.id, problem)
        now = self.monitor.clock()
        with self.monitor.session() as session:
            connection = session.connection()
            if self._claim(connection, now):
                connection.execute(
                    update(_STATES)
                    .where(_STATES.c.source_id == self.settings.id)
                    .values(last_problem=problem, last_problem_at=now, last_polled_at=now)
                )
            else:
                outcome.leased_elsewhere = True
        return outcome

    def _record_clean_poll(self, outcome: PollOutcome) -> None:
        """A poll that read nothing still says the source is reachable (and clears an old problem)."""
        now = self.monitor.clock()
        with read_scope(self.monitor.engine) as connection:
            row = connection.execute(
                select(_STATES.c.last_problem, _STATES.c.last_polled_at).where(_STATES.c.source_id == self.settings.id)
            ).first()
        if row is not None and row.last_problem is None and outcome.bytes_read:
            return  # the poll's own unit of work recorded it
        with self.monitor.session() as session:
            connection = session.connection()
            if self._claim(connection, now):
                connection.execute(
                    update(_STATES)
                    .where(_STATES.c.source_id == self.settings.id)
                    .values(last_problem=None, last_problem_at=None, last_polled_at=now)
                )

    def release(self) -> None:
        """Give the lease up (a clean stop), so a restarted or other replica takes the source over at once."""
        with self.monitor.session() as session:
            session.connection().execute(
                update(_STATES)
                .where(_STATES.c.source_id == self.settings.id, _STATES.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def poll_until_caught_up(self, max_polls: int = 1_000_000) -> list[PollOutcome]:
        """Poll until nothing more is pending (tests, replay, catching up after downtime)."""
        outcomes = []
        for _ in range(max_polls):
            outcome = self.poll()
            outcomes.append(outcome)
            if not outcome.more_pending or outcome.problem or outcome.leased_elsewhere:
                break
        return outcomes


# --- the background runner ---------------------------------------------------------------------------


class LogSourceRunner:
    """Polls every configured source in one background thread of the server process.

    A source with more pending (its byte budget ran out) is polled again at once; otherwise every
    ``poll_interval_seconds``. ``stop`` ends the thread after the poll in progress.
    """

    def __init__(self, monitor: Monitor, *, owner: str | None = None, clock: Callable[[], float] | None = None) -> None:
        self.monitor = monitor
        self.owner = owner or replica_id()
        self.tailers = [SourceTailer(monitor, s, owner=self.owner) for s in monitor.config.sources]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._monotonic = clock or _monotonic

    def start(self) -> LogSourceRunner:
        if self.tailers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-sources", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            for tailer in self.tailers:
                try:
                    tailer.release()
                except Exception:  # the database may be closing with the server: the lease then expires
                    logger.exception("log source %s: could not release its lease", tailer.settings.id)

    def __enter__(self) -> LogSourceRunner:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        due = {t.settings.id: 0.0 for t in self.tailers}
        while not self._stop.is_set():
            now = self._monotonic()
            for tailer in self.tailers:
                if self._stop.is_set() or due[tailer.settings.id] > now:
                    continue
                try:
                    outcome = tailer.poll()
                except Exception:
                    logger.exception("log source %s: poll failed", tailer.settings.id)
                    outcome = PollOutcome(tailer.settings.id)
                delay = 0.0 if outcome.more_pending else tailer.settings.poll_interval_seconds
                due[tailer.settings.id] = self._monotonic() + delay
            wait = max(0.0, min(due.values()) - self._monotonic())
            self._stop.wait(wait)


def _monotonic() -> float:
    return time.monotonic()
