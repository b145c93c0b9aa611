"""receipt leases: a pending receipt names its claimant and when the claim lapses (replicas' recovery)

Revision ID: 0002_receipt_leases
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_receipt_leases"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable: receipts from before (pending ones included) have no lease, so recovery may take them at once.
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_receipts_lease_expires_at"), ["lease_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipts_lease_expires_at"))
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("claimed_by")
