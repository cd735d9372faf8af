"""A running cluster backed up from one node, as docs/cluster.md "Backup and restore" says:
``evota backup`` (pg_dump and that node's files) while two nodes serve chargers and both
append to the one audit chain; restored into a new database and data directory, the audit log
verifies with the head and the node's anchors, and evota finds every charger and site."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evota.sim import Fleet, fleet_from_flags
from tests.cluster.harness import (
    Cluster,
    cluster_redis,  # noqa: F401
    create_database,
    drop_database,
    pg_database,  # noqa: F401
)
from tests.conftest import TOKEN, api_client, start_runtime
from tests.sim.conftest import fast
from tests.test_backup_restore import PG_BIN, evota_cli, libpq, run

pytestmark = pytest.mark.slow


async def test_a_running_cluster_backed_up_from_one_node_restores_with_a_verifying_audit_log(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis,  # noqa: F811
) -> None:
    backup = tmp_path / "backup"
    async with Cluster(tmp_path / "cluster", pg_database, cluster_redis, nodes=2) as cluster:
        spec = fleet_from_flags(4, prefix="CLB-", seed="cluster-backup")
        fleet = Fleet.from_spec(spec, cluster.ocpp_url, config=fast(speed=600.0))
        await fleet.provision(cluster.http_url, TOKEN)
        await fleet.start()
        try:
            await fleet.wait_for_all(lambda c: c.accepted, 30)
            for node in (0, 1):  # audited writes through both nodes: one chain
                async with cluster.api(node) as api:
                    r = await api.post(
                        "/api/v1/sites", json={"id": f"site-{node}", "name": f"Site {node}"}
                    )
                    assert r.status_code == 201, r.text
            async with cluster.api(1) as api:
                entries = (await api.get("/api/v1/audit/verify")).json()
            assert entries["ok"], entries
            first = cluster.nodes[0]
            code, output = await evota_cli(
                "backup", str(backup), "--data-dir", str(first.data_dir),
                "--database-url", pg_database, "--pg-dump", str(PG_BIN / "pg_dump"),
            )  # fmt: skip
            assert code == 0, output
        finally:
            await fleet.stop()

    restored_db = await create_database()
    try:
        await run(
            str(PG_BIN / "pg_restore"),
            "--no-owner",
            f"--dbname={libpq(restored_db)}",
            str(backup / "evota.dump"),
        )
        data = tmp_path / "restored" / "data"
        shutil.copytree(backup, data, ignore=shutil.ignore_patterns("evota.dump"))
        code, output = await evota_cli(
            "audit", "verify", "--data-dir", str(data), "--database-url", restored_db
        )
        assert code == 0 and "audit log intact" in output, output
        assert "head not checked" not in output, output
        rt = await start_runtime(tmp_path / "restored", restored_db)
        try:
            async with api_client(rt) as api:
                chargers = (await api.get("/api/v1/chargers", params={"limit": 100})).json()
                sites = (await api.get("/api/v1/sites")).json()
                verified = (await api.get("/api/v1/audit/verify")).json()
            assert {c["id"] for c in chargers["items"]} == {c.identity for c in fleet.chargers}
            assert {"site-0", "site-1"} <= {s["id"] for s in sites["items"]}
            assert verified["ok"] and verified["entries"] >= entries["entries"], verified
        finally:
            await rt.stop()
    finally:
        await drop_database(restored_db)
