"""code-change runs: each delegation to a coding-agent platform, its state and the replica polling it

Revision ID: 0005_code_change_runs
Revises: 0004_log_sources

Databases written between the first release of code changes and migrations already have the table (the code
then created missing tables at every open): it is kept as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_code_change_runs"
down_revision = "0004_log_sources"
branch_labels = None
depends_on = None

_INDEXED = ("draft_id", "incident_id", "next_poll_at", "platform_run_id", "status")


def upgrade() -> None:
    if "code_change_runs" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "code_change_runs",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("destination_id", sa.String(), nullable=False),
        sa.Column("repository", sa.String(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("requested", "running", "finished", "error", "failed", "stopped", name="codechangestatus"),
            nullable=False,
        ),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("pr_url", sa.String(), nullable=True),
        sa.Column("branch", sa.String(), nullable=True),
        sa.Column("platform_url", sa.String(), nullable=True),
        sa.Column("failure", sa.String(), nullable=True),
        sa.Column("follow_ups", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("platform_run_id", sa.String(), nullable=True),
        sa.Column("draft_id", sa.String(), nullable=False),
        sa.Column("receipt_id", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_owner", sa.String(), nullable=True),
        sa.Column("poll_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("code_change_runs", schema=None) as batch_op:
        for column in _INDEXED:
            batch_op.create_index(batch_op.f(f"ix_code_change_runs_{column}"), [column], unique=False)


def downgrade() -> None:
    op.drop_table("code_change_runs")
    sa.Enum(name="codechangestatus").drop(op.get_bind(), checkfirst=True)
