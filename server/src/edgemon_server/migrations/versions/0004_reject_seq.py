"""rejects.seq: a rejected payload's seq, so that it is never asked for again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply (earlier rejects keep a NULL seq)."""
    op.add_column("rejects", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_rejects_device_seq", "rejects", ["device_id", "seq"])


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_rejects_device_seq", table_name="rejects")
    with op.batch_alter_table("rejects") as batch:
        batch.drop_column("seq")
