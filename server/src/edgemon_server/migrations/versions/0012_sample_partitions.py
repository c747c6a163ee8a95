"""PostgreSQL: samples become a table range-partitioned by day (SQLite: nothing to do).

The existing rows are not copied: the old table is attached as the partition ``samples_legacy``,
covering everything before the next UTC day (PostgreSQL checks the bound with one scan), and leaves
through retention's chunked deletes or whole once that day passes the horizon. New days get
``samples_pYYYYMMDD`` partitions from the maintenance round; ``samples_default`` takes the rest.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import time

from alembic import op

from edgemon_server import partitions

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_CREATE = (
    "CREATE TABLE samples (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, "
    "CONSTRAINT samples_pkey PRIMARY KEY (series_id, ts), "
    "CONSTRAINT samples_series_id_fkey FOREIGN KEY (series_id) REFERENCES series (id) ON DELETE CASCADE"
    ") PARTITION BY RANGE (ts)"
)


def upgrade() -> None:
    """Apply."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    now_ms = round(time.time() * 1000)
    newest = bind.exec_driver_sql("SELECT max(ts) FROM samples").scalar()
    legacy_hi = partitions.day_of(max(now_ms, int(newest or 0))) + partitions.DAY_MS
    op.execute("ALTER TABLE samples RENAME TO samples_legacy")
    op.execute("ALTER TABLE samples_legacy RENAME CONSTRAINT samples_pkey TO samples_legacy_pkey")
    op.execute("ALTER TABLE samples_legacy DROP CONSTRAINT samples_series_id_fkey")
    op.execute(_CREATE)
    op.execute(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF samples DEFAULT")
    if newest is None:
        op.execute("DROP TABLE samples_legacy")
        return
    op.execute(f"ALTER TABLE samples ATTACH PARTITION samples_legacy FOR VALUES FROM (MINVALUE) TO ({legacy_hi})")


def downgrade() -> None:
    """Revert: copy every partition's rows back into one plain table."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE samples RENAME TO samples_partitioned")
    op.execute("ALTER TABLE samples_partitioned RENAME CONSTRAINT samples_pkey TO samples_partitioned_pkey")
    op.execute("ALTER TABLE samples_partitioned DROP CONSTRAINT samples_series_id_fkey")
    op.execute(_CREATE.replace(" PARTITION BY RANGE (ts)", ""))
    op.execute("INSERT INTO samples SELECT series_id, ts, value FROM samples_partitioned")
    op.execute("DROP TABLE samples_partitioned CASCADE")
