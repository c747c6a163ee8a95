"""rollups: five-minute and hourly aggregates of every series, the buckets late data touched, the cursors.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _tier(name: str) -> None:
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("min", sa.Double(), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("last", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("series_id", "bucket"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    """Apply."""
    _tier("rollups_5m")
    _tier("rollups_1h")
    op.create_table(
        "rollup_dirty",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "bucket"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollup_state",
        sa.Column("tier", sa.String(length=8), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tier"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("rollup_state")
    op.drop_table("rollup_dirty")
    op.drop_table("rollups_1h")
    op.drop_table("rollups_5m")
