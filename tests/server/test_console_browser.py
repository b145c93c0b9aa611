"""The incident console in a real browser: Playwright driving Debian's chromium-headless-shell.

The server is the real HTTP app on a socket (uvicorn in a thread, 127.0.0.1); every action is done
by clicking and typing, and every check reads the rendered page. Screenshots of each page are
written to build/console-screenshots/ (a test artifact, not committed).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import APIResponse, Browser, BrowserContext, Locator, Page, Playwright, expect, sync_playwright
from sqlmodel import col, select

from incident_monitor.domain.enums import ApprovalStatus, DraftStatus, IncidentStatus
from incident_monitor.domain.models import ApprovalRequest, AuditEvent, Draft, Incident
from incident_monitor.service.incidents import resolve_incident
from incident_monitor.service.triage import triage_draft
from support.console_helpers import Served, serve
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, principal
from support.paths import ROOT

SCREENSHOTS = ROOT / "build" / "console-screenshots"
CHROMIUM_NAMES = ("chromium-headless-shell", "chromium")


def chromium_path() -> str:
    """Debian's headless Chromium; `make test` installs it. Missing is a failure, not a skip."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium-headless-shell is not installed: run `make test` (it installs the Debian package)")


@pytest.fixture
def served(make_monitor: MonitorFactory, clock: FakeClock, webhook_secret: str) -> Iterator[Served]:
    with serve(make_monitor, clock) as started:
        yield started


# Module scope, not session: sync Playwright keeps an event loop running in this thread while it is
# open, and every async test after this module would then fail to start its own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path())
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    # A dialog (alert, confirm, prompt) would mean injected script ran: record it, then dismiss it.
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, served: Served, token: str | None = None) -> None:
    page.goto(f"{served.base}/console/login")
    page.fill("#token", token or served.operator_token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{served.base}/console/")


def listed_titles(page: Page) -> list[str]:
    return [t.strip() for t in page.locator("tr.incident td.title a").all_inner_texts()]


def test_sign_in_shows_the_principal_and_signs_out(page: Page, context: BrowserContext, served: Served) -> None:
    page.goto(f"{served.base}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?reason=required$"))
    shot(page, "login")

    page.fill("#token", "imt_not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("token not recognised")
    assert "imt_not-a-real-token" not in page.content()

    sign_in(page, served)
    expect(page.locator("#principal")).to_have_text("ops")
    assert served.operator_token not in page.content()
    cookie = next(c for c in context.cookies() if c["name"] == "im_console")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http on loopback; https or an https public_url sets it
    assert cookie["expires"] > 0  # a session cookie with an expiry, not one that lives forever
    assert served.operator_token not in cookie["value"]
    for path in ("approvals", "governance", "escalate"):
        page.click(f"header nav a[href='/console/{path}']")
        expect(page.locator("#principal")).to_have_text("ops")

    page.click("header button:has-text('Sign out')")
    expect(page).to_have_url(re.compile(r"/console/login\?reason=signed_out$"))
    expect(page.locator(".done")).to_contain_text("signed out")
    page.goto(f"{served.base}/console/approvals")
    expect(page).to_have_url(re.compile(r"/console/login"))


def test_revoking_the_token_ends_the_session(page: Page, served: Served) -> None:
    from incident_monitor.service.tokens import revoke_token

    sign_in(page, served)
    revoke_token(served.monitor, OPERATOR, "ops")
    page.goto(f"{served.base}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?reason=ended$"))
    expect(page.locator(".done")).to_contain_text("Your session ended")


def seed_for_sorting(served: Served) -> dict[str, str]:
    """Five incidents of every severity, project, source and reporter; one resolved."""
    ids = {}
    kinds = [
        ("Disk almost full", {"level": "warning", "project_id": "infra", "source": "node-agent"}),
        ("Payment API down", {"level": "critical", "project_id": "shop", "source": "prober"}),
        ("Nightly test flaked", {"level": "info", "project_id": "shop", "source": "ci"}),
        ("Deploy failed", {"level": "error", "project_id": "infra", "source": "ci"}),
        ("Checkout errors spiking", {"level": "critical", "project_id": "shop", "source": "prober"}),
    ]
    for title, fields in kinds:
        served.clock.advance(minutes=1)
        ids[title] = served.report(title, **fields).incident_id
    served.clock.advance(minutes=1)
    helper = principal("helper-bot", "report")
    ids["Queue backlog"] = served.report("Queue backlog", by=helper, level="error", source="worker").incident_id
    served.clock.advance(minutes=1)
    served.report("Deploy failed", level="error", project_id="infra", source="ci")  # a second occurrence
    served.clock.advance(minutes=1)
    ids["Old certificate"] = served.report("Old certificate", level="critical", source="prober").incident_id
    resolve_incident(served.monitor, OPERATOR, ids["Old certificate"], "renewed")
    return ids


def test_incidents_sorted_worst_first_with_counts_filters_and_sorts(page: Page, served: Served) -> None:
    seed_for_sorting(served)
    sign_in(page, served)
    # Severity, then last seen: critical newest first, then high (the re-reported Deploy failed is newer).
    assert listed_titles(page) == [
        "Checkout errors spiking",
        "Payment API down",
        "Deploy failed",
        "Queue backlog",
        "Disk almost full",
        "Nightly test flaked",
    ]
    counts = {
        s: page.locator(f"#severity-counts a[data-severity={s}] b").inner_text()
        for s in ("critical", "high", "medium", "low")
    }
    assert counts == {"critical": "2", "high": "2", "medium": "1", "low": "1"}
    shot(page, "incidents")

    def apply(**fields: str) -> Locator:
        """Set the filter form's fields and submit it; the titles listed then (assert with expect: it waits)."""
        page.goto(f"{served.base}/console/")
        for name, value in fields.items():
            selector = f"#filter-{name}"
            if page.locator(selector).evaluate("e => e.tagName") == "SELECT":
                page.select_option(selector, value)
            else:
                page.fill(selector, value)
        page.click("#filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"/console/\?"))
        return page.locator("tr.incident td.title a")

    expect(apply(severity="critical")).to_have_text(["Checkout errors spiking", "Payment API down"])
    expect(apply(status="resolved")).to_have_text(["Old certificate"])
    everything_critical = ["Old certificate", "Checkout errors spiking", "Payment API down"]
    expect(apply(status="all", severity="critical")).to_have_text(everything_critical)
    expect(apply(project="infra")).to_have_text(["Deploy failed", "Disk almost full"])
    expect(apply(source="prober")).to_have_text(["Checkout errors spiking", "Payment API down"])
    expect(apply(agent="helper-bot")).to_have_text(["Queue backlog"])
    expect(apply(q="PAYMENT")).to_have_text(["Payment API down"])
    expect(apply(q="no such title")).to_have_count(0)
    expect(page.locator("#no-incidents")).to_be_visible()
    by_time = [
        "Disk almost full",
        "Payment API down",
        "Nightly test flaked",
        "Checkout errors spiking",
        "Queue backlog",
        "Deploy failed",
    ]
    expect(apply(sort="recent")).to_have_text(list(reversed(by_time)))
    expect(apply(sort="oldest")).to_have_text(by_time)
    expect(apply(sort="occurrences").first).to_have_text("Deploy failed")

    # Counts follow every filter but severity; a count links to that severity.
    apply(project="shop")
    page.click("#severity-counts a[data-severity=critical]")
    expect(page.locator("tr.incident")).to_have_count(2)
    # Sorting by a column header keeps the filters.
    page.click("th a:has-text('Last seen')")
    expect(page).to_have_url(re.compile(r"sort=recent"))
    expect(page.locator("tr.incident td.title a")).to_have_text(["Checkout errors spiking", "Payment API down"])
    assert "project=shop" in page.url and "severity=critical" in page.url


def test_paging(page: Page, served: Served) -> None:
    for i in range(53):
        served.clock.advance(seconds=1)
        served.report(f"Batch job {i:02d} failed", fingerprint=f"batch-{i}")
    sign_in(page, served)
    expect(page.locator("tr.incident")).to_have_count(50)
    assert listed_titles(page)[0] == "Batch job 52 failed"
    page.click("a[rel=next]")
    expect(page.locator("tr.incident")).to_have_count(3)
    assert listed_titles(page) == ["Batch job 02 failed", "Batch job 01 failed", "Batch job 00 failed"]
    page.click("a[rel=prev]")
    expect(page.locator("tr.incident")).to_have_count(50)


def test_detail_shows_everything_with_the_run_timeline(page: Page, served: Served) -> None:
    result = served.report(
        "Agent tool call blocked", run_id="run-42", session_id="sess-7", route_tags=["runtime-failure"], level="error"
    )
    assert result.draft_id
    triage_draft(served.monitor, AGENT, result.draft_id)
    from incident_monitor.service.approvals import request_approval

    request_approval(served.monitor, AGENT, result.draft_id, "needs a human")
    sign_in(page, served)
    page.click("text=Agent tool call blocked")
    expect(page.locator("#incident-title")).to_contain_text("Agent tool call blocked")
    expect(page.locator("#incident-agent")).to_have_text("local-agent")
    expect(page.locator("#trigger")).to_contain_text("ci.smoke.failed")
    expect(page.locator(".draft")).to_contain_text(result.draft_id)
    expect(page.locator(".draft")).to_contain_text("sha256:")
    expect(page.locator(".draft .route")).to_contain_text("ops-webhook")
    expect(page.locator(".draft")).to_contain_text("pending")
    expect(page.locator("#timeline h2")).to_contain_text("run-42")
    actions = [
        a.strip() for a in page.locator("#timeline-events li.event b").all_inner_texts()
    ]  # every audited event of the run, oldest first
    assert actions[:3] == ["report_incident", "triage_draft", "request_approval"]
    expect(page.locator("#history")).to_contain_text("request_approval")
    expect(page.locator("#occurrences")).to_contain_text("sess-7")
    shot(page, "incident-detail")


def test_approve_and_deny_with_a_note(page: Page, served: Served) -> None:
    first, first_id = served.pending_approval("Webhook timeouts")
    served.clock.advance(minutes=1)
    _, second_id = served.pending_approval("Database failover")
    sign_in(page, served)
    page.click("header nav a:has-text('Approvals')")
    expect(page.locator("article.approval")).to_have_count(2)
    # Oldest first.
    ids = page.locator("article.approval").evaluate_all("els => els.map(e => e.dataset.approvalId)")
    assert ids == [first_id, second_id]
    card = page.locator(f"#approval-{first_id}")
    expect(card).to_contain_text("ops-webhook")
    expect(card).to_contain_text("local-agent")
    expect(card).to_contain_text("Why approval is required")
    shot(page, "approvals")

    # A blank note is refused with the service's own message.
    card.locator("textarea").fill("   ")
    card.locator("button.approve").click()
    expect(page.locator(".error")).to_contain_text("note: required; say why in a sentence")

    page.locator(f"#approval-{first_id} textarea").fill("checked the payload")
    page.locator(f"#approval-{first_id} button.approve").click()
    expect(page.locator(".done")).to_contain_text("Approved")
    expect(page.locator(f"#approval-{first_id}")).to_have_count(0)

    page.locator(f"#approval-{second_id} textarea").fill("not for external eyes")
    page.locator(f"#approval-{second_id} button.deny").click()
    expect(page.locator(".done")).to_contain_text("Denied")
    expect(page.locator("#no-approvals")).to_be_visible()

    with served.monitor.session() as session:
        approved = session.get(ApprovalRequest, first_id)
        denied = session.get(ApprovalRequest, second_id)
        assert approved is not None and denied is not None
        assert (approved.status, approved.decided_by, approved.decision_note) == (
            ApprovalStatus.approved,
            "ops",
            "checked the payload",
        )
        assert (denied.status, denied.decided_by) == (ApprovalStatus.denied, "ops")
        first_draft = session.get(Draft, first.draft_id)
        assert first_draft is not None and first_draft.status is DraftStatus.approved
        decisions = session.exec(
            select(AuditEvent).where(AuditEvent.action == "decide_approval", AuditEvent.principal == "ops")
        ).all()
        assert [e.decision.value for e in decisions] == ["rejected", "allow", "allow"]


def test_self_approval_and_stale_digest_are_refused_with_the_services_messages(page: Page, served: Served) -> None:
    ops_as_agent = principal("ops", "report", "approval_request")
    _, own_id = served.pending_approval("My own request", by=ops_as_agent)
    stale, stale_id = served.pending_approval("Evidence changed later")
    sign_in(page, served)
    page.goto(f"{served.base}/console/approvals")

    page.locator(f"#approval-{own_id} textarea").fill("looks fine")
    page.locator(f"#approval-{own_id} button.approve").click()
    expect(page.locator(".error")).to_contain_text(
        f"self-approval refused: ops requested approval {own_id}; a different principal with "
        "incident_monitor:approve must decide"
    )

    # The draft's evidence changes after the request (as a re-triage would): the approval no longer binds.
    with served.monitor.session() as session:
        draft = session.get(Draft, stale.draft_id)
        assert draft is not None
        draft.evidence_digest = "sha256:" + "0" * 64
        session.add(draft)
    page.locator(f"#approval-{stale_id} textarea").fill("ok")
    page.locator(f"#approval-{stale_id} button.approve").click()
    expect(page.locator(".done")).to_contain_text("superseded")
    with served.monitor.session() as session:
        row = session.get(ApprovalRequest, stale_id)
        assert row is not None and row.status is ApprovalStatus.superseded


def test_resolve_with_a_note_keeps_the_incident_under_a_filter(page: Page, served: Served) -> None:
    incident_id = served.report("Cache stampede").incident_id
    sign_in(page, served)
    page.click("text=Cache stampede")
    page.fill("#resolution_note", "raised the TTL and added jitter")
    page.click("#resolve-button")
    expect(page.locator(".done")).to_contain_text("Incident resolved")
    expect(page.locator("#incident-status")).to_have_text("resolved")
    expect(page.locator("#resolution-note")).to_have_text("raised the TTL and added jitter")
    expect(page.locator("#resolve")).to_have_count(0)
    page.goto(f"{served.base}/console/")
    assert "Cache stampede" not in listed_titles(page)
    page.goto(f"{served.base}/console/?status=resolved")
    assert listed_titles(page) == ["Cache stampede"]
    with served.monitor.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        assert (row.status, row.resolved_by) == (IncidentStatus.resolved, "ops")


def test_manual_escalation_goes_through_intake_as_the_operator(page: Page, served: Served) -> None:
    sign_in(page, served)
    page.click("header nav a:has-text('Escalate')")
    page.fill("#title", "Customer reports missing invoices")
    page.fill("#detail", "Seen by support.\nAuthorization: Bearer sk_live_abcdefghijklmnopqrstuvwx\nTicket 4411")
    page.select_option("#level", "critical")
    page.fill("#project_id", "billing")
    shot(page, "escalate")
    page.click("#escalate-button")
    expect(page.locator(".done")).to_contain_text("Escalation recorded")
    expect(page.locator("#incident-title")).to_contain_text("Customer reports missing invoices")
    expect(page.locator("#incident-title .badge")).to_have_text("critical")
    expect(page.locator("#incident-agent")).to_have_text("ops")
    detail = page.locator("#trigger pre.detail").inner_text()
    assert "sk_live_abcdefghijklmnopqrstuvwx" not in detail  # redacted by intake, as for any report
    assert "Ticket 4411" in detail
    expect(page.locator("#trigger")).to_contain_text("console.escalation")


def test_governance_page_shows_inventory_posture_and_receipts(page: Page, served: Served) -> None:
    sign_in(page, served)
    page.click("header nav a:has-text('Governance')")
    expect(page.locator("#inventory")).to_contain_text("ops-webhook")
    expect(page.locator("#inventory")).to_contain_text("viewer")
    expect(page.locator("#posture h2")).to_have_text("Posture findings")
    expect(page.locator("#receipts")).to_contain_text("No receipts")
    shot(page, "governance")


def test_viewer_sees_no_controls_and_a_forged_post_is_refused_and_audited(page: Page, served: Served) -> None:
    incident, approval_id = served.pending_approval("Needs a decision")
    sign_in(page, served, served.viewer_token)
    expect(page.locator("#principal")).to_have_text("viewer")
    expect(page.locator("header nav a:has-text('Escalate')")).to_have_count(0)
    page.goto(f"{served.base}/console/approvals")
    expect(page.locator(f"#approval-{approval_id}")).to_contain_text("Deciding needs incident_monitor:approve")
    expect(page.locator("button.approve")).to_have_count(0)
    page.goto(f"{served.base}/console/incidents/{incident.incident_id}")
    expect(page.locator("#resolve")).to_have_count(0)
    page.goto(f"{served.base}/console/governance")
    expect(page.locator("#governance-scope")).to_contain_text("incident_monitor:governance")
    shot(page, "viewer-approvals")

    # The viewer forges the approve POST from the page itself, with its own valid CSRF token:
    # the service refuses for the missing scope.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    status = page.evaluate(
        """async ([url, csrf]) => {
            const body = new URLSearchParams({csrf_token: csrf, decision: "approve", note: "sneaky"});
            const r = await fetch(url, {method: "POST", body});
            return r.status;
        }""",
        [f"/console/approvals/{approval_id}/decide", csrf],
    )
    assert status == 403
    # Without the CSRF token (a forged form) and from another origin: refused before any service call.
    forged = page.request.post(
        f"{served.base}/console/approvals/{approval_id}/decide", form={"decision": "approve", "note": "x"}
    )
    assert forged.status == 403
    assert "CSRF token is missing or wrong" in forged.text()

    def post_from(origin: str) -> APIResponse:
        return page.request.post(
            f"{served.base}/console/approvals/{approval_id}/decide",
            form={"decision": "approve", "note": "x", "csrf_token": csrf or ""},
            headers={"Origin": origin},
        )

    # Another site on this machine (another loopback port): past the app-wide Origin guard, refused here.
    cross_site = post_from("http://127.0.0.1:1")
    assert cross_site.status == 403
    assert "cross-site request refused" in cross_site.text()
    # A foreign site: refused by the app-wide guard before the console (server/host_origin.py).
    assert post_from("http://evil.example").status == 403

    with served.monitor.session() as session:
        row = session.get(ApprovalRequest, approval_id)
        assert row is not None and row.status is ApprovalStatus.pending
        denials = session.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "decide_approval", AuditEvent.principal == "viewer")
            .order_by(col(AuditEvent.seq))
        ).all()
        assert [e.decision.value for e in denials] == ["deny", "deny", "deny"]
        assert "incident_monitor:approve" in " ".join(denials[0].reasons)
        assert "CSRF" in denials[1].reasons[0]
        assert "cross-site" in denials[2].reasons[0]


XSS_TITLES = [
    '<img src=x onerror="window.__xss=1;alert(1)">',
    "</script><script>window.__xss=2;alert(2)</script>",
    '"><svg onload="window.__xss=3">',
    "{{7*7}} <b onmouseover=alert(4)>hover</b>",
]


def test_hostile_titles_run_nothing(page: Page, served: Served) -> None:
    ids = [
        served.report(title, fingerprint=f"xss-{i}", evidence_refs=["javascript:alert(5)"], run_id="<i>run</i>")
        for i, title in enumerate(XSS_TITLES)
    ]
    served.pending_approval('<img src=x onerror="window.__xss=6">')
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, served)
    pages = [
        f"{served.base}/console/",
        f"{served.base}/console/approvals",
        *(f"{served.base}/console/incidents/{r.incident_id}" for r in ids),
    ]
    for url in pages:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        page.locator("body").hover()
        assert page.evaluate("typeof window.__xss") == "undefined", url
        assert page.locator("img[src=x], svg, script:not([src])").count() == 0, url
        assert page.locator("a[href^='javascript']").count() == 0, url
    page.goto(f"{served.base}/console/")
    for title in XSS_TITLES:
        expect(page.locator("tr.incident td.title a", has_text=title)).to_have_count(1)
    page.goto(f"{served.base}/console/incidents/{ids[0].incident_id}")
    expect(page.locator("#incident-title")).to_contain_text(XSS_TITLES[0])
    shot(page, "xss-detail")
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert blocked == []  # escaped, not merely blocked by the CSP


def test_incident_list_and_approvals_refresh_without_a_reload(page: Page, served: Served) -> None:
    served.report("First failure")
    sign_in(page, served)
    page.evaluate("window.__stayed = true")
    served.clock.advance(minutes=1)
    served.report("Arrived while watching", level="critical")
    expect(page.locator("tr.incident td.title a", has_text="Arrived while watching")).to_be_visible(timeout=25_000)
    assert listed_titles(page)[0] == "Arrived while watching"
    assert page.evaluate("window.__stayed") is True  # the same document: polled, not reloaded

    _, waiting_id = served.pending_approval("Waiting in the queue")
    page.click("header nav a:has-text('Approvals')")
    page.evaluate("window.__stayed = true")
    page.locator(f"#approval-{waiting_id} textarea").fill("half-written note")
    served.clock.advance(minutes=1)
    _, approval_id = served.pending_approval("Arrived in the queue")
    expect(page.locator(f"#approval-{approval_id}")).to_be_visible(timeout=25_000)
    assert page.evaluate("window.__stayed") is True
    # The note being typed survived the refresh (hx-preserve).
    expect(page.locator(f"#approval-{waiting_id} textarea")).to_have_value("half-written note")
