"""series.last_ts and series.last_value: each series' newest sample, kept by the writer.

``latest``, overview headlines, the fleet query and ``/metrics`` read one row per series instead
of seeking ``samples`` (on PostgreSQL that seek is one per day partition, as a default partition
rules out an ordered scan). Filled here from the samples already stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("last_ts", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_value", sa.Double(), nullable=True))
    op.execute("UPDATE series SET last_ts = (SELECT max(ts) FROM samples WHERE samples.series_id = series.id)")
    op.execute(
        "UPDATE series SET last_value = (SELECT value FROM samples "
        "WHERE samples.series_id = series.id AND samples.ts = series.last_ts) WHERE last_ts IS NOT NULL"
    )


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("series") as batch:
        batch.drop_column("last_value")
        batch.drop_column("last_ts")
