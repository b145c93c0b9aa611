"""The lean load generator of the intake benchmarks (benchmarks/load.py): it counts only answered requests
with an accepted status, and refuses anything it cannot read as a complete HTTP/1.1 response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from benchmarks.load import LoadError, encode_post, post_all


async def serve(
    answer: Callable[[int, bytes], bytes], requests: int, connections: int
) -> tuple[list[float], list[bytes]]:
    """A keep-alive server on 127.0.0.1:0 answering the n-th request (0-based) with ``answer(n, body)``."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                seen.append(body)
                writer.write(answer(len(seen) - 1, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        batch = [encode_post("127.0.0.1", port, "/x", {"i": i}, [("x-key", "k")]) for i in range(requests)]
        latencies, _ = await post_all("127.0.0.1", port, batch, connections)
    finally:
        server.close()
    return latencies, seen


def response(status: int, body: bytes = b'{"ok":true}', length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
    if length:
        head += f"content-length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def test_every_request_is_sent_once_and_each_accepted_answer_timed() -> None:
    latencies, seen = asyncio.run(serve(lambda n, _: response(201 if n % 2 else 200), requests=50, connections=8))
    assert len(latencies) == 50
    assert sorted(json.loads(b)["i"] for b in seen) == list(range(50))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (response(500, b'{"error":"boom"}'), "answered 500"),
        (response(429), "answered 429"),
        (response(201, length=False), "without content-length"),
        (b"garbage\r\n\r\n", "not an HTTP/1.1 status line"),
    ],
)
def test_a_refused_or_unreadable_answer_stops_the_run(answer: bytes, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        asyncio.run(serve(lambda n, _: answer if n == 3 else response(201), requests=20, connections=2))
