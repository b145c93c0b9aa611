"""audit row MACs: each audit row's keyed MAC and key id, and the index posture's recent denials read

Revision ID: 0003_audit_row_macs
Revises: 0002_receipt_leases

Databases written between the first release of keyed MACs and migrations already have these (the code
then added them at every open): each step is skipped when what it adds is there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_audit_row_macs"
down_revision = "0002_receipt_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {column["name"] for column in inspector.get_columns("audit_events")}
    indexes = {index["name"] for index in inspector.get_indexes("audit_events")}
    # Nullable: rows written before keyed MACs have none until the first checkpoint seals them
    # (service/audit_chain.py seal_unsealed_rows); `audit verify` passes them only as that prefix.
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        if "key_id" not in columns:
            batch_op.add_column(sa.Column("key_id", sa.String(), nullable=True))
        if "mac" not in columns:
            batch_op.add_column(sa.Column("mac", sa.String(), nullable=True))
        if "ix_audit_events_decision_at" not in indexes:
            batch_op.create_index("ix_audit_events_decision_at", ["decision", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_decision_at")
        batch_op.drop_column("mac")
        batch_op.drop_column("key_id")
