"""notification groups: which outbox rows go out together, and each group's timing and reminders.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("group_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("batch", sa.Integer(), nullable=True))
    op.create_index("ix_notifications_group", "notifications", ["receiver", "group_key", "status"])
    op.create_table(
        "notify_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("receiver", sa.String(length=64), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("last_sent", sa.BigInteger(), nullable=False),
        sa.Column("repeat_at", sa.BigInteger(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("receiver", "group_key", name="uq_notify_groups_receiver_key"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("notify_groups")
    op.drop_index("ix_notifications_group", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("batch")
        batch.drop_column("group_key")
