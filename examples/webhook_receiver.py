"""A real Standard Webhooks receiver for tests and examples (a helper, not a test module).

It listens on 127.0.0.1 (an ephemeral port unless one is given) in a background thread, verifies every delivery's
signature with the given secret and records it. Only the standard library and ``standardwebhooks``
are used, so a plain script can use it too::

    with WebhookReceiver(secret) as receiver:
        ...  # publish to receiver.url
        assert len(receiver.unique_webhook_ids()) == 1

With ``log_path`` every verified delivery is also appended to that file as one JSON line (what
``make run`` shows as the place published evidence lands).

Knobs simulate unhealthy receivers: ``fail_first`` answers ``fail_status`` (with an optional
``Retry-After``) to the first requests; ``delay_first_seconds`` makes the first request answer late,
after it has been recorded, as a real receiver that got the delivery but answered too slowly.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from standardwebhooks import Webhook


def delivery_id_for(webhook_id: str) -> str:
    """The id the receiver answers for a webhook-id; stable, so a redelivery gets the same id."""
    return "dlv_" + hashlib.sha256(webhook_id.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: str
    payload: Any
    headers: dict[str, str]
    body: bytes = b""  # the raw bytes that were verified

    @property
    def delivery_id(self) -> str:
        return delivery_id_for(self.webhook_id)


class WebhookReceiver:
    def __init__(
        self,
        secret: str,
        *,
        path: str = "/hooks/incident",
        fail_first: int = 0,
        fail_status: int = 503,
        retry_after: str | None = None,
        delay_first_seconds: float = 0.0,
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.path = path
        self.log_path = log_path
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.delay_first_seconds = delay_first_seconds
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.request_count = 0
        self._webhook = Webhook(secret)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.receiver = self
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{path}"
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookReceiver(url={self.url!r}, deliveries={len(self.deliveries)})"

    def start(self) -> WebhookReceiver:
        if self._thread is None:
            # A short poll interval keeps close() (which waits for the serve loop) quick.
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes a delayed handler
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def unique_webhook_ids(self) -> set[str]:
        with self._lock:
            return {delivery.webhook_id for delivery in self.deliveries}

    # -- called from handler threads --------------------------------------------------------------

    def _next_request_number(self) -> int:
        with self._lock:
            self.request_count += 1
            return self.request_count

    def _handle(self, number: int, request_path: str, body: bytes, headers: dict[str, str]) -> _Answer:
        if request_path.split("?", 1)[0] != self.path:
            return _Answer(404, {"error": "unknown path"})
        if number <= self.fail_first:
            extra = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return _Answer(self.fail_status, {"error": "simulated failure"}, extra)
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except Exception as exc:  # verify also raises ValueError/binascii.Error on malformed headers
            with self._lock:
                self.rejected.append(f"{type(exc).__name__}: {exc}")
            return _Answer(401, {"error": "invalid signature"})
        try:
            payload = json.loads(body)
        except ValueError:
            with self._lock:
                self.rejected.append("body is not JSON")
            return _Answer(400, {"error": "body is not JSON"})
        webhook_id = headers["webhook-id"]
        with self._lock:
            self.deliveries.append(Delivery(webhook_id, headers["webhook-timestamp"], payload, headers, body))
            if self.log_path is not None:
                self._append_to_log(webhook_id, payload)
        return _Answer(200, {"id": delivery_id_for(webhook_id), "received": True})

    def _append_to_log(self, webhook_id: str, payload: Any) -> None:
        assert self.log_path is not None
        line = {"received_at": datetime.now(UTC).isoformat(), "webhook_id": webhook_id, "payload": payload}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver = cast(_Server, self.server).receiver
        number = receiver._next_request_number()
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = receiver._handle(number, self.path, body, headers)
        if number == 1 and receiver.delay_first_seconds > 0:
            receiver._closing.wait(receiver.delay_first_seconds)
        self._reply(answer)

    def do_GET(self) -> None:
        self._reply(_Answer(405, {"error": "POST only"}))

    def _reply(self, answer: _Answer) -> None:
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (answer.headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout): the delivery is recorded all the same

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
