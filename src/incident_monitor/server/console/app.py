"""The incident console: server-rendered pages at ``/console/`` on the HTTP app, for operators.

Every page and action is the same governed service call the MCP tools make (scope check, audit row),
as the signed-in principal. Reading works without JavaScript; the vendored htmx adds in-place
navigation (``hx-boost``) and polling of the incident list and approvals queue (works behind any
number of replicas: each poll is an ordinary request).

Safety: Jinja2 autoescaping everywhere, a strict Content-Security-Policy (no inline script or
style), Host and foreign Origins refused app-wide (server/host_origin.py), and every POST checked for
its own origin and a CSRF token;
a refused POST is written to the audit log as a denial.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incident_monitor.domain.enums import Decision, IncidentStatus, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.errors import (
    CredentialError,
    InsufficientScope,
    InvalidInput,
    InvalidTransition,
    MonitorError,
    NotFound,
    PermissionDenied,
)
from incident_monitor.policy.principal import LOCAL_AGENT, UNAUTHENTICATED, Principal
from incident_monitor.policy.scopes import APPROVE, GOVERNANCE, READ, REPORT, RESOLVE, ROUTE_PREVIEW
from incident_monitor.server.auth import BearerAuthenticator, principal_of
from incident_monitor.server.console.session import (
    LOGIN_COOKIE,
    LOGIN_LIFETIME,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    ConsoleSession,
    SessionCodec,
    login_nonce_valid,
    new_login_nonce,
)
from incident_monitor.server.host_origin import allowed as allowed_origin
from incident_monitor.server.tools import tool_catalog
from incident_monitor.service import console_queries, queries
from incident_monitor.service.approvals import decide_approval
from incident_monitor.service.governance.inventory import get_authority_inventory
from incident_monitor.service.governance.posture import run_posture_checks
from incident_monitor.service.governed import record_decision
from incident_monitor.service.incidents import resolve_incident
from incident_monitor.service.intake import report_incident
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.route_preview import preview_route

T = TypeVar("T")
PREFIX = "/console"
HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
# How often the incident list and approvals queue poll (seconds). Each poll is an audited read.
POLL_SECONDS = 10
MANUAL_SOURCE = "console"
MANUAL_EVENT = "console.escalation"
# Messages after an action (by code, so nothing a request supplies is echoed into the page).
DONE_MESSAGES = {
    "resolved": "Incident resolved.",
    "approved": "Approved: the agent may now publish the draft.",
    "denied": "Denied: the draft will not be published.",
    "superseded": "Not decided: the draft's evidence changed since approval was requested (the request is "
    "superseded); the agent must request approval again.",
    "escalated": "Escalation recorded as an incident.",
}
LOGIN_REASONS = {
    "signed_out": "You are signed out.",
    "ended": "Your session ended (it expired, or its token was revoked or expired). Sign in again.",
    "required": "Sign in with an operator token to use the console.",
}
STATUS_FOR_ERROR: dict[type[MonitorError], int] = {
    InsufficientScope: 403,
    PermissionDenied: 403,
    NotFound: 404,
    InvalidTransition: 409,
    InvalidInput: 400,
}

# The credential check is the HTTP app's own (server/auth.py); passed in as one narrow function.
Verify = Callable[[str], Awaitable[Principal]]


def _status_for(exc: MonitorError) -> int:
    for kind, status in STATUS_FOR_ERROR.items():
        if isinstance(exc, kind):
            return status
    return 400


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _link(url: str | None) -> str | None:
    """A URL safe to put in href (http or https only), or None."""
    if not url:
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def _short_scope(scope: str) -> str:
    return scope.split(":", 1)[-1]


def template_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        auto_reload=False,  # templates ship with the package: no stat per render
        autoescape=True,  # every template, every value: titles and details are hostile input
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, pretty=_pretty, link=_link, short_scope=_short_scope)
    env.globals.update(prefix=PREFIX, poll_seconds=POLL_SECONDS, severities=[s.value for s in Severity])
    return env


class SecurityHeaders:
    """Adds the CSP and related headers to every console response (pages, fragments, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class Visitor:
    principal: Principal
    session: ConsoleSession | None  # None when the request carried a bearer token (or auth is off)
    via: Literal["cookie", "bearer", "none"]

    def can(self, scope: str) -> bool:
        return scope in self.principal.scopes


class Refused(Exception):
    """A request refused before any service call (sign-in needed, bad Host, forged POST): its response."""

    def __init__(self, response: Response) -> None:
        self.response = response


class Console:
    def __init__(
        self,
        monitor: Monitor,
        verify: Verify | None,
        public_url: str | None,
    ) -> None:
        self.monitor = monitor
        self.verify = verify  # None: the server runs with --no-auth (loopback); the console is read-only
        self.public_url = public_url.rstrip("/") if public_url else None
        self.codec = SessionCodec.for_data_dir(monitor.data_dir)
        self.templates = template_environment()
        self.extra_origins = list(monitor.config.http.allowed_origins)

    # --- plumbing ---------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        routes = [
            Route("/", self.incidents, methods=["GET"]),
            Route("/incidents/live", self.incidents_live, methods=["GET"]),
            Route("/incidents/{incident_id}", self.incident, methods=["GET"]),
            Route("/incidents/{incident_id}/resolve", self.resolve, methods=["POST"]),
            Route("/approvals", self.approvals, methods=["GET"]),
            Route("/approvals/live", self.approvals_live, methods=["GET"]),
            Route("/approvals/{approval_id}/decide", self.decide, methods=["POST"]),
            Route("/escalate", self.escalate_form, methods=["GET"]),
            Route("/escalate", self.escalate, methods=["POST"]),
            Route("/governance", self.governance, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return [Mount(PREFIX, app=SecurityHeaders(_Router(routes)))]

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Service calls block on the database: a worker thread, as for the MCP tools.
        return await anyio.to_thread.run_sync(partial(call, *args, **kwargs))

    def _render(
        self, request: Request, template: str, visitor: Visitor | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        csrf = self.codec.csrf_token(visitor.session.session_id) if visitor and visitor.session else ""
        context = {"done": None, "error": None, **context}
        page = self.templates.get_template(template).render(
            request_path=request.url.path,
            visitor=visitor,
            csrf_token=csrf,
            can_act=bool(visitor and visitor.via != "none"),
            scopes={
                "read": READ,
                "approve": APPROVE,
                "resolve": RESOLVE,
                "report": REPORT,
                "governance": GOVERNANCE,
                "route_preview": ROUTE_PREVIEW,
            },
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})

    def _error_page(self, request: Request, visitor: Visitor | None, exc: MonitorError) -> HTMLResponse:
        return self._render(request, "error.html", visitor, _status_for(exc), error=exc.message)

    def _secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or bool(self.public_url and self.public_url.startswith("https://"))

    def _origin_allowed(self, request: Request, origin: str) -> bool:
        """Stricter than the app-wide guard (HostOriginGuard, which also admits any loopback port): only
        this console's own origin, its public URL's, and the configured http.allowed_origins."""
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        allowed = [own, *self.extra_origins]
        if self.public_url:
            parts = urlsplit(self.public_url)
            allowed.append(f"{parts.scheme}://{parts.netloc}")
        return allowed_origin(origin, allowed)

    async def identify(self, request: Request) -> Visitor | None:
        """Who is asking: a bearer token, else the session cookie; None when neither holds (sign in)."""
        if self.verify is None:
            return Visitor(LOCAL_AGENT, None, "none")
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and header[7:].strip():
            try:
                return Visitor(await self.verify(header[7:].strip()), None, "bearer")
            except CredentialError as exc:
                raise Refused(
                    HTMLResponse(
                        f"<p>{html.escape(exc.message)}</p>", status_code=401, headers={"www-authenticate": "Bearer"}
                    )
                ) from None
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        session = self.codec.open(cookie, self.monitor.clock())
        if session is None:
            raise Refused(self._to_login(request, "ended", clear=True))
        try:
            principal = await self.verify(session.credential)
        except CredentialError:
            raise Refused(self._to_login(request, "ended", clear=True)) from None
        return Visitor(principal, session, "cookie")

    def _to_login(self, request: Request, reason: str, *, clear: bool = False) -> Response:
        url = f"{PREFIX}/login?reason={reason}"
        response: Response
        if request.headers.get("hx-request"):
            # htmx follows redirects inside the page; HX-Redirect makes it load the login page whole.
            response = Response(status_code=204, headers={"hx-redirect": url})
        else:
            response = RedirectResponse(url, status_code=303)
        if clear:
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def visitor(self, request: Request) -> Visitor:
        visitor = await self.identify(request)
        if visitor is None:
            raise Refused(self._to_login(request, "required"))
        return visitor

    async def posting(self, request: Request, action: str) -> tuple[Visitor, FormData]:
        """A POST's visitor and form, after the Origin and CSRF checks; a refusal is audited."""
        visitor = await self.visitor(request)
        form = await request.form()
        origin = request.headers.get("origin")
        problem = None
        if origin is not None and not self._origin_allowed(request, origin):
            problem = "cross-site request refused: its Origin is not this console's"
        elif visitor.via == "none":
            problem = "the console is read-only when the server runs without authentication (--no-auth)"
        elif visitor.session is not None and not self.codec.csrf_valid(
            visitor.session.session_id, _field(form, "csrf_token")
        ):
            problem = "forged request refused: the CSRF token is missing or wrong; reload the page and try again"
        if problem is not None:
            await self._audit_refusal(visitor.principal, action, problem, request.url.path)
            raise Refused(self._render(request, "error.html", visitor, 403, error=problem))
        return visitor, form

    async def _audit_refusal(self, principal: Principal, action: str, reason: str, path: str) -> None:
        await self._run(
            record_decision, self.monitor, principal, action, Decision.deny, [reason], {"console_path": path}
        )

    # --- sign-in ----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        reason = request.query_params.get("reason", "")
        return self._login_page(request, LOGIN_REASONS.get(reason), None, 200)

    def _login_page(self, request: Request, notice: str | None, error: str | None, status: int) -> Response:
        nonce = new_login_nonce()
        response = self._render(request, "login.html", None, status, nonce=nonce, notice=notice, error=error)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=int(LOGIN_LIFETIME.total_seconds()),
            path=f"{PREFIX}/login",
            httponly=True,
            samesite="strict",
            secure=self._secure(request),
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        origin = request.headers.get("origin")
        anonymous = UNAUTHENTICATED
        if origin is not None and not self._origin_allowed(request, origin):
            problem = "cross-site sign-in refused: its Origin is not this console's"
        elif not login_nonce_valid(request.cookies.get(LOGIN_COOKIE), _field(form, "nonce")):
            problem = "sign-in refused: the form expired or did not come from this console; try again"
        else:
            problem = None
        if problem is not None:
            await self._audit_refusal(anonymous, "console_sign_in", problem, request.url.path)
            return self._login_page(request, None, problem, 403)
        if self.verify is None:
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        credential = (_field(form, "token") or "").strip()
        if not credential:
            return self._login_page(request, None, "token: required; paste an operator token (imt_…) or a JWT", 400)
        try:
            principal = await self.verify(credential)
        except CredentialError as exc:
            return self._login_page(request, None, exc.message, 401)
        if READ not in principal.scopes:
            return self._login_page(
                request, None, f"{principal.name} lacks {READ}; the console needs a token with read", 403
            )
        cookie, _ = self.codec.seal(credential, self.monitor.clock())
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self._secure(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
        return response

    async def logout(self, request: Request) -> Response:
        await self.posting(request, "console_sign_out")
        response = RedirectResponse(f"{PREFIX}/login?reason=signed_out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    # --- incidents --------------------------------------------------------------------------

    def _list_arguments(
        self, request: Request
    ) -> tuple[console_queries.IncidentFilters, console_queries.IncidentSort, int]:
        params = request.query_params
        try:
            # Validated (and coerced to the enums) by the model: query strings are untrusted.
            filters = console_queries.IncidentFilters.model_validate(
                {
                    "status": params.get("status") or "active",
                    "severity": params.get("severity") or None,
                    "project_id": params.get("project") or None,
                    "source": params.get("source") or None,
                    "reported_by": params.get("agent") or None,
                    "text": params.get("q") or None,
                }
            )
        except ValidationError as exc:
            raise InvalidInput(_validation_message(exc)) from None
        sorts = [s.value for s in console_queries.IncidentSort]
        if (params.get("sort") or "severity") not in sorts:
            raise InvalidInput(f"sort: {params.get('sort', '')[:40]!r} is not a sort; use one of {', '.join(sorts)}")
        sort = console_queries.IncidentSort(params.get("sort") or "severity")
        try:
            offset = int(params.get("offset") or 0)
        except ValueError:
            raise InvalidInput("offset: not a number; use 0 or the offset of a page link") from None
        return filters, sort, offset

    async def _incident_list(self, request: Request, template: str) -> Response:
        visitor = await self.visitor(request)
        try:
            filters, sort, offset = self._list_arguments(request)
            view = await self._run(
                console_queries.list_incident_view,
                self.monitor,
                visitor.principal,
                filters,
                sort=sort,
                offset=offset,
            )
        except MonitorError as exc:
            return self._error_page(request, visitor, exc)
        query = {
            "status": filters.status.value,
            "severity": filters.severity.value if filters.severity else "",
            "project": filters.project_id or "",
            "source": filters.source or "",
            "agent": filters.reported_by or "",
            "q": filters.text or "",
            "sort": sort.value,
        }

        def url(**changes: Any) -> str:
            merged = {**query, **{k: "" if v is None else str(v) for k, v in changes.items()}}
            return f"{PREFIX}/?" + urlencode({k: v for k, v in merged.items() if v})

        return self._render(
            request,
            template,
            visitor,
            view=view,
            filters=query,
            sort=sort.value,
            sorts=[s.value for s in console_queries.IncidentSort],
            statuses=[s.value for s in console_queries.StatusFilter],
            url=url,
            live_url=f"{PREFIX}/incidents/live?" + urlencode({**query, "offset": offset}),
            done=DONE_MESSAGES.get(request.query_params.get("done", "")),
        )

    async def incidents(self, request: Request) -> Response:
        return await self._incident_list(request, "incidents.html")

    async def incidents_live(self, request: Request) -> Response:
        return await self._incident_list(request, "_incident_list.html")

    async def incident(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        visitor = await self.visitor(request)
        incident_id = request.path_params["incident_id"]
        try:
            view = await self._run(
                console_queries.get_incident_view,
                self.monitor,
                visitor.principal,
                incident_id,
                run_id=request.query_params.get("run") or None,
            )
        except MonitorError as exc:
            return self._error_page(request, visitor, exc)
        routes: dict[str, Any] = {}
        if visitor.can(ROUTE_PREVIEW):
            for draft in view.drafts:
                try:
                    routes[draft.draft.draft_id] = await self._run(
                        preview_route, self.monitor, visitor.principal, draft_id=draft.draft.draft_id
                    )
                except MonitorError as exc:
                    routes[draft.draft.draft_id] = exc.message
        return self._render(
            request,
            "incident.html",
            visitor,
            status,
            view=view,
            routes=routes,
            resolvable=view.incident.status is not IncidentStatus.resolved,
            done=DONE_MESSAGES.get(request.query_params.get("done", "")),
            error=error,
        )

    async def resolve(self, request: Request) -> Response:
        visitor, form = await self.posting(request, "resolve_incident")
        incident_id = request.path_params["incident_id"]
        try:
            await self._run(
                resolve_incident, self.monitor, visitor.principal, incident_id, _field(form, "resolution_note") or ""
            )
        except MonitorError as exc:
            return await self.incident(request, error=exc.message, status=_status_for(exc))
        return RedirectResponse(f"{PREFIX}/incidents/{incident_id}?done=resolved", status_code=303)

    # --- approvals --------------------------------------------------------------------------

    async def _approval_list(
        self, request: Request, template: str, *, error: str | None = None, status: int = 200
    ) -> Response:
        visitor = await self.visitor(request)
        try:
            pending = await self._run(console_queries.list_pending_approvals, self.monitor, visitor.principal)
        except MonitorError as exc:
            return self._error_page(request, visitor, exc)
        return self._render(
            request,
            template,
            visitor,
            status,
            pending=pending,
            now=self.monitor.clock(),
            done=DONE_MESSAGES.get(request.query_params.get("done", "")),
            error=error,
        )

    async def approvals(self, request: Request) -> Response:
        return await self._approval_list(request, "approvals.html")

    async def approvals_live(self, request: Request) -> Response:
        return await self._approval_list(request, "_approval_list.html")

    async def decide(self, request: Request) -> Response:
        visitor, form = await self.posting(request, "decide_approval")
        approval_id = request.path_params["approval_id"]
        decision = _field(form, "decision") or ""
        try:
            verdict: Literal["approve", "deny"]
            if decision == "approve":
                verdict = "approve"
            elif decision == "deny":
                verdict = "deny"
            else:
                raise InvalidInput("decision: not allowed; use approve or deny")
            result = await self._run(
                decide_approval,
                self.monitor,
                visitor.principal,
                approval_id,
                verdict,
                _field(form, "note") or "",
            )
        except MonitorError as exc:
            return await self._approval_list(request, "approvals.html", error=exc.message, status=_status_for(exc))
        done = {"approved": "approved", "denied": "denied"}.get(result.approval.status.value, "superseded")
        return RedirectResponse(f"{PREFIX}/approvals?done={done}", status_code=303)

    # --- manual escalation ------------------------------------------------------------------

    async def escalate_form(self, request: Request) -> Response:
        visitor = await self.visitor(request)
        return self._render(request, "escalate.html", visitor, values={}, error=None)

    async def escalate(self, request: Request) -> Response:
        visitor, form = await self.posting(request, "report_incident")
        values = {name: (_field(form, name) or "").strip() for name in ("title", "detail", "level", "project_id")}
        values["run_id"] = (_field(form, "run_id") or "").strip()
        try:
            try:
                report = IncidentReport(
                    title=values["title"],
                    detail=values["detail"],
                    level=values["level"] or "error",
                    source=MANUAL_SOURCE,
                    event=MANUAL_EVENT,
                    project_id=values["project_id"] or None,
                    run_id=values["run_id"] or None,
                    route_tags=["manual-escalation"],
                )
            except ValidationError as exc:
                raise InvalidInput(_validation_message(exc)) from None
            result = await self._run(report_incident, self.monitor, visitor.principal, report)
        except MonitorError as exc:
            return self._render(request, "escalate.html", visitor, _status_for(exc), values=values, error=exc.message)
        return RedirectResponse(f"{PREFIX}/incidents/{result.incident_id}?done=escalated", status_code=303)

    # --- governance -------------------------------------------------------------------------

    async def governance(self, request: Request) -> Response:
        visitor = await self.visitor(request)
        inventory = posture = None
        try:
            if visitor.can(GOVERNANCE):
                tools = tool_catalog()
                inventory = await self._run(get_authority_inventory, self.monitor, visitor.principal, tools)
                posture = await self._run(run_posture_checks, self.monitor, visitor.principal, tools)
            receipts = await self._run(queries.list_receipts, self.monitor, visitor.principal, limit=50)
        except MonitorError as exc:
            return self._error_page(request, visitor, exc)
        return self._render(
            request, "governance.html", visitor, inventory=inventory, posture=posture, receipts=receipts
        )


class _Router:
    """The console's routes, turning a refusal (redirect to sign-in, 403, 421) into its response."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = Router(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.router(scope, receive, send)
        except Refused as refused:
            await refused.response(scope, receive, send)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _validation_message(exc: ValidationError) -> str:
    """Each bad field named with what is wrong (never the value: it may be a pasted secret)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())


def console_verifier(authenticator: BearerAuthenticator | None) -> Verify | None:
    """The HTTP app's credential check (server/auth.py) as the console calls it: the one place it is called."""
    if authenticator is None:
        return None

    async def verify(credential: str) -> Principal:
        return principal_of(await authenticator.authenticate(credential))

    return verify


def console_routes(monitor: Monitor, verify: Verify | None, public_url: str | None) -> list[BaseRoute]:
    """The console's routes for the HTTP app (``/console/…``)."""
    return Console(monitor, verify, public_url).routes()
