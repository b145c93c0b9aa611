"""A reference coding-agent platform implementing the whole seed-002 interface (the platform side).

Used by the tests (over real sockets) and by the walk-through in docs/code-changes.md. Standard library and
``standardwebhooks`` only, so it runs as a plain script::

    python examples/coding_agent_platform.py --port 0 --token-env PLATFORM_TOKEN --finish-after 2

or in a test::

    with CodingAgentPlatform(token="t0k") as platform:
        ...  # launch through the monitor, then
        platform.finish(run_id)  # signed webhook(s) to the per-launch URL

Endpoints (all need ``Authorization: Bearer <token>``; every request is recorded with its headers):
``POST /agents`` (idempotent by ``task_id``), ``GET /agents/{id}``, ``POST /agents/{id}/followup``,
``POST /agents/{id}/stop``, ``GET /ping``. Knobs: ``drop_webhooks`` (never call back: polling must do it),
``reorder_webhooks`` (hold callbacks and send them newest first, each twice), ``omit_pr_url`` (report
``finished`` without a PR URL), ``finish_after`` (seconds after which a run finishes by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from standardwebhooks import Webhook

INTERFACE_VERSION = "2026-06-12"


@dataclass
class Run:
    id: str
    task_id: str
    prompt: str
    incident_id: str | None
    reference: str | None
    repository: str | None
    webhook_url: str | None
    webhook_secret: str | None
    started: float
    status: str = "running"
    summary: str = "Run started"
    pr_url: str | None = None
    branch: str | None = None
    followups: list[str] = field(default_factory=list)
    stopped: bool = False

    def status_body(self, *, omit_pr_url: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status, "summary": self.summary}
        if self.pr_url and not omit_pr_url:
            body["pr_url"] = self.pr_url
        if self.branch:
            body["branch"] = self.branch
        return body


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class CodingAgentPlatform:
    def __init__(
        self,
        *,
        token: str,
        port: int = 0,
        drop_webhooks: bool = False,
        reorder_webhooks: bool = False,
        omit_pr_url: bool = False,
        finish_after: float | None = None,
    ) -> None:
        self.token = token
        self.drop_webhooks = drop_webhooks
        self.reorder_webhooks = reorder_webhooks
        self.omit_pr_url = omit_pr_url
        self.finish_after = finish_after
        self.runs: dict[str, Run] = {}
        self.requests: list[Request] = []
        self.webhooks_sent: list[tuple[str, int | None]] = []  # (run id, our answer's status)
        self._held: list[tuple[Run, bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._ticker: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        host, port = cast(tuple[str, int], self._server.server_address[:2])
        return f"http://{host}:{port}"

    def __enter__(self) -> CodingAgentPlatform:
        self._thread.start()
        if self.finish_after is not None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _tick(self) -> None:
        while not self._closing.wait(0.2):
            assert self.finish_after is not None
            for run in list(self.runs.values()):
                if run.status == "running" and not run.stopped and time.monotonic() - run.started >= self.finish_after:
                    self.finish(run.id)

    # --- what a run does (tests drive these) ----------------------------------------------------------------

    def launch(self, body: dict[str, Any]) -> tuple[Run, bool]:
        with self._lock:
            for run in self.runs.values():
                if run.task_id == body["task_id"]:
                    return run, False
            run_id = f"run-{len(self.runs) + 1:04d}"
            webhook = body.get("webhook") if isinstance(body.get("webhook"), dict) else {}
            run = Run(
                id=run_id,
                task_id=str(body["task_id"]),
                prompt=str(body.get("prompt", "")),
                incident_id=body.get("incident_id"),
                reference=body.get("reference"),
                repository=body.get("repository"),
                webhook_url=webhook.get("url"),
                webhook_secret=webhook.get("secret"),
                started=time.monotonic(),
            )
            self.runs[run_id] = run
            return run, True

    def progress(self, run_id: str, summary: str) -> None:
        run = self.runs[run_id]
        run.summary = summary
        self._callback(run)

    def finish(self, run_id: str) -> None:
        """The agent opened (or updated) its draft PR and reports ``finished``."""
        run = self.runs[run_id]
        run.branch = f"agent/{run.id}"
        run.pr_url = f"https://github.example/{run.repository or 'acme/app'}/pull/{int(run.id.split('-')[1])}"
        run.status = "finished"
        run.summary = f"Opened a draft PR ({len(run.followups)} follow-ups)"
        self._callback(run)
        self.flush_held()

    def fail(self, run_id: str, summary: str = "The agent could not reproduce the failure") -> None:
        run = self.runs[run_id]
        run.status = "error"
        run.summary = summary
        self._callback(run)
        self.flush_held()

    def launch_answer(self, run: Run) -> dict[str, Any]:
        """The body of ``POST /agents``'s answer: the run id and a link to the run in this platform's UI."""
        return {"id": run.id, "url": f"{self.url}/ui/runs/{run.id}"}

    def before_status(self, run_id: str) -> None:
        """Called before each ``GET /agents/{id}`` is answered; nothing here (tests slow the platform down)."""

    def forget(self, run_id: str) -> None:
        """Clean the run up: later calls about it answer 404."""
        self.runs.pop(run_id, None)

    def _callback(self, run: Run) -> None:
        if self.drop_webhooks or not run.webhook_url or not run.webhook_secret:
            return
        body = json.dumps(run.status_body(omit_pr_url=self.omit_pr_url)).encode()
        if self.reorder_webhooks:
            self._held.append((run, body))
            return
        self.send_webhook(run, body)

    def flush_held(self) -> None:
        """Reordering: the held callbacks go out newest first, each twice (duplicates and out of order)."""
        held, self._held = self._held, []
        for run, body in reversed(held):
            self.send_webhook(run, body)
            self.send_webhook(run, body)

    def send_webhook(self, run: Run, body: bytes, *, secret: str | None = None) -> int | None:
        """POST one signed callback (``secret`` overrides the run's: a forged signature); our answer's status."""
        assert run.webhook_url is not None
        signer = Webhook(secret or run.webhook_secret or "")
        message_id = f"msg_{run.id}_{len(self.webhooks_sent)}"
        now = datetime.now(UTC)
        request = urllib.request.Request(  # noqa: S310 - the URL the launch named, http(s) only
            run.webhook_url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, body.decode()),
            },
        )
        status: int | None
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = None  # fire and forget: the poll picks the status up
        self.webhooks_sent.append((run.id, status))
        return status


def _handler_for(platform: CodingAgentPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _read(self, method: str) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            platform.requests.append(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            return body

        def _authorized(self) -> bool:
            if self.headers.get("authorization") != f"Bearer {platform.token}":
                self._reply(401, {"error": "bad bearer token"})
                return False
            return True

        def do_GET(self) -> None:
            self._read("GET")
            if not self._authorized():
                return
            if self.path == "/ping":
                self._reply(200, {"ok": True, "interface_version": INTERFACE_VERSION})
                return
            parts = self.path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "agents":
                platform.before_status(parts[1])
                run = platform.runs.get(parts[1])
                if run is None:
                    self._reply(404, {"error": "no such run"})
                    return
                self._reply(200, run.status_body(omit_pr_url=platform.omit_pr_url))
                return
            self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = self._read("POST")
            if not self._authorized():
                return
            parts = self.path.strip("/").split("/")
            if parts == ["agents"]:
                if not isinstance(body, dict) or not body.get("task_id") or not body.get("prompt"):
                    self._reply(400, {"error": "task_id and prompt are required"})
                    return
                run, created = platform.launch(body)
                self._reply(201 if created else 200, platform.launch_answer(run))
                return
            if len(parts) == 3 and parts[0] == "agents" and parts[2] in ("followup", "stop"):
                run = platform.runs.get(parts[1])
                if run is None:
                    self._reply(404, {"error": "no such run"})
                    return
                if parts[2] == "stop":
                    run.stopped = True
                    run.status = "error"
                    run.summary = "Stopped by the requester"
                    self._reply(200, {})
                    return
                instructions = body.get("prompt") if isinstance(body, dict) else None
                if not isinstance(instructions, str) or not instructions:
                    self._reply(400, {"error": "prompt is required"})
                    return
                run.followups.append(instructions)
                run.status = "running"
                run.summary = f"Working on follow-up {len(run.followups)}"
                run.started = time.monotonic()
                self._reply(200, {"id": run.id})
                return
            self._reply(404, {"error": "not found"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A reference coding-agent platform (seed-002 interface).")
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: a free one).")
    parser.add_argument("--token-env", default="PLATFORM_TOKEN", help="Variable holding the bearer token we accept.")
    parser.add_argument("--finish-after", type=float, default=None, help="Seconds after which a run finishes.")
    parser.add_argument("--drop-webhooks", action="store_true")
    parser.add_argument("--reorder-webhooks", action="store_true")
    parser.add_argument("--omit-pr-url", action="store_true")
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        print(f"set {args.token_env} to the bearer token this platform accepts", file=sys.stderr)
        return 2
    platform = CodingAgentPlatform(
        token=token,
        port=args.port,
        drop_webhooks=args.drop_webhooks,
        reorder_webhooks=args.reorder_webhooks,
        omit_pr_url=args.omit_pr_url,
        finish_after=args.finish_after,
    )
    with platform:
        print(f"coding-agent platform listening on {platform.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
