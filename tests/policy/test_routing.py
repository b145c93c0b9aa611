"""decide_route and approval_requirement: DESIGN.md "Routing" and "When approval is required"."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from incident_monitor.config import ApprovalSettings, DestinationSettings, MonitorConfig
from incident_monitor.destinations.settings import TelemetryConfig, WebhookConfig
from incident_monitor.domain.enums import ApprovalPolicy, Severity
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.readiness import Readiness
from incident_monitor.policy.route_decision import RouteDecision, RouteSubject, approval_requirement, decide_route
from incident_monitor.service import intake, queries
from incident_monitor.service.intake import severity_for
from incident_monitor.service.route_preview import decide_for_draft, preview_route
from support.monitors import AGENT, MonitorFactory, flow_config

WEBHOOK = {"id": "hook", "kind": "webhook", "url": "https://hooks.example.com/x", "secret": "env:HOOK_SECRET"}
ARCHIVE = {"id": "archive", "kind": "telemetry", "path": "archive.jsonl"}
TELEMETRY = {"id": "telemetry", "kind": "telemetry"}
HIGH_RISK = {Severity.high, Severity.critical}


def all_ready(_: str) -> Readiness:
    return Readiness(ready=True)


def config(
    routes: list[dict[str, Any]],
    *,
    default: str | None = "telemetry",
    destinations: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> MonitorConfig:
    raw: dict[str, Any] = {
        "destinations": destinations or [WEBHOOK, ARCHIVE, TELEMETRY],
        "routes": routes,
        "default_destination": {"destination_id": default} if default else None,
        **extra,
    }
    return MonitorConfig.model_validate(raw)


def route(route_id: str, destination_id: str = "hook", priority: int = 0, **match: list[str]) -> dict[str, Any]:
    return {"id": route_id, "destination_id": destination_id, "priority": priority, "match": match}


def decide(cfg: MonitorConfig, readiness: Callable[[str], Readiness] = all_ready, **subject: Any) -> RouteDecision:
    subject.setdefault("severity", Severity.medium)
    return decide_route(cfg, RouteSubject(**subject), readiness)


# --- which route ---------------------------------------------------------------------------------


def test_highest_priority_wins_whatever_the_config_order() -> None:
    cfg = config(
        [
            route("low", "archive", priority=1, route_tags=["db"]),
            route("high", "hook", priority=50, route_tags=["db"]),
            route("mid", "archive", priority=10, route_tags=["db"]),
        ]
    )

    decision = decide(cfg, route_tags=("db",))

    assert decision.route_id == "high"
    assert decision.destination_id == "hook"
    assert "route 'high' (priority 50)" in decision.match_reason


def test_equal_priorities_are_settled_by_config_order() -> None:
    cfg = config([route("first", "archive", priority=5, sources=["ci"]), route("second", "hook", priority=5)])

    assert decide(cfg, source="ci").route_id == "first"
    # The first does not match this subject, so the second (a catch-all) does.
    decision = decide(cfg, source="cron")
    assert decision.route_id == "second"
    assert "catch-all route" in decision.match_reason


@pytest.mark.parametrize(
    ("subject_tags", "matches"),
    [
        (("db",), True),
        (("other", "cache"), True),
        (("db", "cache", "x"), True),
        (("other",), False),
        ((), False),
    ],
)
def test_route_tags_match_on_any_overlap(subject_tags: tuple[str, ...], matches: bool) -> None:
    cfg = config([route("tags", route_tags=["db", "cache"])])

    decision = decide(cfg, route_tags=subject_tags)

    assert (decision.route_id == "tags") is matches
    if matches:
        assert "route_tags overlap" in decision.match_reason


ALL_CRITERIA: dict[str, Any] = {
    "route_tags": ["runtime-failure"],
    "risk_categories": ["tool_policy"],
    "severities": ["high"],
    "sources": ["ci"],
    "projects": ["shop"],
    "events": ["ci.smoke.failed"],
}
MATCHING_SUBJECT: dict[str, Any] = {
    "route_tags": ("runtime-failure",),
    "risk_category": "tool_policy",
    "severity": Severity.high,
    "source": "ci",
    "project_id": "shop",
    "event": "ci.smoke.failed",
}


def test_a_subject_matching_every_criterion_takes_the_route() -> None:
    decision = decide(config([route("strict", **ALL_CRITERIA)]), **MATCHING_SUBJECT)

    assert decision.route_id == "strict"
    for phrase in ("route_tags overlap", "risk_category", "severity", "source", "project", "event"):
        assert phrase in decision.match_reason


@pytest.mark.parametrize(
    ("field", "other_value"),
    [
        ("route_tags", ("other",)),
        ("risk_category", "data_exposure"),
        ("severity", Severity.low),
        ("source", "cron"),
        ("project_id", "billing"),
        ("event", "ci.smoke.passed"),
        ("risk_category", None),
        ("project_id", None),
    ],
)
def test_every_criterion_must_match(field: str, other_value: Any) -> None:
    decision = decide(config([route("strict", **ALL_CRITERIA)]), **{**MATCHING_SUBJECT, field: other_value})

    assert decision.route_id is None
    assert decision.destination_id == "telemetry"


def test_no_match_falls_back_to_the_default_destination() -> None:
    decision = decide(config([route("db", route_tags=["db"])], default="archive"), route_tags=("ui",))

    assert decision.route_id is None
    assert decision.destination_id == "archive"
    assert decision.destination_kind == "telemetry"
    assert decision.match_reason == "no route matched: default destination policy"
    assert decision.blocked is False


def test_no_match_and_no_default_is_blocked_never_published_somewhere() -> None:
    decision = decide(config([route("db", route_tags=["db"])], default=None), route_tags=("ui",))

    assert decision.blocked is True
    assert decision.destination_id is None
    assert decision.destination_kind is None
    assert "no default destination" in decision.match_reason
    assert decision.blocked_reasons == ["no route matches and no default destination is configured"]
    assert decision.approval_required is True  # fail closed


def test_disabled_destination_blocks() -> None:
    destinations = [{**WEBHOOK, "enabled": False}, TELEMETRY]
    cfg = config([route("db", route_tags=["db"])], destinations=destinations)

    decision = decide(cfg, route_tags=("db",))

    assert decision.destination_id == "hook"
    assert decision.blocked is True
    assert decision.blocked_reasons == ["destination 'hook' is disabled"]


def test_destination_not_ready_blocks_with_its_reasons() -> None:
    def readiness(destination_id: str) -> Readiness:
        if destination_id == "hook":
            return Readiness(ready=False, reasons=["environment variable HOOK_SECRET is not set", "url uses http"])
        return Readiness(ready=True)

    cfg = config([route("db", route_tags=["db"])])

    decision = decide(cfg, readiness, route_tags=("db",))

    assert decision.blocked is True
    assert decision.blocked_reasons == [
        "destination 'hook' not ready: environment variable HOOK_SECRET is not set",
        "destination 'hook' not ready: url uses http",
    ]
    # Readiness of other destinations does not leak into this decision.
    assert decide(cfg, readiness, route_tags=("ui",)).blocked is False


def test_source_not_in_allowed_sources_blocks() -> None:
    destinations = [{**WEBHOOK, "allowed_sources": ["ci", "deploy-bot"]}, TELEMETRY]
    cfg = config([route("db", route_tags=["db"])], destinations=destinations)

    refused = decide(cfg, route_tags=("db",), source="random-agent")
    missing = decide(cfg, route_tags=("db",), source=None)
    allowed = decide(cfg, route_tags=("db",), source="deploy-bot")

    assert refused.blocked is True
    assert refused.blocked_reasons == ["source 'random-agent' is not allowed to publish to 'hook'"]
    assert missing.blocked is True
    assert allowed.blocked is False


def test_decision_carries_the_policy_version() -> None:
    cfg = config([route("db", route_tags=["db"])])

    assert decide(cfg).policy_version == cfg.policy_version


# --- approval_requirement ------------------------------------------------------------------------


def destination(kind: str, require_approval: bool | None) -> DestinationSettings:
    if kind == "webhook":
        return WebhookConfig.model_validate({**WEBHOOK, "require_approval": require_approval})
    return TelemetryConfig.model_validate({**TELEMETRY, "require_approval": require_approval})


def expected_approval(
    policy: ApprovalPolicy, severity: Severity, kind: str, require_approval: bool | None, high_risk_flag: bool
) -> bool:
    """DESIGN.md, "When approval is required", written out independently of the code under test."""
    high_risk = severity in HIGH_RISK
    if policy is ApprovalPolicy.always:
        return True
    if policy is ApprovalPolicy.never:
        return False
    if policy is ApprovalPolicy.high_risk:
        return high_risk
    destination_requires = require_approval if require_approval is not None else kind == "webhook"
    return destination_requires or (high_risk and high_risk_flag)


APPROVAL_TABLE = list(
    itertools.product(
        list(ApprovalPolicy),
        list(Severity),
        ["webhook", "telemetry"],
        [None, True, False],  # the destination's require_approval: default, explicit on, explicit off
        [True, False],  # approval.require_approval_for_high_risk
    )
)


@pytest.mark.parametrize(("policy", "severity", "kind", "require_approval", "high_risk_flag"), APPROVAL_TABLE)
def test_approval_requirement_table(
    policy: ApprovalPolicy, severity: Severity, kind: str, require_approval: bool | None, high_risk_flag: bool
) -> None:
    settings = ApprovalSettings(require_approval_for_high_risk=high_risk_flag)

    required, reasons = approval_requirement(policy, destination(kind, require_approval), severity, settings)

    assert required is expected_approval(policy, severity, kind, require_approval, high_risk_flag)
    assert reasons, "every answer says why"


def test_approval_defaults_external_kinds_on_and_telemetry_off() -> None:
    settings = ApprovalSettings()

    webhook_required, webhook_reasons = approval_requirement(
        ApprovalPolicy.inherit, destination("webhook", None), Severity.low, settings
    )
    telemetry_required, telemetry_reasons = approval_requirement(
        ApprovalPolicy.inherit, destination("telemetry", None), Severity.low, settings
    )

    assert webhook_required is True
    assert webhook_reasons == ["destination 'hook' (webhook) requires approval"]
    assert telemetry_required is False
    assert telemetry_reasons == ["destination 'telemetry' does not require approval"]


def test_explicit_require_approval_false_on_a_webhook_is_honoured_but_high_risk_still_counts() -> None:
    hook = destination("webhook", False)

    assert approval_requirement(ApprovalPolicy.inherit, hook, Severity.medium, ApprovalSettings())[0] is False
    required, reasons = approval_requirement(ApprovalPolicy.inherit, hook, Severity.critical, ApprovalSettings())
    assert required is True
    assert reasons == ["severity critical requires approval (require_approval_for_high_risk)"]


def test_no_destination_requires_approval_whatever_the_policy() -> None:
    for policy in ApprovalPolicy:
        required, reasons = approval_requirement(policy, None, Severity.low, ApprovalSettings())
        assert required is True
        assert "fail closed" in reasons[0]


@pytest.mark.parametrize("policy", list(ApprovalPolicy))
def test_decide_route_applies_the_routes_approval_policy(policy: ApprovalPolicy) -> None:
    cfg = config([{**route("db", "archive", route_tags=["db"]), "approval_policy": policy.value}])

    for severity in Severity:
        decision = decide(cfg, route_tags=("db",), severity=severity)
        assert decision.approval_required is expected_approval(policy, severity, "telemetry", None, True)


def test_default_destination_policy_applies_when_no_route_matches() -> None:
    cfg = config([], default=None)
    raw = cfg.model_dump(mode="json")
    raw["default_destination"] = {"destination_id": "telemetry", "approval_policy": "always"}

    decision = decide(MonitorConfig.model_validate(raw), severity=Severity.low)

    assert decision.approval_required is True
    assert decision.approval_reasons == ["route approval_policy is 'always'"]


# --- untrusted report fields only add requirements ------------------------------------------------

LEVELS = ["critical", "error", "warning", "info"]


def raised_subject_needs_no_less(cfg: MonitorConfig, level: str, **subject: Any) -> None:
    without = decide(cfg, severity=severity_for(level, None), **subject)
    with_risk = decide(
        cfg, severity=severity_for(level, Severity.critical), baseline_severity=severity_for(level, None), **subject
    )
    assert with_risk.approval_required >= without.approval_required, (level, subject)
    assert with_risk.blocked >= without.blocked, (level, subject)


@pytest.mark.parametrize(
    ("policy", "kind", "high_risk_flag"),
    list(itertools.product(list(ApprovalPolicy), ["hook", "archive"], [True, False])),
)
def test_risk_level_critical_never_lowers_the_approval_requirement(
    policy: ApprovalPolicy, kind: str, high_risk_flag: bool
) -> None:
    routes = [{**route("tagged", kind, route_tags=["db"]), "approval_policy": policy.value}]
    cfg = config(routes, approval={"require_approval_for_high_risk": high_risk_flag})
    default_raw = cfg.model_dump(mode="json")
    default_raw["routes"] = []
    default_raw["default_destination"] = {"destination_id": kind, "approval_policy": policy.value}
    default_cfg = MonitorConfig.model_validate(default_raw)

    for level in LEVELS:
        raised_subject_needs_no_less(cfg, level, route_tags=("db",))
        raised_subject_needs_no_less(default_cfg, level)


def test_risk_level_cannot_select_a_route_that_drops_approval() -> None:
    # The operator waives review for critical pages; an untrusted report claiming risk_level=critical
    # must not use that to skip the approval its own level (error → high) would need.
    cfg = config([{**route("pages", "hook", severities=["critical"]), "approval_policy": "never"}], default="hook")

    raised_subject_needs_no_less(cfg, "error")


@pytest.mark.anyio
async def test_preview_risk_level_never_lowers_approval_over_the_service(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(flow_config())

    for level, tags in itertools.product(LEVELS, [["runtime-failure"], []]):
        base = preview_route(monitor, AGENT, level=level, route_tags=tags)
        raised = preview_route(monitor, AGENT, level=level, route_tags=tags, risk_level=Severity.critical)
        assert raised.approval_required >= base.approval_required
        # Telemetry default: only the high-risk rule can require approval, so critical must.
        assert raised.approval_required is True


# --- preview and publish share one decision -------------------------------------------------------

DRAFT_REPORTS = [
    {"title": "Checkout smoke failed", "event": "ci.smoke.failed", "route_tags": ["runtime-failure"]},
    {"title": "Agent called a denied tool", "event": "agent.tool.denied", "risk_category": "tool_policy"},
    {"title": "Nightly export slow", "event": "export.slow", "level": "warning"},
    {"title": "Disk almost full", "event": "host.disk", "level": "info", "risk_level": "critical"},
    {"title": "Both routes match", "event": "x.y", "route_tags": ["runtime-failure"], "risk_category": "tool_policy"},
]


def test_preview_with_a_draft_id_equals_the_publish_decision(make_monitor: MonitorFactory, webhook_secret: str) -> None:
    monitor = make_monitor(flow_config())
    draft_ids: list[str] = []
    for fields in DRAFT_REPORTS:
        result = intake.report_incident(monitor, AGENT, IncidentReport(source="ci", **fields))
        assert result.draft_id is not None
        draft_ids.append(result.draft_id)

    seen_routes: set[str | None] = set()
    for draft_id in draft_ids:
        previewed = preview_route(monitor, AGENT, draft_id=draft_id)
        with monitor.session() as session:
            published = decide_for_draft(monitor, queries.get_draft_row(session, draft_id))
        assert previewed == published
        seen_routes.add(previewed.route_id)

    # The drafts exercise every route and the default policy, not one path five times.
    assert seen_routes == {"runtime-failures", "safety-signals", None}


def test_preview_of_a_blocked_destination_matches_publish(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No webhook secret in the environment: the webhook is not ready, so both must say blocked.
    monkeypatch.delenv("INCIDENT_MONITOR_WEBHOOK_SECRET", raising=False)
    monitor = make_monitor(flow_config())
    report = IncidentReport(
        title="Checkout smoke failed", source="ci", event="ci.smoke.failed", route_tags=["runtime-failure"]
    )
    result = intake.report_incident(monitor, AGENT, report)
    assert result.draft_id is not None

    previewed = preview_route(monitor, AGENT, draft_id=result.draft_id)
    with monitor.session() as session:
        published = decide_for_draft(monitor, queries.get_draft_row(session, result.draft_id))

    assert previewed == published
    assert previewed.blocked is True
    assert any("INCIDENT_MONITOR_WEBHOOK_SECRET" in r for r in previewed.blocked_reasons)
