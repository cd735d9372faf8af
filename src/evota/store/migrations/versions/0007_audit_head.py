"""Audit log: the keyed head, charger ids inside the hashed entry, a canonical-form version

Entries sealed before this revision keep their canonical form (``v`` = 1, charger links not
hashed); the migration copies each entry's links into ``audit_log.chargers`` so that later
unlinking is still noticed. Entries written afterwards are ``v`` = 2 and hash their charger
ids. The head row is created by evota at its next start (it needs the key in the data
directory, which a migration does not have): that start is the cut-over, see
docs/accountability.md.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("v", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("chargers", sa.JSON(), nullable=True))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    bind = op.get_bind()
    links: dict[int, list[str]] = {}
    for entry_id, charger_id in bind.execute(
        sa.text("SELECT entry_id, charger_id FROM audit_chargers")
    ):
        links.setdefault(entry_id, []).append(charger_id)
    audit_log = sa.table("audit_log", sa.column("id"), sa.column("chargers", sa.JSON()))
    for entry_id, chargers in links.items():
        bind.execute(
            audit_log.update().where(audit_log.c.id == entry_id).values(chargers=sorted(chargers))
        )


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("chargers")
        batch_op.drop_column("v")
