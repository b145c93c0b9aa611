"""Log lines → error events: JSON lines (Python ``logging`` JSON, structlog, pino, bunyan) and plaintext.

Pure functions over bytes (no I/O), so the tailer can hand them whatever it read and tests can feed
them text directly.

Speed: most lines of a log are not errors, so they are never split, decoded or parsed. One Hyperscan
scan (every keyword at once, case-insensitive, SIMD: ~8 GB/s here against RE2's ~0.8) finds the lines
holding a keyword; only those are looked at, and only those whose level is at or above ``min_level``
(or that start a stack trace) become events. A stack trace (Python traceback, Java stack trace, Node stack) is one event
with its frames in the detail, not one per line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from incident_monitor.config import LogSourceSettings

if TYPE_CHECKING:
    import hyperscan

LEVEL_RANK = {"warning": 1, "error": 2, "critical": 3}

# Level words and values of common loggers → warning | error | critical; anything else is below warning.
_LEVEL_WORDS = {
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "severe": "error",
    "exception": "error",
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "panic": "critical",
    "emerg": "critical",
    "emergency": "critical",
    "alert": "critical",
}
# pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
_NUMERIC_LEVELS = {40: "warning", 50: "error", 60: "critical"}

DEFAULT_LEVEL_FIELDS = ("level", "levelname", "severity", "log.level", "lvl", "loglevel")
DEFAULT_MESSAGE_FIELDS = ("message", "msg", "event")  # structlog calls the message "event"
DEFAULT_TIMESTAMP_FIELDS = ("timestamp", "time", "@timestamp", "asctime", "ts")
# Where the loggers put a formatted exception: logging JSON exc_info, structlog exception, pino/bunyan err.stack.
_STACK_FIELDS = ("exc_info", "exception", "stack", "stack_trace", "err.stack", "error.stack")

# The first level word on a plaintext line decides its level ("INFO retried after error" is info).
_PLAIN_LEVEL = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|SEVERE|CRITICAL|CRIT|FATAL|PANIC|EMERG|EMERGENCY|ALERT)\b",
    re.IGNORECASE,
)
_TRACEBACK = "Traceback (most recent call last)"
# A line naming an exception, e.g. "java.lang.IllegalStateException: x", "TypeError: y", "Exception in thread".
_EXCEPTION_HEADER = re.compile(r"^(?:Exception in thread |[\w.$]*(?:Exception|Error|Throwable)\b)")
_PYTHON_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::|$)")
_CHAIN_STARTS = (
    _TRACEBACK,
    "Caused by:",
    "Suppressed:",
    "During handling of the above exception",
    "The above exception was the direct cause",
)
_FRAME_STARTS = ("\tat ", "    at ", '  File "')
_TITLE_TRIM = " \t:-|]>)"

MAX_EVENT_LINES = 200
MAX_EVENT_CHARS = 64 * 1024
MAX_SHAPES = 10_000
_MASK_DIGITS = str.maketrans("0123456789", "##########")
_MASK_DIGIT_BYTES = bytes.maketrans(b"0123456789", b"##########")


# Not frozen: a frozen dataclass sets each field through object.__setattr__, ~1.5 µs more per event, and a
# 100 MB log with 1 % errors makes 12,000 of them. Nothing changes an event after the parser made it.
@dataclass(slots=True)
class LogEvent:
    start: int  # byte offset of its first line in the chunk
    end: int  # byte offset just after its last line
    level: str  # warning | error | critical
    title: str
    detail: str
    event: str | None = None  # from the JSON event field, when one is configured and present
    timestamp: str | None = None
    # A one-line plaintext event's title with its digits masked and its blanks collapsed (repeats share it).
    shape: str | None = None
    lazy: bool = False  # title and detail left out (a known shape): ``LogParser.materialize`` fills them in


@dataclass(slots=True)
class ParseResult:
    events: list[LogEvent] = field(default_factory=list)
    consumed: int = 0  # bytes done; a stack trace cut by the read's end waits for the next read
    undecodable_bytes: int = 0


def candidate_keywords(min_level: str, json_levels: bool, level_field: str | None) -> list[bytes]:
    """Every keyword a head line may hold (matched case-insensitively)."""
    words = ["error", "exception", "traceback", "fatal", "crit", "panic", "severe"]
    if min_level == "warning":
        words.append("warn")
    if json_levels:
        wanted = sorted(n for n, name in _NUMERIC_LEVELS.items() if LEVEL_RANK[name] >= LEVEL_RANK[min_level])
        words += [f'"{level_field or "level"}":{n}' for n in wanted]
    return [w.encode() for w in words]


class CandidateScan:
    """One pass over a chunk for every keyword at once: the start of each line that holds one.

    Hyperscan (literals, case-insensitive, block mode). Its scratch space is this object's own, so one scan
    runs at a time per object, which a ``LogParser`` (one per tailer, not thread-safe) already guarantees.
    """

    def __init__(self, keywords: list[bytes]) -> None:
        import hyperscan  # ~8 ms: loaded with the first log source, not at every server start

        self._database: hyperscan.Database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(
            expressions=keywords,
            ids=list(range(len(keywords))),
            elements=len(keywords),
            flags=hyperscan.HS_FLAG_CASELESS,
            literal=True,
        )

    def line_starts(self, data: bytes) -> list[int]:
        """The start of every line holding a keyword, in order, each once."""
        if not data:
            return []
        ends: list[int] = []
        add = ends.append

        def matched(_id: int, _start: int, end: int, _flags: int, _context: object) -> None:
            add(end)

        self._database.scan(data, match_event_handler=matched)
        starts: list[int] = []
        line_end = -1
        # Hyperscan reports by end offset; sorted all the same (a keyword has no newline, so its line is
        # the one around its end).
        for end in sorted(ends):
            if end <= line_end:
                continue  # another keyword on a line already taken
            starts.append(data.rfind(b"\n", 0, end) + 1)
            line_end = data.find(b"\n", end)
            if line_end == -1:
                break
        return starts


def _decode(raw: bytes) -> tuple[str, int]:
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "ignore")
        return text, len(raw) - len(text.encode("utf-8"))


def _lookup(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = _lookup(record, name)
        if value is not None and value != "":
            return value
    return None


def level_of(value: Any) -> str | None:
    """warning | error | critical for a level word or a pino/bunyan number; None below warning."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = int(value)
        return next((name for n, name in sorted(_NUMERIC_LEVELS.items(), reverse=True) if number >= n), None)
    if isinstance(value, str):
        word = value.strip().lower()
        if word.isdigit():
            return level_of(int(word))
        return _LEVEL_WORDS.get(word)
    return None


def _is_frame(line: str) -> bool:
    return line.startswith(_FRAME_STARTS)


_CHAIN_STARTS_BYTES = (*(s.encode() for s in _CHAIN_STARTS), b"...", b"\t...")
# Without the "^": ``match(data, position)`` anchors at ``position`` (a "^" would need the string's start).
_EXCEPTION_HEADER_BYTES = re.compile(_EXCEPTION_HEADER.pattern.removeprefix("^").encode())


def _plainly_not_continued(data: bytes, position: int, *, first: bool) -> bool:
    """True when the line at ``position`` cannot continue a stack trace: not indented, not blank, not a
    chained-exception line, and (right after the head) not an exception header. Cheap: no decoding."""
    head = data[position : position + 1]
    if head in (b" ", b"\t", b"\n", b"\r", b""):
        return False
    if data.startswith(_CHAIN_STARTS_BYTES, position):
        return False
    return not (first and _EXCEPTION_HEADER_BYTES.match(data, position))


class LogParser:
    """Parses the chunks of one source with its settings."""

    def __init__(self, settings: LogSourceSettings) -> None:
        self.settings = settings
        self.min_rank = LEVEL_RANK[settings.min_level]
        self.json_allowed = settings.format in ("auto", "json")
        self.plain_allowed = settings.format in ("auto", "plaintext")
        self.level_fields = (settings.level_field,) if settings.level_field else DEFAULT_LEVEL_FIELDS
        self.message_fields = (settings.message_field,) if settings.message_field else DEFAULT_MESSAGE_FIELDS
        self.timestamp_fields = (settings.timestamp_field,) if settings.timestamp_field else DEFAULT_TIMESTAMP_FIELDS
        # A line shape seen before: its (level, masked title), or None when such lines are not events.
        self._shapes: dict[bytes, tuple[str, str] | None] = {}
        self.candidates = CandidateScan(candidate_keywords(settings.min_level, self.json_allowed, settings.level_field))

    # --- the whole chunk -----------------------------------------------------------------------------

    def parse(self, data: bytes, *, more_pending: bool = False) -> ParseResult:
        """Events in ``data`` (complete lines only: the caller keeps a partial last line for later).

        ``more_pending``: the read stopped at its byte budget, not at the end of the file, so a stack
        trace reaching the end of ``data`` may go on: it is left for the next read (unless it starts the chunk).

        A one-line plaintext event whose shape (the line with its digits masked) was seen before comes back
        ``lazy``: level and shape only, no text; ``materialize`` makes it whole when it is to be reported.
        A log repeating one failure thus costs a dictionary lookup per repeat, not a parse.
        """
        result = ParseResult(consumed=len(data))
        covered = 0  # lines before this belong to an event already
        for start in self.candidates.line_starts(data):
            if start < covered:
                continue
            line_end = data.find(b"\n", start)
            line_end = len(data) if line_end == -1 else line_end + 1
            shape: bytes | None = None
            if data[start : start + 1] != b"{" and _plainly_not_continued(data, line_end, first=True):
                shape = data[start:line_end].translate(_MASK_DIGIT_BYTES)
                if shape in self._shapes:
                    known = self._shapes[shape]
                    if known is not None:
                        level, masked_title = known
                        result.events.append(LogEvent(start, line_end, level, "", "", shape=masked_title, lazy=True))
                        covered = line_end
                    continue
            found = self._event_at(data, start, line_end, more_pending=more_pending)
            if found is None:
                if shape is not None:
                    self._remember_shape(shape, None)
                continue
            if found == "later":
                result.consumed = start
                break
            event, bad = found
            result.undecodable_bytes += bad
            if shape is not None and not bad and event.end == line_end and event.event is None:
                masked = " ".join(event.title.translate(_MASK_DIGITS).split())
                self._remember_shape(shape, (event.level, masked))
                event = LogEvent(event.start, event.end, event.level, event.title, event.detail, shape=masked)
            result.events.append(event)
            covered = event.end
        return result

    def materialize(self, data: bytes, event: LogEvent) -> LogEvent:
        """The whole event (title, detail) for a ``lazy`` one, from the chunk it was parsed from."""
        if not event.lazy:
            return event
        found = self._event_at(data, event.start, event.end)
        assert isinstance(found, tuple), "a lazy event's line parses as an event"
        whole = found[0]
        return LogEvent(whole.start, whole.end, whole.level, whole.title, whole.detail, shape=event.shape)

    def _remember_shape(self, shape: bytes, value: tuple[str, str] | None) -> None:
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        self._shapes[shape] = value

    def _event_at(
        self, data: bytes, start: int, line_end: int, *, more_pending: bool = False
    ) -> tuple[LogEvent, int] | Literal["later"] | None:
        """The event starting at ``start`` with its undecodable byte count; "later": wait for more lines."""
        line, bad = _decode(data[start:line_end].rstrip(b"\r\n"))
        head = self._head(line, data, line_end)
        if head is None:
            return None
        level, title, event, timestamp, is_json = head
        lines = [line]
        end = line_end
        if not is_json:
            end, more_lines, more_bad = self._continuation(data, line_end, line)
            lines += more_lines
            bad += more_bad
            if more_pending and end >= len(data) and start > 0 and len(lines) > 1:
                return "later"
        elif stack := self._json_stack(line):
            lines.append(stack)
        detail = "\n".join(lines)[:MAX_EVENT_CHARS]
        if not is_json and line.startswith(_TRACEBACK) and len(lines) > 1:
            title = lines[-1].strip() or title  # the exception line says what failed
        return LogEvent(start, end, level, title, detail, event=event, timestamp=timestamp), bad

    # --- one event -------------------------------------------------------------------------------

    def _head(self, line: str, data: bytes, line_end: int) -> tuple[str, str, str | None, str | None, bool] | None:
        """(level, title, event, timestamp, is_json) when the line starts an event at or above min_level."""
        stripped = line.lstrip()
        if self.json_allowed and stripped.startswith("{"):
            try:
                record = json.loads(stripped)
            except ValueError:
                record = None
            if isinstance(record, dict):
                return self._json_head(record)
            if not self.plain_allowed:
                return None
        if not self.plain_allowed:
            return None
        if line.startswith(_TRACEBACK) or line.startswith("Exception in thread "):
            return "error", line.strip(), None, None, False
        match = _PLAIN_LEVEL.search(line)
        if match is not None:
            level = _LEVEL_WORDS.get(match.group(1).lower())
            if level is None or LEVEL_RANK[level] < self.min_rank:
                return None
            title = line[match.end() :].strip(_TITLE_TRIM) or line.strip()
            return level, title, None, None, False
        # "TypeError: x" followed by a stack frame: an uncaught exception printed without a level.
        if _EXCEPTION_HEADER.match(line) and self.min_rank <= LEVEL_RANK["error"]:
            next_end = data.find(b"\n", line_end)
            following = data[line_end : len(data) if next_end == -1 else next_end].decode("utf-8", "ignore")
            if _is_frame(following):
                return "error", line.strip(), None, None, False
        return None

    def _json_head(self, record: dict[str, Any]) -> tuple[str, str, str | None, str | None, bool] | None:
        level = level_of(_first(record, self.level_fields))
        if level is None or LEVEL_RANK[level] < self.min_rank:
            return None
        message = _first(record, self.message_fields)
        title = str(message).strip() if message is not None else f"{level} log record"
        event = None
        if self.settings.event_field:
            value = _lookup(record, self.settings.event_field)
            event = str(value) if value not in (None, "") else None
        timestamp = _first(record, self.timestamp_fields)
        return level, title.splitlines()[0] if title else title, event, str(timestamp) if timestamp else None, True

    def _json_stack(self, line: str) -> str | None:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        value = _first(record, _STACK_FIELDS) if isinstance(record, dict) else None
        return value if isinstance(value, str) else None

    def _continuation(self, data: bytes, position: int, head: str) -> tuple[int, list[str], int]:
        """The stack-trace lines after a head line: (end offset, lines, undecodable bytes)."""
        lines: list[str] = []
        bad = 0
        previous = head
        in_traceback = head.startswith(_TRACEBACK)
        while position < len(data) and len(lines) < MAX_EVENT_LINES:
            next_end = data.find(b"\n", position)
            line_end = len(data) if next_end == -1 else next_end + 1
            if not in_traceback and _plainly_not_continued(data, position, first=not lines):
                break  # the common case, decided on the bytes: an ordinary log line follows
            line, line_bad = _decode(data[position:line_end].rstrip(b"\r\n"))
            if not self._continues(line, previous, in_traceback, data, line_end, first=not lines):
                break
            in_traceback = in_traceback or line.startswith(_TRACEBACK)
            lines.append(line)
            bad += line_bad
            previous = line
            position = line_end
        return position, lines, bad

    def _continues(
        self, line: str, previous: str, in_traceback: bool, data: bytes, line_end: int, *, first: bool
    ) -> bool:
        if line.startswith(_CHAIN_STARTS):
            return True
        if line[:1] in (" ", "\t") and line.strip():
            return True
        if not line.strip():
            # A blank line inside a chained Python traceback ("During handling of the above exception").
            next_end = data.find(b"\n", line_end)
            following = data[line_end : len(data) if next_end == -1 else next_end]
            return following.startswith((b"During handling", b"The above exception"))
        if in_traceback and previous[:1] in (" ", "\t") and _PYTHON_EXCEPTION_LINE.match(line):
            return True  # the traceback's last line: "ValueError: boom"
        if line.startswith("\t... ") or line.startswith("..."):
            return True
        if not first:
            return False
        # "java.lang.IllegalStateException: x" right after the log line, before its frames.
        next_end = data.find(b"\n", line_end)
        next_line = data[line_end : len(data) if next_end == -1 else next_end].decode("utf-8", "ignore")
        return bool(_EXCEPTION_HEADER.match(line)) and _is_frame(next_line)
