"""Vendor and model profiles (evota.fleet.vendors): known behaviour per vendor/model/firmware range

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # What the profile applies to, canonical (case-folded): one profile per scope.
        sa.Column("scope_key", sa.String(300), nullable=False, unique=True),
        sa.Column("vendor", sa.String(50), nullable=False, index=True),
        sa.Column("model", sa.String(50), nullable=True),
        sa.Column("firmware_min", sa.String(50), nullable=True),
        sa.Column("firmware_max", sa.String(50), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),  # vendors.to_dict
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vendor_profiles")
