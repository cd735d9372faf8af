"""Daily per-charger rollup for post-rollout KPIs (evota.evidence)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "charger_days",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("firmware_version", sa.String(length=50), nullable=True),
        sa.Column("version_changed", sa.Boolean(), nullable=False),
        sa.Column("vendor", sa.String(length=50), nullable=True),
        sa.Column("model", sa.String(length=50), nullable=True),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("observed_s", sa.Double(), nullable=False),
        sa.Column("connected_s", sa.Double(), nullable=False),
        sa.Column("available_s", sa.Double(), nullable=False),
        sa.Column("offline_episodes", sa.Integer(), nullable=False),
        sa.Column("reconnects", sa.Integer(), nullable=False),
        sa.Column("faults", sa.Integer(), nullable=False),
        sa.Column("faults_by_code", sa.JSON(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("failed_sessions", sa.Integer(), nullable=False),
        sa.Column("repairs", sa.Integer(), nullable=False),
        sa.Column("repair_s", sa.Double(), nullable=False),
        sa.Column("repair_s2", sa.Double(), nullable=False),
        sa.Column("end_state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", "day", name=op.f("pk_charger_days")),
    )
    op.create_index("ix_charger_days_day", "charger_days", ["day"])
    # Covering the KPI sums of one version over a range of days: an index-only scan (no row
    # lookups: twice as fast on 300,000 rows, bench/kpis.py).
    op.create_index(
        "ix_charger_days_version_day",
        "charger_days",
        [
            "firmware_version",
            "day",
            "vendor",
            "model",
            "complete",
            "observed_s",
            "connected_s",
            "available_s",
            "offline_episodes",
            "reconnects",
            "faults",
            "sessions",
            "failed_sessions",
            "repairs",
            "repair_s",
            "repair_s2",
            "charger_id",
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_charger_days_version_day", table_name="charger_days")
    op.drop_index("ix_charger_days_day", table_name="charger_days")
    op.drop_table("charger_days")
