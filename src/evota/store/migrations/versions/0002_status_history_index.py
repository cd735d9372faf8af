"""Cheaper index for the connector status history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

An index on (charger_id, received_at) doubled the cost of each status-history insert, the
gateway's busiest write; (charger_id) serves the per-charger, newest-first reads by id.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_status_history_charger_time", table_name="connector_status_history")
    op.create_index("ix_status_history_charger", "connector_status_history", ["charger_id"])


def downgrade() -> None:
    op.drop_index("ix_status_history_charger", table_name="connector_status_history")
    op.create_index(
        "ix_status_history_charger_time",
        "connector_status_history",
        ["charger_id", "received_at"],
    )
