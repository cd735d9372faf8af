"""Operator switches that outlive a process: the playbooks' global kill switch was kept in
the runner's memory, so a restart, or in a cluster a new runner leader, silently let every
playbook run again (evota.playbooks.store.kill_switch)

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "switches",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("engaged", sa.Boolean(), nullable=False),
        sa.Column("set_by", sa.String(120), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("switches")
