"""The brief a coding agent receives (seed 002's ``prompt``): self-contained markdown, redacted, capped.

An agent with no other context must be able to act on it: the incident's title and reference, the repository,
the requester's instructions, what we expect of the pull request, and an investigation snapshot (detail,
evidence, the latest triage findings, occurrences, the last run's timeline). The whole text goes through
redaction once it is assembled, so a secret in any part never reaches the platform.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from incident_monitor.domain.models import Incident, TriageRun
from incident_monitor.policy.redaction import redact_text
from incident_monitor.service.queries import recent_occurrences, run_timeline

MAX_BRIEF_CHARS = 30_000
_TRUNCATED = "\n\n[snapshot truncated at 30,000 characters]\n"
_EXPECTATIONS = [
    "- Open a draft pull request on the repository above with a focused fix and a test that fails without it.",
    "- Explain in the PR description what you changed, why, and any choice you made where the brief was "
    "ambiguous (there is no way to ask the responder mid-run).",
    "- Report `finished` with the PR URL only once the PR exists; report `running` until then.",
]


def render_brief(session: Session, incident: Incident, repository: str, instructions: str) -> str:
    """The launch brief for ``incident``; at most MAX_BRIEF_CHARS characters, redacted."""
    parts = [
        f"# Code change for incident {incident.incident_id}: {incident.title}",
        "",
        f"- Reference: `{incident.incident_id}` (severity {incident.severity.value}, status {incident.status.value})",
        f"- Repository: `{repository}`",
        f"- Source / event: {incident.source} / {incident.event}",
        "",
        "## Instructions",
        "",
        instructions,
        "",
        "## What we expect of the pull request",
        "",
        *_EXPECTATIONS,
        "",
        "## Investigation snapshot",
        "",
        "### Incident detail",
        "",
        incident.detail or "(none)",
    ]
    if incident.evidence_refs:
        parts += ["", "### Evidence", ""] + [f"- {ref}" for ref in incident.evidence_refs[:50]]
    triage = session.exec(
        select(TriageRun)
        .where(TriageRun.incident_id == incident.incident_id)
        .order_by(col(TriageRun.created_at).desc())
        .limit(1)
    ).first()
    if triage is not None:
        parts += ["", "### Triage findings", "", triage.evidence_summary] + [f"- {f}" for f in triage.findings[:50]]
    occurrences = recent_occurrences(session, incident.incident_id)
    parts += ["", f"### Occurrences ({incident.occurrence_count} in all; latest first)", ""]
    parts += [f"- {o.seen_at.isoformat()} by {o.reported_by}" for o in occurrences[:20]]
    timeline = run_timeline(session, incident.last_run_id)
    if timeline:
        parts += ["", f"### Run timeline ({incident.last_run_id})", ""]
        parts += [f"- {e.at.isoformat()} {e.principal} {e.action}: {e.decision.value}" for e in timeline[-50:]]
    brief = redact_text("\n".join(parts) + "\n")
    if len(brief) > MAX_BRIEF_CHARS:
        brief = brief[: MAX_BRIEF_CHARS - len(_TRUNCATED)] + _TRUNCATED
    return brief
