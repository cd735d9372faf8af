"""Charger certificates: what the charger CA signed, what chargers report holding, and when
each charger's inventory was last asked for

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "charger_certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(48), nullable=False),
        sa.Column("certificate_type", sa.String(40), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("key", sa.String(16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charger_certificates")),
    )
    op.create_index(
        "ix_charger_certificates_charger", "charger_certificates", ["charger_id", "created_at"]
    )
    op.create_index("ix_charger_certificates_not_after", "charger_certificates", ["not_after"])
    op.create_table(
        "charger_installed_certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(48), nullable=False),
        sa.Column("certificate_type", sa.String(40), nullable=False),
        sa.Column("hash_algorithm", sa.String(8), nullable=False),
        sa.Column("issuer_name_hash", sa.String(128), nullable=False),
        sa.Column("issuer_key_hash", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(300), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("known_as", sa.String(32), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charger_installed_certificates")),
    )
    op.create_index(
        "ix_charger_installed_certificates_charger",
        "charger_installed_certificates",
        ["charger_id"],
    )
    op.create_index(
        "ix_charger_installed_certificates_not_after",
        "charger_installed_certificates",
        ["not_after"],
    )
    op.create_table(
        "charger_certificate_checks",
        sa.Column("charger_id", sa.String(48), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", name=op.f("pk_charger_certificate_checks")),
    )


def downgrade() -> None:
    op.drop_table("charger_certificate_checks")
    op.drop_index(
        "ix_charger_installed_certificates_not_after", table_name="charger_installed_certificates"
    )
    op.drop_index(
        "ix_charger_installed_certificates_charger", table_name="charger_installed_certificates"
    )
    op.drop_table("charger_installed_certificates")
    op.drop_index("ix_charger_certificates_not_after", table_name="charger_certificates")
    op.drop_index("ix_charger_certificates_charger", table_name="charger_certificates")
    op.drop_table("charger_certificates")
