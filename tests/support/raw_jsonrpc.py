"""JSON-RPC frames sent by hand to a served monitor, for what a client library refuses to send: arguments that
are no object, lone surrogates, bytes that are not UTF-8, numbers no parser takes, ids of the wrong shape.

``RawStdio`` drives an ``incident-monitor serve --transport stdio`` process over its pipes (one frame per line,
the handshake era); ``RawHttp`` posts to Streamable HTTP in either era (a handshake session, or 2026-07-28's
per-request envelope and routing headers). Both hand back each answer as parsed JSON, or None.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from itertools import count
from pathlib import Path
from typing import Any, Literal

import httpx2
from mcp.shared.inbound import encode_header_value

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
Era = Literal["legacy", "modern"]
_INITIALIZE = {
    "protocolVersion": LEGACY_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "raw-frames", "version": "1"},
}
_MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "raw-frames", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def tool_call(request_id: str, name_json: bytes, arguments_json: bytes | None, *, era: Era = "legacy") -> bytes:
    """A ``tools/call`` frame around a name and arguments given as JSON text (which may hold anything)."""
    arguments = b"" if arguments_json is None else b',"arguments":' + arguments_json
    meta = b',"_meta":' + json.dumps(_MODERN_META).encode() if era == "modern" else b""
    head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + b',"method":"tools/call","params":{"name":'
    return head + name_json + arguments + meta + b"}}"


class RawStdio:
    """A stdio server process with a hand-held handshake; ``exchange`` writes frames and reads their answers."""

    def __init__(self, command: list[str], env: dict[str, str], errlog: Path) -> None:
        self._log = errlog.open("ab")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        self._pending = b""
        self._ids = count(1)
        answers = self.exchange(
            {
                "init": json.dumps(
                    {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": _INITIALIZE}
                ).encode()
            }
        )
        assert answers["init"] is not None and "result" in answers["init"], f"no handshake: {answers}"
        self._write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def next_id(self) -> str:
        return f"raw-{next(self._ids)}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def _write(self, frame: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(frame + b"\n")
        self.process.stdin.flush()

    def _line(self, deadline: float) -> bytes | None:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                return None
            chunk = os.read(descriptor, 65536)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def exchange(self, frames: dict[str, bytes], timeout: float = 60) -> dict[str, dict[str, Any] | None]:
        """Write every frame (each must carry its key as its id), then read until each has its answer."""
        for frame in frames.values():
            self._write(frame)
        answers: dict[str, dict[str, Any] | None] = dict.fromkeys(frames)
        deadline = time.monotonic() + timeout
        while any(answer is None for answer in answers.values()):
            line = self._line(deadline)
            if line is None:
                break  # the unanswered stay None
            message = json.loads(line)
            if isinstance(message, dict) and message.get("id") in answers:
                answers[message["id"]] = message
        return answers

    def close(self) -> int:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()


def _messages(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages of an answer: a JSON body, or the ``data:`` lines of an event stream."""
    if not response.content:
        return []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return [response.json()]


class RawHttp:
    """Frames posted to ``/mcp`` with a bearer token, in a handshake session or in 2026-07-28's envelope."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str) -> None:
        self.http = http
        self.url = f"{url}/mcp"
        self.base = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        self.session: dict[str, str] = {}

    async def start(self) -> None:
        """The handshake era's session (2026-07-28 frames need none)."""
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": _INITIALIZE}
        response = await self.http.post(
            self.url, json=body, headers={**self.base, "mcp-protocol-version": LEGACY_VERSION}
        )
        response.raise_for_status()
        self.session = {"mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": LEGACY_VERSION}
        notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.http.post(self.url, json=notified, headers={**self.base, **self.session})

    def headers(self, era: Era, name: Any) -> dict[str, str]:
        if era == "legacy":
            return {**self.base, **self.session}
        routing = {"mcp-protocol-version": MODERN_VERSION, "mcp-method": "tools/call"}
        if isinstance(name, str):
            routing["mcp-name"] = encode_header_value(name)
        return {**self.base, **routing}

    async def post(self, frame: bytes, headers: dict[str, str]) -> tuple[int, list[Any]]:
        response = await self.http.post(self.url, content=frame, headers=headers)
        return response.status_code, _messages(response)
