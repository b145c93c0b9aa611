"""initial: the schema as it stood before migrations

Revision ID: 0001_initial
Revises: (none: the schema written by create_all before migrations existed)
Create Date: 2026-11-26 13:13:37.497059
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_api_tokens_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column(
            "decision",
            sa.Enum("allow", "deny", "approval_required", "rejected", "error", name="decision"),
            nullable=False,
        ),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("arguments_digest", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_principal"), ["principal"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "destination_deliveries",
        sa.Column("destination_id", sa.String(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("destination_id"),
    )
    op.create_table(
        "destination_states",
        sa.Column("destination_id", sa.String(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("destination_id"),
    )
    op.create_table(
        "incidents",
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("severity", sa.Enum("critical", "high", "medium", "low", name="severity"), nullable=False),
        sa.Column("status", sa.Enum("open", "triaged", "published", "resolved", name="incidentstatus"), nullable=False),
        sa.Column("risk_category", sa.String(), nullable=True),
        sa.Column("risk_level", sa.Enum("critical", "high", "medium", "low", name="severity"), nullable=True),
        sa.Column("project_id", sa.String(), nullable=True),
        sa.Column("route_tags", sa.JSON(), nullable=False),
        sa.Column("evidence_refs", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("occurrence_count", sa.Integer(), nullable=False),
        sa.Column("recurrence_count", sa.Integer(), nullable=False),
        sa.Column("reported_by", sa.String(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(), nullable=True),
        sa.Column("resolution_note", sa.String(), nullable=True),
        sa.Column("last_run_id", sa.String(), nullable=True),
        sa.Column("last_session_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("incident_id"),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incidents_fingerprint"), ["fingerprint"], unique=True)
        batch_op.create_index(batch_op.f("ix_incidents_last_seen_at"), ["last_seen_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_severity"), ["severity"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_source"), ["source"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_status"), ["status"], unique=False)
        batch_op.create_index(
            "ix_incidents_status_severity_last_seen",
            ["status", "severity", "last_seen_at", "incident_id"],
            unique=False,
        )

    op.create_table(
        "intake_keys",
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("intake_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_intake_keys_key_hash"), ["key_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_intake_keys_project_id"), ["project_id"], unique=False)

    op.create_table(
        "drafts",
        sa.Column("draft_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "approval_required",
                "approved",
                "denied",
                "publishing",
                "published",
                "publish_failed",
                name="draftstatus",
            ),
            nullable=False,
        ),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("severity", sa.Enum("critical", "high", "medium", "low", name="severity"), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("route_tags", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("evidence_digest", sa.String(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.incident_id"],
        ),
        sa.PrimaryKeyConstraint("draft_id"),
    )
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drafts_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_severity"), ["severity"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_source"), ["source"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "incident_occurrences",
        sa.Column("occurrence_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_by", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("detail_digest", sa.String(), nullable=False),
        sa.Column("recurrence", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.incident_id"],
        ),
        sa.PrimaryKeyConstraint("occurrence_id"),
    )
    with op.batch_alter_table("incident_occurrences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_occurrences_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_incident_occurrences_run_id"), ["run_id"], unique=False)

    op.create_table(
        "approval_requests",
        sa.Column("approval_id", sa.String(), nullable=False),
        sa.Column("draft_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "approved", "denied", "used", "superseded", name="approvalstatus"),
            nullable=False,
        ),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence_digest", sa.String(), nullable=False),
        sa.Column("destination_id", sa.String(), nullable=False),
        sa.Column("route_id", sa.String(), nullable=True),
        sa.Column("policy_version", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.String(), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_receipt_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["draft_id"],
            ["drafts.draft_id"],
        ),
        sa.PrimaryKeyConstraint("approval_id"),
    )
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_requests_draft_id"), ["draft_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_approval_requests_status"), ["status"], unique=False)

    op.create_table(
        "receipts",
        sa.Column("receipt_id", sa.String(), nullable=False),
        sa.Column("draft_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("destination_id", sa.String(), nullable=False),
        sa.Column("destination_kind", sa.String(), nullable=False),
        sa.Column("route_id", sa.String(), nullable=True),
        sa.Column("match_reason", sa.String(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "published", "commented", "failed", "blocked", name="receiptstatus"),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("external_url", sa.String(), nullable=True),
        sa.Column("evidence_digest", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("approval_id", sa.String(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("response_excerpt", sa.String(), nullable=True),
        sa.Column("published_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["draft_id"],
            ["drafts.draft_id"],
        ),
        sa.PrimaryKeyConstraint("receipt_id"),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipts_draft_id"), ["draft_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipts_idempotency_key"), ["idempotency_key"], unique=True)
        batch_op.create_index(batch_op.f("ix_receipts_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipts_status"), ["status"], unique=False)

    op.create_table(
        "triage_runs",
        sa.Column("triage_run_id", sa.String(), nullable=False),
        sa.Column("draft_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("suggested_severity", sa.Enum("critical", "high", "medium", "low", name="severity"), nullable=False),
        sa.Column("suggested_route_tags", sa.JSON(), nullable=False),
        sa.Column("duplicate_matches", sa.JSON(), nullable=False),
        sa.Column("similar_incidents", sa.JSON(), nullable=False),
        sa.Column("occurrence_count", sa.Integer(), nullable=False),
        sa.Column("occurrences_per_hour", sa.Float(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("evidence_summary", sa.String(), nullable=False),
        sa.Column("evidence_digest", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["draft_id"],
            ["drafts.draft_id"],
        ),
        sa.PrimaryKeyConstraint("triage_run_id"),
    )
    with op.batch_alter_table("triage_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_triage_runs_draft_id"), ["draft_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_triage_runs_incident_id"), ["incident_id"], unique=False)


def downgrade() -> None:
    # Below the first revision there is no schema: going there would drop every table and row.
    raise NotImplementedError("0001_initial is the first revision; it cannot be downgraded (it would drop all data)")
