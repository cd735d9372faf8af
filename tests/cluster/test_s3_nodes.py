"""Two nodes (two Runtimes on one PostgreSQL, each with its own data directory and firmware
cache) and one S3 bucket (moto's standalone server on loopback): an image uploaded through
one node is served, with Range requests, by both download servers from their own verified
copies; a damaged copy on one node is detected and fetched again."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from evota.files import load_key
from evota.firmware import tokens
from evota.firmware.delivery import download_path
from evota.runtime import Runtime
from tests.cluster.harness import pg_database  # noqa: F401
from tests.conftest import api_client, start_runtime
from tests.s3_fixtures import Bucket, damage
from tests.test_firmware_update import allow_unsigned, upload

MiB = 1024 * 1024


@pytest.fixture
def pg_url(pg_database: str) -> str:  # noqa: F811
    """Several nodes share PostgreSQL (a fresh database per test)."""
    return pg_database


async def _ranged(rt: Runtime, charger_id: str, sha256: str) -> tuple[bytes, list[int]]:
    """The image in two Range requests from ``rt``'s download server (a resumed download)."""
    key = load_key(rt.settings.data_dir / tokens.KEY_FILE)
    grant = tokens.DownloadGrant("job-1", charger_id, sha256, int(time.time()) + 600)
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
