"""A local stand-in for Linear's GraphQL API, held to Linear's real schema.

Every document is parsed and validated against ``tests/support/contracts/linear/schema.graphql`` with
graphql-core, its variables are coerced against the operation's variable definitions, and it is
then *executed* against that schema (resolvers below hold the state), so answers have exactly the
shape the schema gives. Anything invalid is recorded in ``violations`` and answered as GraphQL errors.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graphql import GraphQLSchema, build_schema, execute, parse, validate
from graphql.execution.values import get_variable_values
from graphql.language import OperationDefinitionNode

from support.github_fake import CONTRACTS


@cache
def linear_schema() -> GraphQLSchema:
    return build_schema((CONTRACTS / "linear" / "schema.graphql").read_text())


def check_document(query: str, variables: dict[str, Any]) -> list[str]:
    """Problems with a document and its variables under Linear's schema (empty when valid)."""
    schema = linear_schema()
    document = parse(query)
    problems = [e.message for e in validate(schema, document)]
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            coerced = get_variable_values(schema, definition.variable_definitions or [], variables)
            if isinstance(coerced, list):
                problems.extend(e.message for e in coerced)
    return problems


@dataclass
class FakeLinear:
    key: str
    auth_header: str  # what Authorization must be
    team_id: str = "team-ops"
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    create_hang_seconds: float = 0.0
    rate_limit_next: int = 0
    error_next: str | None = None  # a GraphQL error code answered inside HTTP 200 (e.g. "FORBIDDEN")
    stale_lookups: int = 0  # this many `issues` fields answer empty (a replica lagging behind the write)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FakeLinear:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/graphql"

    def creates(self) -> list[dict[str, Any]]:
        return [v for q, v in self.documents if "issueCreate" in q]

    # --- resolvers (graphql-core's default resolver calls these with (info, **arguments)) ---

    def _issues(self, _info: Any, filter: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        filter = filter or {}
        nodes = list(self.issues.values())
        if self.stale_lookups:
            self.stale_lookups -= 1
            return {"nodes": []}
        if "id" in filter:
            nodes = [i for i in nodes if i["id"] == filter["id"]["eq"]]
        if "team" in filter:
            nodes = [i for i in nodes if i["teamId"] == filter["team"]["id"]["eq"]]
        if "description" in filter:
            nodes = [i for i in nodes if filter["description"]["contains"] in i["description"]]
        if "state" in filter:
            nodes = [i for i in nodes if i["stateType"] not in filter["state"]["type"]["nin"]]
        return {"nodes": nodes[:1]}

    def _comments(self, _info: Any, filter: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        wanted = (filter or {}).get("id", {}).get("eq")
        return {"nodes": [c for c in self.comments.values() if c["id"] == wanted][:1]}

    def _issue_create(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        issue_id = input["id"]
        if issue_id in self.issues:
            raise ValueError("Entity already exists")  # Linear refuses a second issue with the same id
        number = len(self.issues) + 1
        issue = {
            "id": issue_id,
            "identifier": f"OPS-{number}",
            "url": f"https://linear.app/acme/issue/OPS-{number}",
            "title": input["title"],
            "description": input["description"],
            "teamId": input["teamId"],
            "priority": input.get("priority"),
            "labelIds": input.get("labelIds", []),
            "stateType": "triage",
        }
        self.issues[issue_id] = issue
        return {"success": True, "issue": issue, "lastSyncId": 1.0}

    def _comment_create(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        if input["id"] in self.comments:
            raise ValueError("Entity already exists")
        comment = {
            "id": input["id"],
            "url": f"https://linear.app/acme/issue/x#comment-{input['id'][:8]}",
            "body": input["body"],
            "issueId": input["issueId"],
        }
        self.comments[input["id"]] = comment
        return {"success": True, "comment": comment, "lastSyncId": 2.0}

    # --- HTTP -----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        payload = json.loads(raw)
        query, variables = payload["query"], payload.get("variables") or {}
        with self._lock:
            self.documents.append((query, variables))
            problems = check_document(query, variables)
            if problems:
                self.violations.extend(problems)
                return self._send(handler, 400, {"errors": [{"message": p} for p in problems]})
            if handler.headers.get("authorization") != self.auth_header:
                # Echoes what it got, as a careless proxy might: the adapter must keep it out of receipts.
                echoed = f"Authentication required, not {handler.headers.get('authorization')}"
                error = {"message": echoed, "extensions": {"code": "AUTHENTICATION_ERROR"}}
                return self._send(handler, 400, {"errors": [error]})
            if self.rate_limit_next:
                self.rate_limit_next -= 1
                error = {"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}
                return self._send(handler, 400, {"errors": [error]}, {"retry-after": "0"})
            if self.error_next:
                code, self.error_next = self.error_next, None
                error = {"message": f"{code.lower()} by the test", "extensions": {"code": code}}
                return self._send(handler, 200, {"data": None, "errors": [error]})
            root = {
                "issues": self._issues,
                "comments": self._comments,
                "issueCreate": self._issue_create,
                "commentCreate": self._comment_create,
            }
            result = execute(linear_schema(), parse(query), root_value=root, variable_values=variables)
            hang = self.create_hang_seconds if "issueCreate" in query and not result.errors else 0.0
            if hang:
                self.create_hang_seconds = 0.0
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [{"message": e.message} for e in result.errors]
        if hang:
            threading.Event().wait(hang)  # created, but answered after the client gave up
        self._send(handler, 200, body)

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass
