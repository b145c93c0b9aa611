"""A stdio MCP session without a client library: JSON-RPC frames written and read as lines, each answer only
``json.loads``-ed. Beside the SDK client's figures it shows what a call costs the server and its pipes alone,
without the client's parsing of the answer into pydantic models (a tools/list answer is ~16 KB of schemas).

The session is of the kind the SDK client opens on stdio: the 2026-07-28 era, every request carrying its own
``_meta`` envelope (no initialize handshake).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "2026-07-28"
_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "benchmarks-raw-jsonrpc", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
_LINE_LIMIT = 1 << 24  # an answer is one line; tools/list's is ~16 KB, asyncio's default limit 64 KiB


class RawStdioSession:
    """One server process on stdio; ``request`` sends a request and returns its result (an error raises)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._ids = count(1)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        request_id = next(self._ids)
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": _ENVELOPE}}
        self.process.stdin.write(json.dumps(frame).encode() + b"\n")
        await self.process.stdin.drain()
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{method}: the server closed stdout")
            answer = json.loads(line)
            if answer.get("id") != request_id:  # a notification (a log message): not the answer
                continue
            if "error" in answer:
                raise RuntimeError(f"{method} failed: {answer['error']}")
            result: dict[str, Any] = answer["result"]
            return result

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{name} failed: {result.get('content')}")
        return result


@asynccontextmanager
async def raw_stdio_session(
    command: list[str], env: dict[str, str], cwd: Path, log: Path
) -> AsyncIterator[RawStdioSession]:
    with log.open("ab") as errlog:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
            env=env,
            cwd=cwd,
            limit=_LINE_LIMIT,
        )
    try:
        session = RawStdioSession(process)
        await session.request("tools/list")  # answered once the server is up: its start-up is no call's cost
        yield session
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()
