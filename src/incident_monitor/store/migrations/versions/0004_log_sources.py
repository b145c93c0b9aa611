"""log sources: the offset of every file a source has read, and each source's lease and counters

Revision ID: 0004_log_sources
Revises: 0003_audit_row_macs

Databases written between the first release of log sources and migrations already have both tables (the
code then created missing tables at every open; only SQLite ever had them): those stay as they are, their
INTEGER columns already 64-bit on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_log_sources"
down_revision = "0003_audit_row_macs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "log_source_files" not in tables:
        op.create_table(
            "log_source_files",
            sa.Column("source_id", sa.String(), nullable=False),
            sa.Column("device", sa.BigInteger(), nullable=False),
            sa.Column("inode", sa.BigInteger(), nullable=False),
            sa.Column("path", sa.String(), nullable=False),
            sa.Column("offset", sa.BigInteger(), nullable=False),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("head_digest", sa.String(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("source_id", "device", "inode"),
        )
    if "log_source_states" not in tables:
        op.create_table(
            "log_source_states",
            sa.Column("source_id", sa.String(), nullable=False),
            sa.Column("lease_owner", sa.String(), nullable=True),
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("reports", sa.Integer(), nullable=False),
            sa.Column("repeats", sa.Integer(), nullable=False),
            sa.Column("rejected", sa.Integer(), nullable=False),
            sa.Column("undecodable_bytes", sa.BigInteger(), nullable=False),
            sa.Column("warnings", sa.Integer(), nullable=False),
            sa.Column("last_problem", sa.String(), nullable=True),
            sa.Column("last_problem_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("source_id"),
        )


def downgrade() -> None:
    op.drop_table("log_source_states")
    op.drop_table("log_source_files")
