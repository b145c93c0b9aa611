"""``POST /incident-monitor/intake/report``: CI and services report with a scoped intake key.

The key (``x-incident-monitor-intake-key`` or ``Authorization: Bearer``) can do nothing but report
for its project (and source); the report goes through the same intake service as the MCP tool
``report_incident``. Errors are JSON ``{"error": code, "message": …}``:

    400 body_invalid     not a JSON object
    401 key_required     no key sent
    401 key_invalid      unknown or disabled key (or not an intake key)
    403 key_not_allowed  the key is bound to another project or source
    413 too_large        body over http.max_intake_body_bytes
    422 project_unknown / source_unknown / report_invalid / report_rejected
    429 rate_limited     over http.rate_limits for this key (Retry-After says when to retry)
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from incident_monitor.errors import CredentialError, MonitorError, PermissionDenied
from incident_monitor.server.auth import bearer_credential
from incident_monitor.server.errors import describe_invalid_arguments
from incident_monitor.server.rate_limit import RateLimiter
from incident_monitor.service.intake_keys import authenticate_intake_key, looks_like_intake_key
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.projects import IntakeRequest, report_for_project

KEY_HEADER = "x-incident-monitor-intake-key"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


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


class IntakeEndpoint:
    """Checks in the order the status codes rank: key (401), rate limit (429), body (413/400/422), report.

    The body is read and parsed on the event loop first (cheap, and it needs the loop); the key
    check, the rate limit and the report then run in ONE worker thread: a hop to a thread costs
    about as much as checking the key, so one per request, not two.
    """

    def __init__(self, monitor: Monitor, limiter: RateLimiter) -> None:
        self.monitor = monitor
        self.limiter = limiter

    async def handle(self, request: Request) -> Response:
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
        parsed = await self._parse(request)
        return await anyio.to_thread.run_sync(self._report, secret, parsed)

    async def _parse(self, request: Request) -> IntakeRequest | Response:
        """The validated request, or the error to answer once the key has been checked."""
        limit = self.monitor.config.http.max_intake_body_bytes
        try:
            raw = await _read_body(request, limit)
        except _TooLarge:
            return _error(413, "too_large", f"body over {limit} bytes (http.max_intake_body_bytes); send less detail")
        except ClientDisconnect:
            return _error(400, "body_invalid", "the request body was cut off")
        try:
            payload: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body_invalid", "the body must be JSON: {project_id, source_id, report: {...}}")
        if not isinstance(payload, dict):
            return _error(400, "body_invalid", "the body must be a JSON object: {project_id, source_id, report}")
        try:
            return IntakeRequest.model_validate(payload)
        except ValidationError as exc:
            text = describe_invalid_arguments("intake report", exc).replace("invalid_input: ", "", 1)
            return _error(422, "report_invalid", text)

    def _report(self, secret: str, parsed: IntakeRequest | Response) -> Response:
        """In a worker thread: the key (checked on every request), its rate limit, then the intake service."""
        try:
            key = authenticate_intake_key(self.monitor, secret)
        except CredentialError as exc:
            return _error(401, "key_invalid", exc.message)
        retry_after = self.limiter.retry_after(f"intake-key:{key.key_id}")
        if retry_after is not None:
            return _error(
                429,
                "rate_limited",
                f"too many reports with this key; retry after {retry_after} s (http.rate_limits)",
                {"retry-after": str(retry_after)},
            )
        if isinstance(parsed, Response):
            return parsed
        try:
            result = report_for_project(self.monitor, key, parsed)
        except MonitorError as exc:
            status = 403 if isinstance(exc, PermissionDenied) else 422
            code = {"invalid_input": "report_invalid"}.get(exc.code, exc.code)
            return _error(status, code, exc.message)
        return Response(
            result.model_dump_json(), status_code=200 if result.deduplicated else 201, media_type="application/json"
        )
