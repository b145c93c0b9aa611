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
import threading
import time
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
from incident_monitor.service.intake import report_incident
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
from incident_monitor.service.replicas import is_gone, replica_id
from incident_monitor.store.engine import read_scope

logger = logging.getLogger(__name__)

_FILES = LogSourceFile.__table__  # type: ignore[attr-defined]
_STATES = LogSourceState.__table__  # type: ignore[attr-defined]
_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]

HEAD_BYTES = 64
_MASK_DIGITS = str.maketrans("0123456789", "##########")
MIN_LEASE = timedelta(seconds=30)
MAX_COOLDOWN_ENTRIES = 10_000
# Deferred offsets and repeats are committed at the latest after this much was read (bounds the work a crash redoes:
# re-reading 32 MB takes ~0.1 s). Each checkpoint is a commit with an fsync, which on a busy disk costs more than
# reading 8 MB (a 100 MB catch-up spent most of its time in 8 MB checkpoints' commits).
CHECKPOINT_BYTES = 32 * 1024 * 1024


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
    committed: bool = False  # this poll ended with a commit (everything read so far is stored)
    warnings_counted: int = 0  # how many of ``warnings`` the tailer has counted


@dataclass(slots=True)
class _Work:
    opened: OpenedFile
    basis: int | None  # the committed offset (None: a file not seen before)
    offset: int  # where this read starts
    rotated: bool = False  # a file rotated away from the path: read to its end, then forgotten


@dataclass(slots=True)
class _Progress:
    """How far a file has been read and not yet committed (a deferred flush)."""

    basis: int | None
    offset: int
    size: int
    path: str
    head_digest: str
    finished: bool


@dataclass(slots=True)
class _ToReport:
    event: LogEvent
    path: str
    offset: int
    key: tuple[str, str]
    again: int = 0  # the same failure again in this read: counted on the incident once it is reported


def report_title(event: LogEvent, path: str, max_chars: int) -> str:
    return " ".join(event.title.split())[:max_chars] or f"{event.level} in {path}"


def source_event_report(
    settings: LogSourceSettings, monitor: Monitor, event: LogEvent, path: str, offset: int
) -> IncidentReport:
    """The report for one event, bound to the source's project and source, within the size limits."""
    limits = monitor.config.limits
    context: dict[str, object] = {"log_source": settings.id, "path": path, "offset": offset}
    if event.timestamp:
        context["timestamp"] = event.timestamp[:100]
    detail = event.detail
    if len(detail) > limits.max_detail_chars:
        marker = "\n[… truncated by the log source]"
        detail = detail[: limits.max_detail_chars - len(marker)] + marker
    return IncidentReport(
        title=report_title(event, path, limits.max_title_chars),
        detail=detail,
        source=settings.source_id,
        event=(event.event or f"log.{event.level}")[:200],
        level=event.level,
        project_id=settings.project_id,
        evidence_refs=[f"log:{path}@{offset}"[: limits.max_evidence_ref_chars]],
        context=context,
    )


class SourceTailer:
    """Polls one source. Not thread-safe: one poller per source per process (the runner's thread).

    A read whose errors are all repeats within the cooldown stores nothing at once: its offsets and
    occurrence counts wait in memory for the next commit (a new report, ``CHECKPOINT_BYTES`` read, or the
    end of what there is to read), and are committed together. A crash before then loses both, so the
    lines are read again: nothing lost, nothing counted twice.
    """

    def __init__(self, monitor: Monitor, settings: LogSourceSettings, *, owner: str | None = None) -> None:
        self.monitor = monitor
        self.settings = settings
        self.owner = owner or replica_id()
        self.principal: Principal = source_principal(settings.id)
        self.parser = LogParser(settings)
        self.cooldown = timedelta(minutes=settings.fingerprint_cooldown_minutes)
        # (event, stable title) → (incident_id, when that report went through intake). In memory only.
        self._cooldown: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._progress: dict[tuple[int, int], _Progress] = {}
        self._repeats: dict[str, int] = {}
        self._pending_bytes = 0
        self._pending_undecodable = 0
        self._pending_warnings = 0
        # The committed rows as this tailer last read or wrote them (None: read them again). Another writer
        # (reset-offset) is caught at the next commit, whose check of each file's stored offset then fails.
        self._rows: dict[tuple[int, int], tuple[int, str, str]] | None = None
        self._lease_until: datetime | None = None

    @property
    def lease_length(self) -> timedelta:
        return max(MIN_LEASE, timedelta(seconds=3 * self.settings.poll_interval_seconds))

    # --- one poll --------------------------------------------------------------------------------

    def poll(self) -> PollOutcome:
        outcome = PollOutcome(self.settings.id)
        holding = self._lease_until is not None and self.monitor.clock() < self._lease_until - self.lease_length / 2
        if not holding and self._leased_elsewhere():
            self._discard()
            outcome.leased_elsewhere = True
            return outcome
        workspace = self.monitor.config.workspace
        assert workspace is not None  # the config requires one when sources are configured
        try:
            root = real_root(workspace.root)
            work = self._plan(root, outcome)
        except PathRefused as exc:
            outcome.problem = exc.message
            logger.warning("log source %s: %s", self.settings.id, exc.message)
            self._flush([], outcome)
            return outcome
        budget = self.settings.max_bytes_per_poll
        try:
            for item in work:
                if budget <= 0:
                    outcome.more_pending = True
                    break
                budget -= self._read(item, budget, outcome)
        finally:
            for item in work:
                item.opened.close()
        if not outcome.committed and (not outcome.more_pending or self._pending_bytes >= CHECKPOINT_BYTES):
            self._flush([], outcome)
        else:
            self._count_warnings(outcome)
        return outcome

    def _plan(self, root: Path, outcome: PollOutcome) -> list[_Work]:
        """What to read this poll: rotated files' tails first (older lines), then the files at the path."""
        if self._rows is None:
            self._rows = {(r.device, r.inode): (r.offset, r.path, r.head_digest) for r in self._stored_files()}
        rows = dict(self._rows)
        for key, progress in self._progress.items():
            rows[key] = (progress.offset, progress.path, progress.head_digest)
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
            basis = self._basis(key, row)
            if row is None:
                current.append(_Work(opened, None, 0))
            elif opened.size < row[0] or not _same_head(opened, row[2]):
                # Truncated (smaller than its offset), or rewritten (its first bytes changed, or the inode was
                # reused by a new file): read again from its start.
                outcome.warnings.append(f"{relative} was truncated or replaced: read again from its start")
                current.append(_Work(opened, basis, 0))
            else:
                current.append(_Work(opened, basis, row[0]))
        if refused is not None:
            for item in current:
                item.opened.close()
            raise PathRefused(refused)
        rotated: list[_Work] = []
        for key, (offset, path, _digest) in rows.items():
            if key in seen:
                continue
            moved = find_by_identity(root, path, *key)
            opened_moved: OpenedFile | None = None
            if moved is not None:
                try:
                    opened_moved = open_inside(root, moved)
                except (PathRefused, FileNotFoundError):
                    opened_moved = None
            if opened_moved is not None and (opened_moved.device, opened_moved.inode) == key:
                rotated.append(_Work(opened_moved, self._basis(key, rows[key]), offset, rotated=True))
            else:
                if opened_moved is not None:
                    opened_moved.close()
                outcome.warnings.append(f"{path} was rotated away and is gone: its unread lines are lost")
                self._progress.pop(key, None)
                self._forget(key)
        return rotated + current

    def _basis(self, key: tuple[int, int], row: tuple[int, str, str] | None) -> int | None:
        progress = self._progress.get(key)
        if progress is not None:
            return progress.basis
        return None if row is None else row[0]

    def _read(self, item: _Work, budget: int, outcome: PollOutcome) -> int:
        """Read one file's new complete lines; returns the bytes read (against the budget)."""
        opened = item.opened
        size = os.fstat(opened.fd).st_size
        data = read_at(opened, item.offset, min(budget, max(size - item.offset, 0)))
        at_end = item.offset + len(data) >= size
        cut = data.rfind(b"\n") + 1
        if data and cut == 0:
            if not at_end:
                outcome.warnings.append(f"{opened.relative}: a line longer than max_bytes_per_poll was cut")
                cut = len(data)
            elif item.rotated:
                cut = len(data)  # a rotated file's unterminated last line: nothing more will be written to it
        # Not at the end, or a partial line follows: a stack trace reaching the cut may go on.
        parsed = self.parser.parse(data[:cut], more_pending=not at_end or cut < len(data))
        new_offset = item.offset + parsed.consumed
        outcome.bytes_read += parsed.consumed
        outcome.undecodable_bytes += parsed.undecodable_bytes
        outcome.events += len(parsed.events)
        outcome.more_pending = outcome.more_pending or not at_end
        if parsed.consumed == 0 and not item.rotated and item.basis in (None, item.offset):
            return len(data)  # nothing new (or a partial line waiting): nothing to store
        self._progress[(opened.device, opened.inode)] = _Progress(
            basis=item.basis,
            offset=new_offset,
            size=size,
            path=opened.relative,
            head_digest=_head_digest(opened, size),
            finished=item.rotated and new_offset >= size,
        )
        self._pending_bytes += parsed.consumed
        self._pending_undecodable += parsed.undecodable_bytes
        to_report = self._sort_out(data, parsed.events, opened.relative, item.offset, outcome)
        if to_report:
            self._flush(to_report, outcome)
        return len(data)

    def _sort_out(
        self, data: bytes, events: list[LogEvent], path: str, base: int, outcome: PollOutcome
    ) -> list[_ToReport]:
        """Repeats within the cooldown are counted on their incident; the rest is to be reported."""
        now = self.monitor.clock()
        cooled_since = now - self.cooldown  # a report after this is within the cooldown
        max_title = self.monitor.config.limits.max_title_chars
        to_report: dict[tuple[str, str], _ToReport] = {}
        for event in events:
            # Digits masked one by one: a key never coarser than intake's fingerprint (which masks digit runs
            # and hex words), so a repeat counted here is a repeat there too. A shape comes masked and collapsed.
            masked = event.shape
            if masked is None:
                masked = " ".join(event.title.translate(_MASK_DIGITS).split())
            key = (event.event or event.level, masked[:max_title])
            hit = self._cooldown.get(key)
            if hit is not None and hit[1] > cooled_since:
                self._repeats[hit[0]] = self._repeats.get(hit[0], 0) + 1
                outcome.repeats += 1
            elif key in to_report and self.cooldown:
                to_report[key].again += 1
                outcome.repeats += 1
            else:
                whole = self.parser.materialize(data, event)
                to_report[key] = _ToReport(whole, path, base + event.start, key)
        return list(to_report.values())

    # --- the unit of work ---------------------------------------------------------------------------

    def _flush(self, to_report: list[_ToReport], outcome: PollOutcome) -> None:
        """Commit the reports, the repeats and the offsets read so far together (and renew the lease)."""
        now = self.monitor.clock()
        remembered: list[tuple[str, str]] = []
        reports = rejected = 0
        try:
            with self.monitor.session() as session:
                connection = session.connection()
                if not self._claim(connection, now):
                    outcome.leased_elsewhere = True
                    self._discard()
                    return
                if not self._bases_hold(connection):
                    # Moved since we read them (an operator's reset-offset): read again from there.
                    outcome.more_pending = True
                    self._discard()
                    return
                for item in to_report:
                    report = source_event_report(self.settings, self.monitor, item.event, item.path, item.offset)
                    try:
                        result = report_incident(self.monitor, self.principal, report)
                    except MonitorError as exc:
                        rejected += 1
                        logger.info("log source %s: a report was refused: %s", self.settings.id, exc.code)
                        continue
                    reports += 1
                    self._remember(item.key, result.incident_id, now)
                    remembered.append(item.key)
                    if item.again:
                        self._repeats[result.incident_id] = self._repeats.get(result.incident_id, 0) + item.again
                repeats = sum(self._repeats.values())
                if self._repeats:
                    self._bump(self._repeats, now)
                for key, progress in self._progress.items():
                    self._store_offset(connection, key, progress, now)
                    if self._rows is not None:
                        if progress.finished:
                            self._rows.pop(key, None)
                        else:
                            self._rows[key] = (progress.offset, progress.path, progress.head_digest)
                connection.execute(
                    update(_STATES)
                    .where(_STATES.c.source_id == self.settings.id)
                    .values(
                        last_polled_at=now,
                        reports=_STATES.c.reports + reports,
                        repeats=_STATES.c.repeats + repeats,
                        rejected=_STATES.c.rejected + rejected,
                        undecodable_bytes=_STATES.c.undecodable_bytes + self._pending_undecodable,
                        warnings=_STATES.c.warnings + self._count_warnings(outcome),
                        last_problem=outcome.problem,
                        last_problem_at=now if outcome.problem else None,
                    )
                )
        except BaseException:
            for cooled in remembered:
                self._cooldown.pop(cooled, None)
            self._discard()
            raise
        if self._pending_undecodable:
            logger.warning(
                "log source %s: skipped %d undecodable (non UTF-8) byte(s)", self.settings.id, self._pending_undecodable
            )
        outcome.reports += reports
        outcome.rejected += rejected
        outcome.committed = True
        rows = self._rows
        self._discard()
        self._rows, self._lease_until = rows, now + self.lease_length

    def _count_warnings(self, outcome: PollOutcome) -> int:
        """Warnings not yet stored: this poll's new ones and those of polls whose commit was deferred."""
        self._pending_warnings += len(outcome.warnings) - outcome.warnings_counted
        outcome.warnings_counted = len(outcome.warnings)
        return self._pending_warnings

    def _discard(self) -> None:
        """Forget what is not committed: the next poll reads it again from the stored offsets."""
        self._progress.clear()
        self._repeats.clear()
        self._rows = None
        self._lease_until = None
        self._pending_bytes = self._pending_undecodable = self._pending_warnings = 0

    def _bases_hold(self, connection: Connection) -> bool:
        for (device, inode), progress in self._progress.items():
            stored = connection.execute(
                select(_FILES.c.offset).where(
                    _FILES.c.source_id == self.settings.id, _FILES.c.device == device, _FILES.c.inode == inode
                )
            ).scalar_one_or_none()
            if stored != progress.basis:
                return False
        return True

    def _bump(self, repeats: dict[str, int], now: datetime) -> None:
        """Count repeats within the cooldown on their incidents, in one governed call."""
        total = sum(repeats.values())
        with governed_call(self.monitor, self.principal, "report_incident", {"repeats": dict(repeats)}) as call:
            connection = call.session.connection()
            for incident_id, count in sorted(repeats.items()):
                changed = connection.execute(
                    update(_INCIDENTS)
                    .where(_INCIDENTS.c.incident_id == incident_id, _INCIDENTS.c.status != IncidentStatus.resolved)
                    .values(occurrence_count=_INCIDENTS.c.occurrence_count + count, last_seen_at=now)
                ).rowcount
                if not changed:
                    # Resolved meanwhile: counted on it all the same (it happened), and the next repeat goes
                    # through intake, which reopens it as a recurrence.
                    connection.execute(
                        update(_INCIDENTS)
                        .where(_INCIDENTS.c.incident_id == incident_id)
                        .values(occurrence_count=_INCIDENTS.c.occurrence_count + count)
                    )
                    self._cooldown = {k: v for k, v in self._cooldown.items() if v[0] != incident_id}
            call.subject_id = min(repeats)
            call.notes.append(
                f"{total} repeat(s) within the fingerprint cooldown of log source {self.settings.id}: "
                "occurrence counts bumped, no new draft"
            )

    def _remember(self, key: tuple[str, str], incident_id: str, now: datetime) -> None:
        if len(self._cooldown) >= MAX_COOLDOWN_ENTRIES:
            self._cooldown = {k: v for k, v in self._cooldown.items() if now - v[1] < self.cooldown}
            if len(self._cooldown) >= MAX_COOLDOWN_ENTRIES:
                self._cooldown.clear()
        self._cooldown[key] = (incident_id, now)

    def _store_offset(self, connection: Connection, key: tuple[int, int], progress: _Progress, now: datetime) -> None:
        where = and_(_FILES.c.source_id == self.settings.id, _FILES.c.device == key[0], _FILES.c.inode == key[1])
        if progress.finished:
            connection.execute(delete(_FILES).where(where))  # a rotated file read to its end: never read again
            return
        values = {
            "path": progress.path,
            "offset": progress.offset,
            "size": progress.size,
            "head_digest": progress.head_digest,
            "updated_at": now,
        }
        if progress.basis is None:
            connection.execute(insert(_FILES).values(source_id=self.settings.id, device=key[0], inode=key[1], **values))
        else:
            connection.execute(update(_FILES).where(where).values(**values))

    # --- lease and state -------------------------------------------------------------------------

    def _claim(self, connection: Connection, now: datetime) -> bool:
        """Hold (or renew) this source's lease; False when another replica holds a live one.

        A lease whose holder is known gone (a process of this host that no longer runs: service/replicas.py)
        is taken at once, as a lapsed one is.
        """
        until = now + self.lease_length
        holder = connection.execute(
            select(_STATES.c.lease_owner).where(_STATES.c.source_id == self.settings.id)
        ).first()
        gone = holder is not None and is_gone(holder.lease_owner)
        claimed = connection.execute(
            update(_STATES)
            .where(
                _STATES.c.source_id == self.settings.id,
                or_(
                    _STATES.c.lease_owner == self.owner,
                    _STATES.c.lease_owner.is_(None),
                    _STATES.c.lease_expires_at < now,
                    *([_STATES.c.lease_owner == holder.lease_owner] if gone and holder is not None else []),
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
        if is_gone(row.lease_owner):
            return False
        return bool(row.lease_expires_at >= self.monitor.clock())

    def _stored_files(self) -> list[LogSourceFile]:
        with read_scope(self.monitor.engine) as connection:
            rows = connection.execute(select(_FILES).where(_FILES.c.source_id == self.settings.id)).mappings().all()
        return [LogSourceFile.model_validate(dict(r)) for r in rows]

    def _forget(self, key: tuple[int, int]) -> None:
        if self._rows is not None:
            self._rows.pop(key, None)
        with self.monitor.session() as session:
            session.connection().execute(
                delete(_FILES).where(
                    _FILES.c.source_id == self.settings.id, _FILES.c.device == key[0], _FILES.c.inode == key[1]
                )
            )

    def release(self) -> None:
        """Commit what is pending and give the lease up (a clean stop), so another replica takes over at once."""
        if self._progress or self._repeats:
            self._flush([], PollOutcome(self.settings.id))
        with self.monitor.session() as session:
            session.connection().execute(
                update(_STATES)
                .where(_STATES.c.source_id == self.settings.id, _STATES.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def poll_until_caught_up(self, max_polls: int = 1_000_000) -> list[PollOutcome]:
        """Poll until nothing more is pending (tests, benchmarks, catching up after downtime)."""
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
