"""``POST /incident-monitor/intake/report``: CI and services report with a scoped intake key.

The key (``x-incident-monitor-intake-key`` or ``Authorization: Bearer``) can do nothing but report
for its project (and source); the report goes through the same intake service as the MCP tool
``report_incident``. The key is checked before the body is parsed (a missing or malformed one before
it is read), and the body is parsed within limits (server/json_limits.py). Errors are JSON
``{"error": code, "message": …}`` and never repeat a value that was sent:

    400 body_invalid     not a JSON object, not UTF-8, nested over 32 deep, too many keys, a string too long
    401 key_required     no key sent
    401 key_invalid      unknown or disabled key (or not an intake key)
    403 key_not_allowed  the key is bound to another project or source
    413 too_large        body over http.max_intake_body_bytes
    422 project_unknown / source_unknown / report_invalid / report_rejected
    429 rate_limited     over http.rate_limits for this key, or too many refused keys from this address
    503 unavailable      the monitor could not record the report (e.g. its store failed); retry later
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from incident_monitor.domain.models import IntakeKeyBase
from incident_monitor.errors import CredentialError, MonitorError, PermissionDenied, StoreUnavailable
from incident_monitor.server.auth import bearer_credential
from incident_monitor.server.json_limits import BodyRejected, parse_json_body
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.service.intake import ProjectUnknown
from incident_monitor.service.intake_keys import authenticate_intake_key, looks_like_intake_key
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.projects import (
    IntakeReportBody,
    IntakeRequest,
    SourceUnknown,
    report_for_project,
)
from incident_monitor.store.pinned_reads import PinnedReads

logger = logging.getLogger(__name__)

KEY_HEADER = "x-incident-monitor-intake-key"
# The endpoint's own worker threads: reports in flight at once (units of work queue for the write lock and
# share commits: store/group_commit.py); more wait their turn here, apart from the MCP tools' threads.
INTAKE_WORKERS = 16


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _rate_limited(why: str, retry_after: int) -> JSONResponse:
    return _error(
        429, "rate_limited", f"{why}; retry after {retry_after} s (http.rate_limits)", {"retry-after": str(retry_after)}
    )


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class _Unread:
    """A body that could not be read whole: the answer it gets once the key is accepted."""

    refusal: Response
    rest_unread: bool  # the caller is still sending (over the size limit)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _field_names(*models: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for model in models for name in model.model_fields)


# Error locations name only these; any other key in a location was sent by the caller and is not repeated.
_KNOWN_FIELDS = _field_names(IntakeRequest, IntakeReportBody)


def describe_invalid_body(error: ValidationError) -> str:
    """Which fields are wrong and how, naming only the schema's own fields (an unknown key may be a secret)."""
    lines = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        parts = [str(p) if isinstance(p, int) or p in _KNOWN_FIELDS else "<key>" for p in err["loc"]]
        message = "unknown key; remove it (see the fields below)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  - {'.'.join(parts) or '(body)'}: {message}")
    fields = ", ".join(sorted(IntakeRequest.model_fields))
    report_fields = ", ".join(sorted(IntakeReportBody.model_fields))
    return f"fix these fields (body: {fields}; report: {report_fields}):\n" + "\n".join(lines)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class IntakeEndpoint:
    """Checks in the order the status codes rank: key (401, limited per address), key rate limit (429),
    body (413/400/422), report.

    A missing or malformed key is refused on the event loop, before the body is read. Otherwise the body
    is read (within the size limit, never parsed) and one worker thread checks the key, then parses and
    reports: one thread hop per request rather than one for the key and another for the report (each hop
    wakes a worker and hands the GIL over twice, the largest cost around the report service). A refused
    key still never gets its body parsed.
    """

    def __init__(self, monitor: Monitor, limiter: RateLimiter, unauthenticated: RateLimiter) -> None:
        self.monitor = monitor
        self.limiter = limiter
        self.unauthenticated = unauthenticated
        self._workers = ThreadPoolExecutor(max_workers=INTAKE_WORKERS, thread_name_prefix="intake-worker")
        # Key checks read on a few connections kept open between requests.
        self._key_reads = PinnedReads(monitor.engine)

    def close(self) -> None:
        """Wait for the reports in flight (the server stops taking requests first), then release the key
        checks' connections."""
        self._workers.shutdown(wait=True)
        self._key_reads.close()

    async def handle(self, request: Request) -> Response:
        address = f"address:{_client_address(request)}"
        retry_after = self.unauthenticated.blocked(address)
        if retry_after is not None:
            # Checked before the key: a guessed key gets the same answer whether or not it is right.
            return _rate_limited("too many refused intake keys from this address", retry_after)
        secret = self._secret(request)
        if isinstance(secret, Response):
            self.unauthenticated.take(address)
            return secret
        body = await self._read(request)
        response = await self._in_worker(secret, body)
        if response.status_code == 401:
            self.unauthenticated.take(address)
        return response

    async def _in_worker(self, secret: str, body: bytes | _Unread) -> Response:
        # The event loop's executor API rather than anyio.to_thread: a hop costs ~12 us of CPU instead of
        # ~40-60 us (anyio's capacity limiter, cancel scope and per-call worker hand-off), on every report.
        # The server always runs on asyncio (uvicorn). The caller's context goes along, as anyio's does.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._workers, context.run, self._check_and_report, secret, body
        )

    def _secret(self, request: Request) -> str | Response:
        """The key sent, or the 401 for none or for a credential that is not an intake key."""
        secret = request.headers.get(KEY_HEADER) or bearer_credential(request.scope)
        if not secret:
            return _error(
                401,
                "key_required",
                f"send an intake key in the {KEY_HEADER} header (or Authorization: Bearer); "
                "create one with `incident-monitor intake-keys create --project P`",
                {"www-authenticate": 'Bearer realm="incident-monitor-intake"'},
            )
        if not looks_like_intake_key(secret):
            return _error(401, "key_invalid", "not an intake key (imk_…); agents report with the MCP tool")
        return secret

    def _check_and_report(self, secret: str, body: bytes | _Unread) -> Response:
        """In a worker thread: the key first (its refusal is what the caller hears), then the body."""
        key = self._check_key(secret)
        if isinstance(key, Response):
            if isinstance(body, _Unread) and body.rest_unread:
                # The rest of an oversized body was never read: close rather than drain it.
                key.headers["connection"] = "close"
            return key
        if isinstance(body, _Unread):
            return body.refusal
        return self._parse_and_report(key, body)

    def _check_key(self, secret: str) -> IntakeKeyBase | Response:
        """The key (checked on every request), then its rate limit."""
        try:
            key = authenticate_intake_key(self.monitor, secret, self._key_reads)
        except CredentialError as exc:
            return _error(401, "key_invalid", exc.message)
        except Exception as exc:  # the store failed: say so, never a 500
            return _unavailable(exc)
        retry_after = self.limiter.retry_after(f"intake-key:{key.key_id}")
        if retry_after is not None:
            return _rate_limited("too many reports with this key", retry_after)
        return key

    async def _read(self, request: Request) -> bytes | _Unread:
        limit = self.monitor.config.http.max_intake_body_bytes
        try:
            return await _read_body(request, limit)
        except _TooLarge:
            # The rest of the body is not read: close the connection rather than drain it.
            return _Unread(
                _error(
                    413,
                    "too_large",
                    f"body over {limit} bytes (http.max_intake_body_bytes); send less detail",
                    {"connection": "close"},
                ),
                rest_unread=True,
            )
        except ClientDisconnect:
            return _Unread(_error(400, "body_invalid", "the request body was cut off"), rest_unread=False)

    def _parse_and_report(self, key: IntakeKeyBase, raw: bytes) -> Response:
        """Parse within limits, validate, then the intake service."""
        try:
            payload = parse_json_body(raw)
        except BodyRejected as exc:
            return _error(400, "body_invalid", exc.message)
        if not isinstance(payload, dict):
            return _error(400, "body_invalid", "the body must be a JSON object: {project_id, source_id, report}")
        try:
            parsed = IntakeRequest.model_validate(payload)
        except ValidationError as exc:
            return _error(422, "report_invalid", describe_invalid_body(exc))
        try:
            result = report_for_project(self.monitor, key, parsed)
        except MonitorError as exc:
            status = 403 if isinstance(exc, PermissionDenied) else 422
            code = {"invalid_input": "report_invalid"}.get(exc.code, exc.code)
            return _error(status, code, self._unechoed(exc, key))
        except Exception as exc:  # a fault below the service (store, disk): say so, never a 500
            return _unavailable(exc)
        return Response(
            result.model_dump_json(), status_code=200 if result.deduplicated else 201, media_type="application/json"
        )

    def _unechoed(self, exc: MonitorError, key: IntakeKeyBase) -> str:
        """The service's message, except where it would repeat the project or source id that was sent."""
        if isinstance(exc, ProjectUnknown):
            return f"project_id: not a configured project; this key reports for project '{key.project_id}'"
        if isinstance(exc, SourceUnknown):
            project = self.monitor.config.project(key.project_id)
            sources = ", ".join(project.sources) if project and project.sources else "(none configured)"
            return f"source_id: not a source of project '{key.project_id}'; use one of: {sources}"
        return exc.message


def _unavailable(exc: Exception) -> Response:
    # The exception's text may quote stored or sent values: log its kind only (a store fault is logged
    # once, where it is seen: store/faults.py).
    if not isinstance(exc, StoreUnavailable):
        logger.error("intake report not recorded: %s", type(exc).__name__)
    return _error(503, "unavailable", "the monitor could not record the report; retry later")
