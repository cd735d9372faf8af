"""Firmware repository (images, vendor policy, trusted roots) and update jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Also remembers per charger how it takes firmware (signed or plain), learned from its answers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "firmware",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("vendor", sa.String(length=50), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("hardware_revisions", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.String(length=500), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("signing_certificate", sa.Text(), nullable=True),
        sa.Column("release_notes", sa.Text(), nullable=False),
        sa.Column("min_current_version", sa.String(length=50), nullable=True),
        sa.Column("supersedes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware")),
        sa.UniqueConstraint("vendor", "version", name="uq_firmware_vendor_version"),
    )
    with op.batch_alter_table("firmware", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_firmware_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_firmware_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_firmware_vendor"), ["vendor"], unique=False)

    op.create_table(
        "firmware_trusted_roots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("vendor", sa.String(length=50), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_trusted_roots")),
        sa.UniqueConstraint("vendor", "fingerprint", name="uq_trusted_root"),
    )
    with op.batch_alter_table("firmware_trusted_roots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_firmware_trusted_roots_vendor"), ["vendor"], unique=False
        )

    op.create_table(
        "firmware_vendors",
        sa.Column("vendor", sa.String(length=50), nullable=False),
        sa.Column("allow_unsigned", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vendor", name=op.f("pk_firmware_vendors")),
    )
    op.create_table(
        "jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("firmware_id", sa.String(length=36), nullable=False),
        sa.Column("campaign_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("failure", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("target_version", sa.String(length=50), nullable=False),
        sa.Column("previous_version", sa.String(length=50), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retrieve_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allow_downgrade", sa.Boolean(), nullable=False),
        sa.Column("bytes_served", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["firmware_id"], ["firmware.id"], name=op.f("fk_jobs_firmware_id_firmware")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_charger_id"), ["charger_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_firmware_id"), ["firmware_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)

    op.create_table(
        "job_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_events_job_id"), ["job_id"], unique=False)

    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("firmware_delivery", sa.String(length=8), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("firmware_delivery")

    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_events_job_id"))

    op.drop_table("job_events")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_state"))
        batch_op.drop_index(batch_op.f("ix_jobs_firmware_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_charger_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_campaign_id"))

    op.drop_table("jobs")
    op.drop_table("firmware_vendors")
    with op.batch_alter_table("firmware_trusted_roots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_firmware_trusted_roots_vendor"))

    op.drop_table("firmware_trusted_roots")
    with op.batch_alter_table("firmware", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_firmware_vendor"))
        batch_op.drop_index(batch_op.f("ix_firmware_state"))
        batch_op.drop_index(batch_op.f("ix_firmware_sha256"))

    op.drop_table("firmware")
