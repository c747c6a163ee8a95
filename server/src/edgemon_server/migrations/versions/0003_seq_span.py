"""devices.first_seq and devices.max_seq: missing payloads in O(1).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply, filling the span of existing devices from ``payloads``."""
    op.add_column("devices", sa.Column("first_seq", sa.BigInteger(), nullable=True))
    op.add_column("devices", sa.Column("max_seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE devices SET "
        "first_seq = (SELECT MIN(seq) FROM payloads WHERE payloads.device_id = devices.id), "
        "max_seq = (SELECT MAX(seq) FROM payloads WHERE payloads.device_id = devices.id)"
    )


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("max_seq")
        batch.drop_column("first_seq")
