"""PostgreSQL: connector status history and charger events partitioned by day on
``received_at``, so retention drops whole days (evota.store.retention); SQLite unchanged

The existing table is not copied: it becomes the first partition (everything received
before tomorrow, renamed ``<table>_before<YYYYMMDD>`` into the ``evota_partitions`` schema)
and its indexes are attached to the new parent's. The primary key is (id, received_at): a
partitioned table's key must include the partition key, so attaching builds that index on
the old rows once and checks them against the range (a sequential read under the
migration's lock). Ids still come from the same sequence, now owned by the parent. A
default partition catches rows no day partition covers (the pruner moves them into their
day when it creates it).

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

SCHEMA = "evota_partitions"
TABLES = {
    # table: (its indexes: name -> columns)
    "connector_status_history": {"ix_status_history_charger": "charger_id"},
    "charger_events": {
        "ix_charger_events_charger_time": "charger_id, received_at",
        "ix_charger_events_kind_time": "kind, received_at",
    },
}
DAYS_AHEAD = 7


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    for table, indexes in TABLES.items():
        old = f"{table}_before{tomorrow:%Y%m%d}"
        op.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        # Its key becomes (id, received_at), built when it is attached.
        op.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT "pk_{table}"')
        for name in indexes:
            op.execute(f'ALTER INDEX "{name}" RENAME TO "{old}_{name}"')
        # An owned sequence would move with its table: the parent takes it over below.
        op.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY NONE')
        op.execute(f'ALTER TABLE "{old}" SET SCHEMA "{SCHEMA}"')
        op.execute(
            f'CREATE TABLE "{table}" (LIKE "{SCHEMA}"."{old}" INCLUDING DEFAULTS) '
            "PARTITION BY RANGE (received_at)"
        )
        op.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY "{table}".id')
        op.execute(
            f'ALTER TABLE "{table}" ADD CONSTRAINT "pk_{table}" PRIMARY KEY (id, received_at)'
        )
        for name, columns in indexes.items():
            op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
        op.execute(
            f'ALTER TABLE "{table}" ATTACH PARTITION "{SCHEMA}"."{old}" '
            f"FOR VALUES FROM (MINVALUE) TO ('{tomorrow.isoformat()}T00:00:00+00:00')"
        )
        op.execute(f'CREATE TABLE "{SCHEMA}"."{table}_default" PARTITION OF "{table}" DEFAULT')
        for i in range(DAYS_AHEAD + 1):
            day = tomorrow + timedelta(days=i)
            end = day + timedelta(days=1)
            op.execute(
                f'CREATE TABLE "{SCHEMA}"."{table}_p{day:%Y%m%d}" PARTITION OF "{table}" '
                f"FOR VALUES FROM ('{day.isoformat()}T00:00:00+00:00') "
                f"TO ('{end.isoformat()}T00:00:00+00:00')"
            )


def downgrade() -> None:
    """Back to plain tables: the rows are copied into one table per class."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, indexes in TABLES.items():
        op.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_partitioned"')
        op.execute(f'ALTER TABLE "{table}_partitioned" RENAME CONSTRAINT "pk_{table}" TO "x"')
        for name in indexes:
            op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_partitioned"')
        op.execute(f'CREATE TABLE "{table}" (LIKE "{table}_partitioned" INCLUDING DEFAULTS)')
        op.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}_partitioned"')
        op.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY "{table}".id')
        op.execute(f'DROP TABLE "{table}_partitioned"')
        op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "pk_{table}" PRIMARY KEY (id)')
        for name, columns in indexes.items():
            op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    op.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
