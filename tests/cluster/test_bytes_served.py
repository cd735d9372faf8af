"""Every node's download server counts the bytes it sent into the job's row.

In a cluster every node serves downloads, but only the leader runs the job runner that used
to record the bytes served; a download through another node was never counted, and that
node kept its per-job counts in memory for ever.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from sqlalchemy import insert, select

from evota.runtime import Runtime
from evota.store.models import Job
from tests.cluster.harness import pg_database  # noqa: F401
from tests.cluster.test_s3_nodes import MiB, _ranged
from tests.conftest import api_client, start_runtime
from tests.s3_fixtures import Bucket
from tests.support import until
from tests.test_firmware_update import allow_unsigned, upload


async def _bytes_served(rt: Runtime, job_id: int) -> int:
    async with rt.engine.connect() as conn:
        return int((await conn.execute(select(Job.bytes_served).where(Job.id == job_id))).scalar())


async def test_a_download_through_a_node_that_does_not_lead_is_counted(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
    s3: Bucket,
) -> None:
    cluster = {"redis_url": redis_url, **s3.settings()}
    a = await start_runtime(tmp_path / "a", pg_database, node_id="a", **cluster)
    shutil.copytree(a.settings.data_dir, tmp_path / "b" / "data")  # the same keys
    b = await start_runtime(tmp_path / "b", pg_database, node_id="b", **cluster)
    api = api_client(a)
    try:
        assert a.leadership.is_leader and not b.leadership.is_leader
        await allow_unsigned(api)
        fw = await upload(api, tmp_path, None, "3.0.0", size=MiB)
        now = dt.datetime.now(dt.UTC)
        async with a.engine.begin() as conn:  # a finished job: no runner acts on it
            job_id = (
                await conn.execute(
                    insert(Job)
                    .values(
                        charger_id="CP-1",
                        firmware_id=fw["id"],
                        state="succeeded",
                        target_version="3.0.0",
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
        body, statuses = await _ranged(b, "CP-1", fw["sha256"], job_id=str(job_id))
        assert statuses == [206, 206] and len(body) == fw["size"]
        await until(lambda: _bytes_served(a, job_id), lambda n: n == fw["size"], timeout=15)
        assert b.delivery.take_bytes() == {}  # nothing left in the node's memory
    finally:
        await api.aclose()
        await b.stop()
        await a.stop()
