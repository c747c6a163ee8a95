"""PostgreSQL: sample_chunks, an hour of one series in two arrays (SQLite: nothing to do).

See ``edgemon_server.chunks``: raw samples older than two hours are packed there by maintenance.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE sample_chunks (series_id INTEGER NOT NULL REFERENCES series (id) ON DELETE CASCADE, "
        "hour BIGINT NOT NULL, ts BIGINT[] NOT NULL, value DOUBLE PRECISION[] NOT NULL, "
        "PRIMARY KEY (series_id, hour))"
    )


def downgrade() -> None:
    """Revert: the packed samples go back to rows first."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "INSERT INTO samples (series_id, ts, value) SELECT c.series_id, u.ts, u.value "
        "FROM sample_chunks c, unnest(c.ts, c.value) AS u(ts, value) ON CONFLICT DO NOTHING"
    )
    op.execute("DROP TABLE sample_chunks")
