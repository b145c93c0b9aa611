"""A local stand-in for the GitHub issues API, held to GitHub's real contract.

Every request it receives is validated against ``tests/support/contracts/github/issues-openapi.json``
(operation, path and query parameters, request body) and every answer it gives too; answers are
built from the recorded fixtures in ``tests/support/contracts/github/fixtures``. Anything off-contract is
recorded in ``violations`` (tests assert it stays empty) and answered 400.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

# Vendored beside the tests (sources and licences in contracts/README.md) so any clone passes on its own.
CONTRACTS = Path(__file__).resolve().parent / "contracts"
GITHUB = CONTRACTS / "github"


def _allow_null_in_nullable_enums(node: Any) -> None:
    """OpenAPI 3.0 leaves `nullable` + `enum` ambiguous; GitHub means null is allowed (its recordings send it)."""
    if isinstance(node, dict):
        if node.get("nullable") and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"].append(None)
        for value in node.values():
            _allow_null_in_nullable_enums(value)
    elif isinstance(node, list):
        for value in node:
            _allow_null_in_nullable_enums(value)


@cache
def github_openapi() -> OpenAPI:
    spec = json.loads((GITHUB / "issues-openapi.json").read_text())
    _allow_null_in_nullable_enums(spec)
    return OpenAPI.from_dict(spec)


@cache
def fixture(name: str) -> list[dict[str, Any]]:
    return json.loads((GITHUB / "fixtures" / f"{name}.json").read_text())


@dataclass
class FakeGitHub:
    token: str
    owner: str = "acme"
    repo: str = "incidents"
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Behaviour switches a test sets:
    create_hang_seconds: float = 0.0  # the first create is stored, then answered this late (a client timeout)
    create_error: int | None = None  # answer every create with this status
    rate_limit_next: int = 0  # answer this many requests with a primary rate limit (reset in 1 s)
    secondary_limit_next: int = 0  # answer this many requests with a secondary limit (retry-after: 1)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- server -----------------------------------------------------------------------------

    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "get")

            def do_POST(self) -> None:
                fake._handle(self, "post")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def creates(self) -> list[Any]:
        return [body for method, path, body in self.requests if method == "post" and path.endswith("/issues")]

    # --- handling ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0)) if method == "post" else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append((method, parts.path, body))
        args = {k: v[0] for k, v in parse_qs(parts.query).items()}
        request = MockRequest(
            "https://api.github.com",
            method,
            parts.path,
            args=args,
            data=raw or None,
            content_type="application/json" if raw else None,
        )
        try:
            github_openapi().validate_request(request)
        except Exception as exc:
            self.violations.append(f"{method.upper()} {handler.path}: {_why(exc)}")
            return self._answer(handler, request, 400, {"message": "off-contract request"}, validate=False)
        if handler.headers.get("authorization") != f"Bearer {self.token}":
            # Echoes what it got, as a careless proxy might: the adapter must keep it out of receipts.
            echoed = f"Bad credentials: {handler.headers.get('authorization')}"
            return self._answer(handler, request, 401, {"message": echoed}, validate=False)
        if handler.headers.get("x-github-api-version") != "2022-11-28":
            self.violations.append(f"missing x-github-api-version on {method.upper()} {parts.path}")
        with self._lock:
            if self.rate_limit_next:
                self.rate_limit_next -= 1
                reset = str(int(time.time()) + 1)
                return self._answer(
                    handler,
                    request,
                    403,
                    {"message": "API rate limit exceeded"},
                    headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
                )
            if self.secondary_limit_next:
                self.secondary_limit_next -= 1
                return self._answer(
                    handler,
                    request,
                    403,
                    {"message": "You have exceeded a secondary rate limit."},
                    headers={"retry-after": "1"},
                )
        segments = parts.path.strip("/").split("/")
        if segments[:3] != ["repos", self.owner, self.repo]:
            return self._answer(handler, request, 404, {"message": "Not Found"})
        rest = segments[3:]
        if rest == ["issues"] and method == "get":
            return self._list(handler, request, args, self.issues, self._issue_filter(args))
        if rest == ["issues"] and method == "post":
            return self._create(handler, request, body)
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments":
            number = int(rest[1])
            if method == "get":
                return self._list(handler, request, args, self.comments.get(number, []), lambda _c: True)
            return self._comment(handler, request, number, body)
        return self._answer(handler, request, 404, {"message": "Not Found"})

    def _issue_filter(self, args: dict[str, str]) -> Any:
        state = args.get("state", "open")
        wanted = {label for label in args.get("labels", "").split(",") if label}

        def keep(issue: dict[str, Any]) -> bool:
            names = {label["name"] for label in issue["labels"]}
            return (state == "all" or issue["state"] == state) and wanted <= names

        return keep

    def _list(
        self,
        handler: BaseHTTPRequestHandler,
        request: MockRequest,
        args: dict[str, str],
        items: list[dict[str, Any]],
        keep: Any,
    ) -> None:
        per_page = int(args.get("per_page", "30"))
        page = int(args.get("page", "1"))
        with self._lock:
            matching = [copy.deepcopy(i) for i in items if keep(i)]
        if args.get("direction", "desc") == "desc" and "number" in (matching[0] if matching else {}):
            matching.sort(key=lambda i: i["number"], reverse=True)
        chunk = matching[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(matching):
            query = "&".join(f"{k}={v}" for k, v in {**args, "page": str(page + 1)}.items())
            path = urlsplit(handler.path).path
            headers["link"] = f'<{self.url}{path}?{query}>; rel="next"'
        self._answer(handler, request, 200, chunk, headers=headers)

    def _create(self, handler: BaseHTTPRequestHandler, request: MockRequest, body: dict[str, Any]) -> None:
        if self.create_error == 422:
            return self._answer(handler, request, 422, fixture("errors")[0]["response"])
        if self.create_error is not None:
            return self._answer(handler, request, self.create_error, {"message": "refused by the test"})
        with self._lock:
            number = len(self.issues) + 1
            issue = copy.deepcopy(fixture("add-labels-to-issue")[0]["response"])
            label_template = fixture("add-labels-to-issue")[1]["response"][0]
            base = f"https://api.github.com/repos/{self.owner}/{self.repo}/issues/{number}"
            issue.update(
                number=number,
                id=1000 + number,
                title=body["title"],
                body=body.get("body"),
                labels=[{**label_template, "name": name} for name in body.get("labels", [])],
                url=base,
                comments=0,
                comments_url=f"{base}/comments",
                html_url=f"https://github.com/{self.owner}/{self.repo}/issues/{number}",
            )
            self.issues.append(issue)
            hang = self.create_hang_seconds
            self.create_hang_seconds = 0.0
        if hang:
            time.sleep(hang)  # created, but the client gives up before the answer arrives
        self._answer(handler, request, 201, issue)

    def _comment(
        self, handler: BaseHTTPRequestHandler, request: MockRequest, number: int, body: dict[str, Any]
    ) -> None:
        issue = next((i for i in self.issues if i["number"] == number), None)
        if issue is None:
            return self._answer(handler, request, 404, {"message": "Not Found"})
        with self._lock:
            comments = self.comments.setdefault(number, [])
            comment_id = 5000 + sum(len(c) for c in self.comments.values())
            comment = {
                "id": comment_id,
                "node_id": "MDA6RW50aXR5MQ==",
                "url": f"{issue['url'].rsplit('/', 2)[0]}/issues/comments/{comment_id}",
                "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
                "body": body["body"],
                "user": issue["user"],
                "created_at": "2026-11-22T12:00:00Z",
                "updated_at": "2026-11-22T12:00:00Z",
                "issue_url": issue["url"],
                "author_association": "MEMBER",
            }
            comments.append(comment)
            issue["comments"] = len(comments)
        self._answer(handler, request, 201, comment)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        request: MockRequest,
        status: int,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        validate: bool = True,
    ) -> None:
        data = json.dumps(payload).encode()
        if validate:
            try:
                github_openapi().validate_response(
                    request, MockResponse(data, status_code=status, content_type="application/json")
                )
            except Exception as exc:
                if type(exc).__name__ == "ResponseNotFound":
                    pass  # a status this operation does not document (e.g. a rate-limit 403 on a list): no schema
                else:
                    self.violations.append(f"answer {status} to {request.method.upper()} {request.path}: {_why(exc)}")
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json; charset=utf-8")
            handler.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)


def _why(exc: Exception) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    while cause is not None:
        errors = getattr(cause, "schema_errors", None)
        parts.append(f"{type(cause).__name__}: {[str(e.message) for e in errors] if errors else cause}")
        cause = cause.__cause__
    return " <- ".join(parts)[:600]
