"""remote configuration: layers, every compiled version, each device's desired and applied version, rollouts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "config_layers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("match", sa.String(length=256), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "name", name="uq_config_layers_scope_name"),
    )
    op.create_table(
        "config_versions",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("hash", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_config_versions_device", "config_versions", ["device_id", "version"])
    op.create_table(
        "device_config",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=True),
        sa.Column("sent_version", sa.Integer(), nullable=False),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("reported_version", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "config_rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("match", sa.String(length=256), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("canary", sa.JSON(), nullable=False),
        sa.Column("wait_s", sa.Double(), nullable=False),
        sa.Column("abort_on_rejects", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("config_rollouts")
    op.drop_table("device_config")
    op.drop_index("ix_config_versions_device", table_name="config_versions")
    op.drop_table("config_versions")
    op.drop_table("config_layers")
