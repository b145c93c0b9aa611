"""log sources: the offset of every file a source has read, and each source's lease and counters

Revision ID: 0004_log_sources
Revises: 0003_audit_row_macs

Databases written between the first release of log sources and migrations already have both tables (the
code then created missing tables at every open; only SQLite ever did): their rows are kept and the columns
that hold byte counts, device and inode numbers are declared BIGINT as the models now say (on SQLite that
is the type's name only: its INTEGER was already 64-bit).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_log_sources"
down_revision = "0003_audit_row_macs"
branch_labels = None
depends_on = None


_WIDE_COLUMNS = {"log_source_files": ("device", "inode", "offset", "size"), "log_source_states": ("undecodable_bytes",)}


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    for table, columns in _WIDE_COLUMNS.items():
        if table in tables:
            with op.batch_alter_table(table, schema=None) as batch_op:
                for column in columns:
                    batch_op.alter_column(column, existing_type=sa.Integer(), type_=sa.BigInteger())
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
