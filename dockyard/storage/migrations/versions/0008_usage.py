"""usage counters and storage samples

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _ordered(length: int) -> sa.String:
    return sa.String(length=length).with_variant(sa.String(length=length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", _ordered(256), nullable=False),
        sa.Column("transfer_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pulls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pushes", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("account_id", "hour", "region", "repository"),
    )
    op.create_table(
        "storage_samples",
        sa.Column("repository_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", _ordered(256), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "hour"),
    )
    with op.batch_alter_table("storage_samples", schema=None) as batch_op:
        batch_op.create_index("ix_storage_samples_account_hour", ["account_id", "hour"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("storage_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_storage_samples_account_hour")
    op.drop_table("storage_samples")
    op.drop_table("usage_counters")
