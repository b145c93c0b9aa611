"""Log lines → error events: JSON lines (Python ``logging`` JSON, structlog, pino, bunyan) and plaintext.

Pure functions over bytes (no I/O), so the tailer can hand them whatever it read and tests can feed
them text directly.

Speed: most lines of a log are not errors, so they are never split, decoded or parsed. The chunk is
lowered once and searched for a few keywords (``bytes.find`` runs in C at memory speed); only the
lines holding one are looked at, and only those whose level is at or above ``min_level`` (or that start a
stack trace) become events. A stack trace (Python traceback, Java stack trace, Node stack) is one event
with its frames in the detail, not one per line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from incident_monitor.config import LogSourceSettings

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


@dataclass(frozen=True, slots=True)
class LogEvent:
    start: int  # byte offset of its first line in the chunk
    end: int  # byte offset just after its last line
    level: str  # warning | error | critical
    title: str
    detail: str
    event: str | None = None  # from the JSON event field, when one is configured and present
    timestamp: str | None = None


@dataclass(slots=True)
class ParseResult:
    events: list[LogEvent] = field(default_factory=list)
    consumed: int = 0  # bytes done; a stack trace cut by the read's end waits for the next read
    undecodable_bytes: int = 0


def _keywords(min_level: str, json_levels: bool, level_field: str | None) -> tuple[list[bytes], list[bytes]]:
    """Lowercase keywords (searched in the lowered chunk) and exact ones (pino numeric levels)."""
    lowered = [b"error", b"exception", b"traceback", b"fatal", b"crit", b"panic", b"severe"]
    if min_level == "warning":
        lowered.append(b"warn")
    exact: list[bytes] = []
    if json_levels:
        wanted = [n for n, name in _NUMERIC_LEVELS.items() if LEVEL_RANK[name] >= LEVEL_RANK[min_level]]
        for name in (level_field,) if level_field else ("level",):
            exact += [f'"{name}":{n}'.encode() for n in wanted]
    return lowered, exact


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
        self.lowered_keywords, self.exact_keywords = _keywords(
            settings.min_level, self.json_allowed, settings.level_field
        )

    # --- finding candidate lines -------------------------------------------------------------------

    def _candidate_starts(self, data: bytes) -> list[int]:
        starts: set[int] = set()
        for haystack, keywords in ((data.lower(), self.lowered_keywords), (data, self.exact_keywords)):
            for keyword in keywords:
                hit = haystack.find(keyword)
                while hit != -1:
                    starts.add(haystack.rfind(b"\n", 0, hit) + 1)
                    line_end = haystack.find(b"\n", hit)
                    if line_end == -1:
                        break
                    hit = haystack.find(keyword, line_end)
        return sorted(starts)

    # --- the whole chunk -----------------------------------------------------------------------------

    def parse(self, data: bytes, *, more_pending: bool = False) -> ParseResult:
        """Events in ``data`` (complete lines only: the caller keeps a partial last line for later).

        ``more_pending``: the read stopped at its byte budget, not at the end of the file, so a stack
        trace reaching the end of ``data`` may go on: it is left for the next read (unless it starts the chunk).
        """
        result = ParseResult(consumed=len(data))
        covered = 0  # lines before this belong to an event already
        for start in self._candidate_starts(data):
            if start < covered:
                continue
            line_end = data.find(b"\n", start)
            line_end = len(data) if line_end == -1 else line_end + 1
            line, bad = _decode(data[start:line_end].rstrip(b"\r\n"))
            head = self._head(line, data, line_end)
            if head is None:
                continue
            level, title, event, timestamp, is_json = head
            lines = [line]
            end = line_end
            if not is_json:
                end, more_lines, more_bad = self._continuation(data, line_end, line)
                lines += more_lines
                bad += more_bad
                if more_pending and end >= len(data) and start > 0 and len(lines) > 1:
                    result.consumed = start
                    break
            elif is_json and (stack := self._json_stack(line)):
                lines.append(stack)
            result.undecodable_bytes += bad
            detail = "\n".join(lines)[:MAX_EVENT_CHARS]
            if not is_json and line.startswith(_TRACEBACK) and len(lines) > 1:
                title = lines[-1].strip() or title  # the exception line says what failed
            result.events.append(LogEvent(start, end, level, title, detail, event=event, timestamp=timestamp))
            covered = end
        return result

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
        following = data[line_end : len(data) if next_end == -1 else next_end].decode("utf-8", "ignore")
        return bool(_EXCEPTION_HEADER.match(line)) and _is_frame(following)
