"""A lean HTTP/1.1 load generator: keep-alive connections sending pre-encoded requests.

The intake benchmarks measure servers that answer in well under a millisecond, on a 2-core machine
the generator shares with them: a general-purpose client (httpx builds a request object, headers,
cookies and a response object per call) spends more CPU per request than the bare floor does and
so caps what can be measured. This one encodes every request before the clock starts and, per
response, reads the status line, the headers up to ``Content-Length`` and exactly that many body
bytes. Every status is checked, so a failed request can never count as throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

OK_STATUSES = frozenset({200, 201})


class LoadError(RuntimeError):
    pass


def encode_post(
    host: str, port: int, path: str, body: dict[str, Any], headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """One complete ``POST`` request (JSON body, keep-alive) as bytes."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response with a ``Content-Length`` (what Starlette/uvicorn send here)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise LoadError(f"not an HTTP/1.1 status line: {lines[0][:100]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            break
    if length is None:
        raise LoadError(f"response without content-length: {head[:300]!r}")
    body = await reader.readexactly(length) if length else b""
    return int(parts[1]), body


async def post_all(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    ok: Callable[[int], bool] = OK_STATUSES.__contains__,
) -> tuple[list[float], float]:
    """Send every request once over ``connections`` keep-alive connections (each sequential, all concurrent).

    Returns the latency of each request and the wall time of the whole run; raises LoadError on the
    first answer whose status ``ok`` refuses.
    """
    latencies: list[float] = []
    pending = iter(requests)
    streams = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for request in pending:
            start = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            if not ok(status):
                raise LoadError(f"answered {status}: {body[:300].decode(errors='replace')}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(connection(r, w) for r, w in streams))
    finally:
        wall = time.perf_counter() - started
        for _, writer in streams:
            writer.close()
        for _, writer in streams:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return latencies, wall
