"""CSMS root rotations (issue 16 §7): the new and old root, the phase, the bulk operations
that install and remove the root, and when the server certificate was switched

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "root_rotations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("new_root", sa.Text(), nullable=False),
        sa.Column("old_root", sa.Text(), nullable=False),
        sa.Column("charger_ids", sa.JSON(), nullable=False),
        sa.Column("min_share", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("install_operation_id", sa.String(36), nullable=True),
        sa.Column("remove_operation_id", sa.String(36), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_root_rotations")),
    )
    op.create_index("ix_root_rotations_state", "root_rotations", ["state"])


def downgrade() -> None:
    op.drop_index("ix_root_rotations_state", table_name="root_rotations")
    op.drop_table("root_rotations")
