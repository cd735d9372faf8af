"""Two nodes (two Runtimes on one PostgreSQL, each with its own data directory and firmware
cache) and one S3 bucket (moto's standalone server on loopback): an image uploaded through
one node is served, with Range requests, by both download servers from their own verified
copies; a damaged copy on one node is detected and fetched again."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.config import Settings
from evota.files import load_key
from evota.firmware import intake, tokens
from evota.firmware import repository as repo
from evota.firmware.delivery import download_path
from evota.firmware.intake import IntakeError, Refusal, Submission
from evota.firmware.s3_storage import S3FirmwareStore
from evota.runtime import Runtime
from evota.store import db
from evota.store.models import Firmware
from tests.cluster.harness import pg_database  # noqa: F401
from tests.conftest import api_client, start_runtime
from tests.s3_fixtures import Bucket, GatedS3, damage, gated_s3  # noqa: F401
from tests.support import until
from tests.test_firmware_update import allow_unsigned, upload

MiB = 1024 * 1024
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def pg_url(pg_database: str) -> str:  # noqa: F811
    """Several nodes share PostgreSQL (a fresh database per test)."""
    return pg_database


async def _ranged(
    rt: Runtime, charger_id: str, sha256: str, job_id: str = "job-1"
) -> tuple[bytes, list[int]]:
    """The image in two Range requests from ``rt``'s download server (a resumed download)."""
    key = load_key(rt.settings.data_dir / tokens.KEY_FILE)
    grant = tokens.DownloadGrant(job_id, charger_id, sha256, int(time.time()) + 600)
    path = download_path(charger_id, sha256, tokens.issue(grant, key))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.download_port}") as dl:
        first = await dl.get(path, headers={"Range": "bytes=0-99999"})
        rest = await dl.get(path, headers={"Range": "bytes=100000-"})
    return first.content + rest.content, [first.status_code, rest.status_code]


async def test_two_nodes_serve_the_same_image_from_their_own_caches(
    tmp_path: Path, pg_url: str, s3: Bucket
) -> None:
    a = await start_runtime(tmp_path / "a", pg_url, node_id="a", **s3.settings())
    # the second node: the same keys (a copy of the first node's data directory)
    shutil.copytree(a.settings.data_dir, tmp_path / "b" / "data")
    b = await start_runtime(tmp_path / "b", pg_url, node_id="b", **s3.settings())
    api = api_client(a)
    try:
        await allow_unsigned(api)
        fw = await upload(api, tmp_path, None, "3.0.0", size=3 * MiB)
        image = s3.get(f"evota/firmware/sha256/{fw['sha256']}")
        assert hashlib.sha256(image).hexdigest() == fw["sha256"]
        for node in (a, b):
            body, statuses = await _ranged(node, "CP-1", fw["sha256"])
            assert statuses == [206, 206] and body == image
            assert node.firmware_cache is not None
            assert node.firmware_cache.cached() == {fw["sha256"]}
            assert node.firmware_cache.fetches == 1  # two requests, one fetch
        assert a.firmware_cache is not None and b.firmware_cache is not None
        assert a.firmware_cache.root != b.firmware_cache.root

        # node b's copy is damaged on disk: detected, fetched again, served right
        copy = b.firmware_cache.path_for(fw["sha256"])
        damage(copy, 2 * MiB, os.urandom(32))
        body, statuses = await _ranged(b, "CP-2", fw["sha256"])
        assert statuses == [206, 206] and body == image
        assert (b.firmware_cache.damaged, b.firmware_cache.fetches) == (1, 2)
        assert (a.firmware_cache.damaged, a.firmware_cache.fetches) == (0, 1)
    finally:
        await api.aclose()
        await b.stop()
        await a.stop()


async def _advisory_waiters(engine: AsyncEngine) -> int:
    """Sessions of this test's database waiting for an advisory lock."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
        return int(found.scalar_one())


async def _until_done_or_waiting(task: asyncio.Task[Any], engine: AsyncEngine) -> None:
    """The task has finished, or it waits for the blob's lock another node holds."""
    await until(lambda: task.done() or _advisory_waiters(engine))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("interleaving", ["stale_exists", "delete_in_flight"])
async def test_two_nodes_taking_in_the_same_bytes_never_leave_a_row_without_its_object(
    tmp_path: Path,
    pg_url: str,
    gated_s3: GatedS3,  # noqa: F811
    interleaving: str,
) -> None:
    """Nodes A and B take in identical bytes (one object, content-addressed); A's upload is
    refused and discarded while B's is accepted. Each interleaving is made deterministic by
    holding one S3 request at a real proxy: B acting on a stale "the object is there" while A
    deletes it, or A's DELETE in flight while B checks and commits. Afterwards every image
    row's object exists and hashes to its digest."""
    data = os.urandom(64 * 1024)
    sha256 = hashlib.sha256(data).hexdigest()
    engines = [db.create_engine(pg_url) for _ in "ab"]
    await db.migrate(engines[0])
    config = Settings(**gated_s3.settings(data_dir=tmp_path)).s3_config()
    assert config is not None
    store_a, store_b = (S3FirmwareStore(config, tmp_path / n / "cache", 64 * MiB) for n in "ab")
    engine_a, engine_b = engines
    try:
        await repo.set_vendor_policy(engine_a, "Acme", True, NOW)
        blob_a = await store_a.put(_chunks(data), max_bytes=MiB)
        blob_b = await store_b.put(_chunks(data), max_bytes=MiB)
        assert (blob_a.created, blob_b.created) == (True, False)
        key = f"firmware/sha256/{sha256}"
        wanted = Submission("Acme", "1.0", ["M1"])
        accepting = discarding = None
        if interleaving == "stale_exists":  # B has seen the object; A's discard comes
            gate = gated_s3.hold("HEAD", key, after_answer=True)
            accepting = asyncio.create_task(intake.accept(engine_b, store_b, wanted, blob_b, NOW))
            assert await asyncio.to_thread(gate.arrived.wait, 10)
            discarding = asyncio.create_task(intake.discard(engine_a, store_a, blob_a))
            await _until_done_or_waiting(discarding, engine_a)
        else:  # A found no image and sent its DELETE; B's accept comes
            gate = gated_s3.hold("DELETE", key)
            discarding = asyncio.create_task(intake.discard(engine_a, store_a, blob_a))
            assert await asyncio.to_thread(gate.arrived.wait, 10)
            accepting = asyncio.create_task(intake.accept(engine_b, store_b, wanted, blob_b, NOW))
            await _until_done_or_waiting(accepting, engine_b)
        gate.release.set()
        await discarding
        try:
            await accepting
        except IntakeError as exc:  # the object went first: B is told to upload again
            assert interleaving == "delete_in_flight" and exc.refusal == Refusal.RACED

        async with engine_a.connect() as conn:
            rows = (await conn.execute(select(Firmware.sha256))).scalars().all()
        stored = set(gated_s3.bucket.keys())
        for digest in rows:  # every image row's object is there and verifies
            assert f"evota/firmware/sha256/{digest}" in stored
            body = gated_s3.bucket.get(f"evota/firmware/sha256/{digest}")
            assert hashlib.sha256(body).hexdigest() == digest
        assert len(rows) == (1 if interleaving == "stale_exists" else 0)
    finally:
        for engine in engines:
            await engine.dispose()
