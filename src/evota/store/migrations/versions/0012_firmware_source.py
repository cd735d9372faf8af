"""Where an imported firmware image came from: URL, host, address, server certificate, who, when

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("firmware") as batch:
        batch.add_column(sa.Column("source_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("source_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("source_address", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source_certificate_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fetched_by", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firmware") as batch:
        for name in (
            "fetched_by",
            "fetched_at",
            "source_certificate_sha256",
            "source_address",
            "source_host",
            "source_url",
        ):
            batch.drop_column(name)
