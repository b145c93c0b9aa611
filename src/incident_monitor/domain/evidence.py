"""What a draft would publish: the evidence, its canonical digest, and its rendered body.

The digest covers the published evidence only — no volatile ids (triage run ids, occurrence
counts, timestamps) — so a retry of the same evidence is recognised as the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from incident_monitor.domain.canonical import canonical_json
from incident_monitor.domain.enums import Severity
from incident_monitor.domain.models import IncidentBase


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def evidence_digest(evidence: dict[str, Any]) -> str:
    return "sha256:" + sha256_hex(evidence)


def incident_evidence(incident: IncidentBase | Mapping[str, Any]) -> dict[str, Any]:
    """From a stored incident, or from the column values of one (intake inserts with Core statements)."""

    def field(name: str) -> Any:
        return incident[name] if isinstance(incident, Mapping) else getattr(incident, name)

    risk_level = field("risk_level")
    return {
        "title": field("title"),
        "detail": field("detail"),
        "source": field("source"),
        "event": field("event"),
        "level": field("level"),
        "severity": Severity(field("severity")).value,
        "risk_category": field("risk_category"),
        "risk_level": Severity(risk_level).value if risk_level else None,
        "project_id": field("project_id"),
        "route_tags": sorted(field("route_tags")),
        "evidence_refs": list(field("evidence_refs")),
        "context": field("context"),
        "fingerprint": field("fingerprint"),
    }


def build_evidence(incident: IncidentBase | Mapping[str, Any], triage: dict[str, Any] | None = None) -> dict[str, Any]:
    evidence: dict[str, Any] = {"incident": incident_evidence(incident)}
    if triage is not None:
        evidence["triage"] = triage
    return evidence


def draft_severity(evidence: dict[str, Any]) -> Severity:
    """Triage can raise the severity a report came with, never lower it."""
    reported = Severity(evidence["incident"]["severity"])
    suggested = evidence.get("triage", {}).get("suggested_severity")
    return Severity.highest(reported, Severity(suggested) if suggested else None)


def draft_route_tags(evidence: dict[str, Any]) -> list[str]:
    tags = set(evidence["incident"]["route_tags"]) | set(evidence.get("triage", {}).get("suggested_route_tags", []))
    return sorted(tags)


def render_body(evidence: dict[str, Any], digest: str) -> str:
    """Markdown body for issue-like destinations."""
    inc = evidence["incident"]
    lines = [
        f"**Severity:** {draft_severity(evidence).value}  ",
        f"**Source:** `{inc['source']}` · **Event:** `{inc['event']}` · **Level:** `{inc['level']}`",
    ]
    if inc.get("project_id"):
        lines.append(f"**Project:** `{inc['project_id']}`")
    if inc.get("risk_category") or inc.get("risk_level"):
        lines.append(
            f"**Risk:** {inc.get('risk_category') or 'unspecified'} / {inc.get('risk_level') or 'unspecified'}"
        )
    lines += ["", "## Detail", "", inc["detail"] or "_(no detail)_"]
    if inc["evidence_refs"]:
        lines += ["", "## Evidence", ""] + [f"- {ref}" for ref in inc["evidence_refs"]]
    triage = evidence.get("triage")
    if triage:
        lines += ["", "## Triage", "", triage["summary"]]
        lines += [f"- {finding}" for finding in triage.get("findings", [])]
    lines += ["", "---", f"fingerprint `{inc['fingerprint']}` · evidence `{digest}`"]
    return "\n".join(lines)
