"""Charger password changes: the new key (salted HMAC) evota accepts besides the old one until
the charger reconnects with it or the grace deadline passes

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "charger_key_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(48), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charger_key_changes")),
    )
    op.create_index(
        "ix_charger_key_changes_charger", "charger_key_changes", ["charger_id", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_charger_key_changes_charger", table_name="charger_key_changes")
    op.drop_table("charger_key_changes")
