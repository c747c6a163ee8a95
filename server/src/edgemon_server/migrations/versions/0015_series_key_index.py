"""An index on series.key, in byte order: fleet-wide queries by key prefix read a range, not the table.

``/api/v1/query`` and the overview's headline sort look for every series whose key matches a pattern
(``disk-usage-*-percent``) across the fleet: at 10,000 devices that was a scan of 500,000 series
rows. With this index the pattern's literal prefix (``disk-usage-``) becomes a range on it
(``queries.key_prefix``). PostgreSQL builds it with ``COLLATE "C"`` so that the range is in byte
order whatever the database's collation.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute('CREATE INDEX ix_series_key ON series (key COLLATE "C")')
    else:
        op.execute("CREATE INDEX ix_series_key ON series (key)")


def downgrade() -> None:
    """Revert."""
    op.execute("DROP INDEX ix_series_key")
