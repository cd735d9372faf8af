"""The S3-compatible firmware store (evota.firmware.s3_storage) against a real S3 API server
on loopback (moto's standalone server, tests/s3_fixtures.py): streaming multipart uploads,
content addressing, nothing left by a failed or refused upload, the local serving cache
(verified, damaged copies fetched again, bounded, pinned while served), bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from evota import metrics
from evota.cli import app
from evota.config import Settings
from evota.firmware.s3_storage import (
    PART_BYTES,
    CacheFull,
    FirmwareCache,
    S3FirmwareStore,
    parse_store_url,
)
from evota.firmware.storage import RangeNotSatisfiable, StoreUnavailable, TooLarge
from tests.s3_fixtures import SECRET_KEY, Bucket, damage
from tests.support import free_port

MiB = 1024 * 1024


def store_for(s3: Bucket, tmp_path: Path, cache_max: int = 256 * MiB) -> S3FirmwareStore:
    config = Settings(**s3.settings(data_dir=tmp_path)).s3_config()
    assert config is not None
    return S3FirmwareStore(config, tmp_path / "cache", cache_max)


async def chunks_of(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def blob_key(sha256: str) -> str:
    return f"evota/firmware/sha256/{sha256}"


# -- settings ----------------------------------------------------------------------------------


def test_the_store_url_is_parsed_and_a_bad_one_refused_in_one_line() -> None:
    assert parse_store_url("local") is None
    location = parse_store_url("s3://fw-bucket/site-a/evota/")
    assert location is not None and (location.bucket, location.prefix) == (
        "fw-bucket",
        "site-a/evota/",
    )
    assert parse_store_url("s3://fw-bucket") is not None
    for bad, why in [
        ("s3:/fw-bucket", "must be 'local' or s3://BUCKET"),
        ("s3://Fw_Bucket/x", "not an S3 bucket name"),
        ("s3://ab", "not an S3 bucket name"),
        ("s3://fw-bucket/a/../b", "prefix"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Settings(firmware_store=bad)
    with pytest.raises(ValidationError, match="set both"):
        Settings(firmware_store="s3://fw-bucket", s3_access_key_id="AKIA")


def test_evota_serve_refuses_a_bad_store_url_with_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["serve", "--data-dir", str(tmp_path)], env={"EVOTA_FIRMWARE_STORE": "s3//x"}
    )
    assert r.exit_code == 1
    assert "invalid setting firmware_store: Value error, must be 'local' or s3://" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_the_secret_is_never_in_the_settings_or_config_repr(s3: Bucket, tmp_path: Path) -> None:
    settings = Settings(**s3.settings(data_dir=tmp_path))
    config = settings.s3_config()
    assert SECRET_KEY not in repr(settings) and SECRET_KEY not in repr(config)


# -- uploads -----------------------------------------------------------------------------------


async def test_an_upload_streams_in_parts_to_its_digest_and_dedups(
    s3: Bucket, tmp_path: Path
) -> None:
    store = store_for(s3, tmp_path)
    data = os.urandom(2 * PART_BYTES + 12345)  # three parts
    blob = await store.put(chunks_of(data), max_bytes=len(data))
    digest = hashlib.sha256(data).hexdigest()
    assert (blob.sha256, blob.size, blob.created) == (digest, len(data), True)
    assert s3.keys() == [blob_key(digest)]  # the temporary key is gone
    assert s3.get(blob_key(digest)) == data
    assert s3.unfinished_uploads() == []
    assert await store.exists(digest) and store.path_of(digest) is None
    assert await asyncio.to_thread(store.size_of, digest) == len(data)
    again = await store.put(chunks_of(data), max_bytes=len(data))
    assert (again.sha256, again.created) == (digest, False)
    assert s3.keys() == [blob_key(digest)]
    small = await store.put(chunks_of(b"tiny"), max_bytes=10)  # one PUT, no multipart
    assert s3.get(blob_key(small.sha256)) == b"tiny"
    assert await store.delete(digest) and not await store.delete(digest)
    assert s3.keys() == [blob_key(small.sha256)]


async def test_a_refused_or_failed_upload_leaves_no_object(s3: Bucket, tmp_path: Path) -> None:
    store = store_for(s3, tmp_path)
    data = os.urandom(2 * PART_BYTES + 1)
    with pytest.raises(TooLarge):  # past the limit after a part went up
        await store.put(chunks_of(data), max_bytes=PART_BYTES + 10)

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data):
            yield chunk
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(broken(), max_bytes=len(data) * 2)
    assert s3.keys() == [] and s3.unfinished_uploads() == []


async def test_open_range_reads_byte_ranges_from_the_bucket(s3: Bucket, tmp_path: Path) -> None:
    store = store_for(s3, tmp_path)
    data = os.urandom(3 * MiB + 7)
    blob = await store.put(chunks_of(data), max_bytes=len(data))
    got = b"".join([c async for c in await store.open_range(blob.sha256, 1000, 2 * MiB + 3)])
    assert got == data[1000 : 2 * MiB + 3]
    tail = b"".join([c async for c in await store.open_range(blob.sha256, len(data) - 5, None)])
    assert tail == data[-5:]
    assert [c async for c in await store.open_range(blob.sha256, 10, 10)] == []
    with pytest.raises(RangeNotSatisfiable):
        await store.open_range(blob.sha256, 0, len(data) + 1)


async def test_a_large_image_goes_up_and_into_the_cache_in_bounded_memory(
    s3: Bucket, tmp_path: Path
) -> None:
    store = store_for(s3, tmp_path)
    size = 96 * MiB
    digest = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:  # never more than one chunk at a time
        for i in range(size // MiB):
            chunk = bytes([i % 251]) * MiB
            digest.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        blob = await store.put(generated(), max_bytes=size)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        cached = await asyncio.to_thread(store.cache.lookup, blob.sha256)
        _, fill_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blob.sha256 == digest.hexdigest() and blob.size == size
    assert cached is not None and cached.size == size
    cached.release()
    # one part (8 MiB) and its copy for the request, not the 96 MiB image
    print(f"peak traced memory: upload {upload_peak / MiB:.1f} MiB, fill {fill_peak / MiB:.1f} MiB")
    assert upload_peak < 3 * PART_BYTES, upload_peak
    assert fill_peak < 8 * MiB, fill_peak


# -- the serving cache -------------------------------------------------------------------------


async def test_the_cache_fetches_once_verifies_and_refetches_a_damaged_copy(
    s3: Bucket, tmp_path: Path
) -> None:
    store = store_for(s3, tmp_path)
    data = os.urandom(3 * MiB)
    blob = await store.put(chunks_of(data), max_bytes=len(data))
    cache = store.cache

    # ten download threads at once: one fetch, all get the verified copy
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.lookup(blob.sha256)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.fetches == 1 and len(results) == 10
    for r in results:
        assert r is not None and r.path.read_bytes() == data  # type: ignore[attr-defined]
        r.release()  # type: ignore[attr-defined]

    path = cache.path_for(blob.sha256)
    damage(path, MiB, b"\x00" * 16)  # a damaged copy on disk
    damaged = metrics.REGISTRY.get_sample_value("evota_firmware_cache_total", {"event": "damaged"})
    again = cache.lookup(blob.sha256)
    assert again is not None and again.path.read_bytes() == data
    assert (cache.damaged, cache.fetches) == (1, 2)
    after = metrics.REGISTRY.get_sample_value("evota_firmware_cache_total", {"event": "damaged"})
    assert (after or 0) - (damaged or 0) == 1  # operators see it in /metrics
    again.release()

    # after a restart the copies found are checked before they are served, even a copy
    # damaged with its size and mtime kept (bit rot)
    damage(path, 0, b"\xff" * 4, keep_mtime=True)
    restarted = store_for(s3, tmp_path)
    assert restarted.cache.cached() == {blob.sha256}
    served = restarted.cache.lookup(blob.sha256)
    assert served is not None and served.path.read_bytes() == data
    assert (restarted.cache.damaged, restarted.cache.fetches) == (1, 1)
    assert restarted.cache.lookup("0" * 64) is None  # not in the store


async def test_the_cache_is_bounded_and_never_evicts_an_image_being_served(
    s3: Bucket, tmp_path: Path
) -> None:
    store = store_for(s3, tmp_path, cache_max=5 * MiB)
    images = [os.urandom(2 * MiB) for _ in range(3)]
    blobs = [await store.put(chunks_of(d), max_bytes=len(d)) for d in images]
    cache = store.cache
    a = cache.lookup(blobs[0].sha256)
    b = cache.lookup(blobs[1].sha256)
    assert a is not None and b is not None
    # both are being served: no room for a third
    with pytest.raises(CacheFull, match="EVOTA_FIRMWARE_CACHE_MAX_BYTES"):
        cache.lookup(blobs[2].sha256)
    assert cache.used_bytes == 4 * MiB
    b.release()
    b.release()  # a second release changes nothing
    c = cache.lookup(blobs[2].sha256)  # the unpinned one goes
    assert c is not None
    assert cache.cached() == {blobs[0].sha256, blobs[2].sha256} and cache.evicted == 1
    assert not cache.path_for(blobs[1].sha256).exists()
    assert cache.used_bytes <= 5 * MiB
    a.release()
    c.release()
    big = os.urandom(6 * MiB)
    too_big = await store.put(chunks_of(big), max_bytes=len(big))
    with pytest.raises(CacheFull, match="larger than the firmware cache"):
        cache.lookup(too_big.sha256)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_an_unreachable_store_is_one_clear_error(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        data_dir=tmp_path,
        firmware_store="s3://evota-down",
        s3_endpoint_url=closed,
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    config = settings.s3_config()
    assert config is not None
    store = S3FirmwareStore(config, tmp_path / "cache", 64 * MiB)
    with pytest.raises(StoreUnavailable, match="cannot be reached") as raised:
        await store.put(chunks_of(b"x" * 100), max_bytes=1000)
    assert closed not in str(raised.value)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.cache.lookup("a" * 64)
    assert isinstance(store.cache, FirmwareCache)
