"""JSON-RPC frames the SDK cannot read, made readable without losing what was wrong with them.

Before any of our code runs, the SDK's parsers refuse frames that are JSON all the same: a lone
surrogate (``"\\ud800"``; on stdio also bytes that are not UTF-8, which it would quietly turn into
U+FFFD), nesting deeper than its parser's recursion limit, an integer of thousands of digits. stdio
then never answers (the client waits for ever), HTTP answers a parse error, and nothing is audited.
``repair_frame`` rewrites such a frame so that the call reaches the scope gate, which refuses it as
invalid input and audits it like any other refusal (server/tool_arguments.py):

- a string, value or key, holding a lone surrogate becomes ``INVALID_TEXT`` (the whole string: none
  of what it carried is kept);
- a container nested deeper than ``FRAME_DEPTH`` becomes ``null`` (what is left still nests deeper
  than the gate lets arguments nest);
- a run of over ``LONG_DIGITS`` digits becomes ``1e999``, infinity, refused as not a finite number.

A frame that needs none of it passes byte for byte; one that is not JSON even so passes unchanged
(the SDK answers it as before). ``FrameRepair`` does this for the HTTP routes and, since the SDK's own
answer to a well-formed body that is no JSON-RPC message quotes pydantic and the value sent, answers
those itself with -32600 (Invalid Request). ``RepairedLines`` does it for stdin.
"""

from __future__ import annotations

import json
import re
import secrets
from io import TextIOWrapper
from typing import Any, BinaryIO

import anyio
from mcp_types import JSONRPCRequest, jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incident_monitor.server.json_limits import nesting_depth

# Random per process: only this module puts it in a frame, so the gate never mistakes a caller's text for it.
INVALID_TEXT = "\x00invalid-text:" + secrets.token_hex(8)
FRAME_DEPTH = 64
LONG_DIGITS = 1_000

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # may be an escaped backslash: then checked
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{%d,}" % (LONG_DIGITS + 1))
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON string (possessive: each character looked at once), a bracket, or a long run of digits.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]|[0-9]{' + str(LONG_DIGITS + 1) + ",}", re.DOTALL)

INVALID_REQUEST = -32600
_NOT_A_MESSAGE = (
    'Invalid Request: send one JSON-RPC 2.0 message object: jsonrpc "2.0", a method, params an object, '
    "and for a request an id that is a string or an integer"
)


def _needs_repair(raw: bytes) -> bool:
    if _SURROGATE_ESCAPE.search(raw) or _LONG_DIGIT_RUN.search(raw) or nesting_depth(raw) > FRAME_DEPTH:
        return True
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _pruned(text: str) -> str:
    """``text`` with every container opened deeper than FRAME_DEPTH replaced by null and long digit runs by 1e999."""
    parts: list[str] = []
    kept_from, depth, cut_at = 0, 0, -1
    for token in _TOKEN.finditer(text):
        first = token.group()[0]
        if first == '"':
            continue
        if first in "[{":
            depth += 1
            if depth == FRAME_DEPTH + 1:
                cut_at = token.start()
        elif first in "]}":
            if depth == FRAME_DEPTH + 1 and cut_at >= 0:
                parts += [text[kept_from:cut_at], "null"]
                kept_from, cut_at = token.end(), -1
            depth -= 1
        elif cut_at < 0:
            parts += [text[kept_from : token.start()], "1e999"]
            kept_from = token.end()
    parts.append(text[kept_from:])
    return "".join(parts)


def _valid_text(value: Any) -> Any:
    """``value`` with every string holding a lone surrogate, key or value, replaced by INVALID_TEXT."""
    if isinstance(value, str):
        return INVALID_TEXT if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_valid_text(item) for item in value]
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if _LONE_SURROGATE.search(key):
                key = INVALID_TEXT
                while key in result or key in value:
                    key += "+"
            result[key] = _valid_text(item)
        return result
    return value


def repair_frame(raw: bytes) -> bytes:
    """``raw`` as the module docstring says: unchanged unless it needs and allows repair."""
    if not _needs_repair(raw):
        return raw
    try:
        # Bytes that are not UTF-8 become lone surrogates here, and INVALID_TEXT below.
        message = json.loads(_pruned(raw.decode("utf-8", "surrogateescape")))
        return json.dumps(_valid_text(message), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # not JSON even so
        return raw


def is_message(raw: bytes) -> bool:
    """False for JSON that is no JSON-RPC message the SDK would take: a batch, params that are not an
    object, a request whose id is not a string or an integer (the SDK would take it for a notification)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return True  # not JSON: the SDK answers its parse error, which quotes nothing
    try:
        if isinstance(value, dict) and "id" in value and "method" in value:
            if type(value["id"]) not in (str, int):  # not a bool or a float pydantic would take for an int
                return False
            JSONRPCRequest.model_validate(value)
        else:
            jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError:
        return False
    return True


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body (the SDK's size limit runs before this), and a message that ended it early, if any."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


class FrameRepair:
    """ASGI middleware for the MCP POST routes: the body repaired, a body that is no message refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw, ended = await _read_body(receive)
        body = repair_frame(raw)
        if ended is None and not is_message(body):
            error = {"code": INVALID_REQUEST, "message": _NOT_A_MESSAGE}
            await JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status_code=400)(scope, receive, send)
            return
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        if ended is not None:
            pending.append(ended)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)


class RepairedLines:
    """stdin as the SDK's stdio transport reads it, one frame per line, each repaired. Bytes that are not
    UTF-8 are kept (surrogateescape) for the repair to refuse, where the SDK would have put U+FFFD."""

    def __init__(self, binary: BinaryIO) -> None:
        self._lines = anyio.wrap_file(TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape"))

    def __aiter__(self) -> RepairedLines:
        return self

    async def __anext__(self) -> str:
        line = await self._lines.readline()
        if not line:
            raise StopAsyncIteration
        raw = line.encode("utf-8", "surrogateescape")  # the bytes as read
        return repair_frame(raw).decode("utf-8", "replace")
