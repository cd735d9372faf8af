"""Content-addressed firmware store: integrity, dedup, limits, no partial files, ranges."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tempfile
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evota.firmware import storage
from evota.firmware.storage import (
    BlobNotFound,
    LocalFirmwareStore,
    RangeNotSatisfiable,
    StoredBlob,
    TooLarge,
)

MiB = 1024 * 1024


async def agen(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def assert_no_files(store: LocalFirmwareStore) -> None:
    assert files_under(store.tmp_dir) == []
    assert files_under(store.blob_dir) == []


async def read_all(store: LocalFirmwareStore, digest: str, start: int, end: int | None) -> bytes:
    return b"".join([c async for c in await store.open_range(digest, start, end)])


@pytest.fixture
def store(tmp_path: Path) -> LocalFirmwareStore:
    # Tiny batches and read chunks so multi-batch paths are exercised by small data.
    return LocalFirmwareStore(tmp_path / "fw", write_batch_bytes=16, read_chunk_bytes=7)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300),
    chunk=st.integers(min_value=1, max_value=64),
    batch=st.integers(min_value=1, max_value=128),
)
def test_round_trip_and_digest_match_hashlib(data: bytes, chunk: int, batch: int) -> None:
    async def run(root: Path) -> None:
        store = LocalFirmwareStore(root, write_batch_bytes=batch, read_chunk_bytes=chunk)
        blob = await store.put(agen(split(data, chunk)), max_bytes=len(data))
        assert blob == StoredBlob(hashlib.sha256(data).hexdigest(), len(data), True)
        assert await store.exists(blob.sha256)
        assert store.size_of(blob.sha256) == len(data)
        path = store.path_of(blob.sha256)
        assert path is not None and path.read_bytes() == data
        assert await read_all(store, blob.sha256, 0, None) == data
        assert files_under(store.tmp_dir) == []

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


async def test_layout_and_modes(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([b"firmware"]), max_bytes=100)
    h = blob.sha256
    path = store.blob_dir / h[:2] / h[2:4] / h
    assert store.path_of(h) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # private to the server's user
    dirs = (store.root, store.blob_dir / h[:2], store.blob_dir / h[:2] / h[2:4], store.tmp_dir)
    for directory in dirs:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


async def test_layout_modes_ignore_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)  # the most permissive umask: modes must not depend on it
    try:
        store = LocalFirmwareStore(tmp_path / "fw")
        blob = await store.put(agen([b"x"]), max_bytes=1)
    finally:
        os.umask(old)
    path = store.path_of(blob.sha256)
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


async def test_empty_upload(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([]), max_bytes=0)
    assert blob == StoredBlob(hashlib.sha256(b"").hexdigest(), 0, True)
    assert await read_all(store, blob.sha256, 0, None) == b""


async def test_deduplication(store: LocalFirmwareStore) -> None:
    data = os.urandom(1000)
    first = await store.put(agen(split(data, 100)), max_bytes=1000)
    second = await store.put(agen(split(data, 33)), max_bytes=1000)
    assert first.created is True
    assert second == StoredBlob(first.sha256, 1000, False)
    assert len(files_under(store.blob_dir)) == 1
    assert files_under(store.tmp_dir) == []


async def test_concurrent_identical_uploads(store: LocalFirmwareStore) -> None:
    data = os.urandom(5000)
    blobs = await asyncio.gather(
        *(store.put(agen(split(data, 50)), max_bytes=5000) for _ in range(5))
    )
    assert {b.sha256 for b in blobs} == {hashlib.sha256(data).hexdigest()}
    assert sum(b.created for b in blobs) == 1
    assert len(files_under(store.blob_dir)) == 1
    assert files_under(store.tmp_dir) == []


async def test_limit_is_inclusive(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([b"a" * 50, b"b" * 50]), max_bytes=100)
    assert blob.size == 100


@pytest.mark.parametrize("chunk", [1, 10, 101, 500])
async def test_limit_exceeded(store: LocalFirmwareStore, chunk: int) -> None:
    closed = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            for _ in range(1000):
                yield b"z" * chunk
        finally:
            closed = True

    with pytest.raises(TooLarge) as info:
        await store.put(source(), max_bytes=100)
    assert info.value.limit == 100
    assert closed, "the source stream should be closed on rejection"
    assert_no_files(store)


async def test_source_error_mid_stream_leaves_nothing(store: LocalFirmwareStore) -> None:
    async def source() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"q" * 10  # several batches reach the temp file first
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(source(), max_bytes=10_000)
    assert_no_files(store)


async def test_cancel_while_waiting_for_source(store: LocalFirmwareStore) -> None:
    reached = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"c" * 10
        reached.set()
        await asyncio.Event().wait()  # client stalls forever
        yield b"never"

    task = asyncio.create_task(store.put(source(), max_bytes=10_000))
    await reached.wait()
    assert files_under(store.tmp_dir), "partial upload should be in tmp before cancelling"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_no_files(store)


async def test_cancel_during_threaded_write_waits_for_thread(
    store: LocalFirmwareStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    real_write = storage._write_all

    def slow_write(fd: int, data: bytes | bytearray | memoryview) -> None:
        started.set()
        release.wait(5)
        real_write(fd, data)
        finished.set()

    monkeypatch.setattr(storage, "_write_all", slow_write)
    task = asyncio.create_task(store.put(agen([b"w" * 64]), max_bytes=1000))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done(), "cleanup must not race the write still running in the thread"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
    assert_no_files(store)


RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes, position-dependent content


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1024),
        (0, 1),
        (1, None),
        (1023, None),
        (1023, 1024),
        (100, 907),
        (7, 14),
        (0, 0),
        (500, 500),
        (1024, None),
        (1024, 1024),
    ],
)
async def test_range_reads(store: LocalFirmwareStore, start: int, end: int | None) -> None:
    blob = await store.put(agen([RANGE_DATA]), max_bytes=len(RANGE_DATA))
    assert await read_all(store, blob.sha256, start, end) == RANGE_DATA[start:end]


async def test_range_chunks_are_bounded(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([RANGE_DATA]), max_bytes=len(RANGE_DATA))
    chunks = [c async for c in await store.open_range(blob.sha256, 3, 50)]
    assert all(0 < len(c) <= 7 for c in chunks)
    assert b"".join(chunks) == RANGE_DATA[3:50]


@pytest.mark.parametrize(("start", "end"), [(1025, None), (0, 1025), (1025, 2000), (2000, None)])
async def test_range_beyond_size(store: LocalFirmwareStore, start: int, end: int | None) -> None:
    blob = await store.put(agen([RANGE_DATA]), max_bytes=len(RANGE_DATA))
    with pytest.raises(RangeNotSatisfiable) as info:
        await store.open_range(blob.sha256, start, end)
    assert info.value.size == 1024
    assert "1024 bytes" in str(info.value)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 9)])
async def test_range_malformed(store: LocalFirmwareStore, start: int, end: int | None) -> None:
    blob = await store.put(agen([RANGE_DATA]), max_bytes=len(RANGE_DATA))
    with pytest.raises(ValueError):
        await store.open_range(blob.sha256, start, end)


async def test_missing_blob(store: LocalFirmwareStore) -> None:
    digest = hashlib.sha256(b"absent").hexdigest()
    assert store.path_of(digest) is None
    assert store.size_of(digest) is None
    assert not await store.exists(digest)
    assert not await store.delete(digest)
    with pytest.raises(BlobNotFound):
        await store.open_range(digest, 0, None)


async def test_delete(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([b"old firmware"]), max_bytes=100)
    assert await store.delete(blob.sha256)
    assert not await store.exists(blob.sha256)
    assert store.path_of(blob.sha256) is None
    assert files_under(store.blob_dir) == []
    assert not await store.delete(blob.sha256)
    again = await store.put(agen([b"old firmware"]), max_bytes=100)
    assert again.created is True


async def test_open_reader_survives_delete(store: LocalFirmwareStore) -> None:
    blob = await store.put(agen([RANGE_DATA]), max_bytes=len(RANGE_DATA))
    reader = await store.open_range(blob.sha256, 0, None)
    first = await anext(reader)
    await store.delete(blob.sha256)
    rest = b"".join([c async for c in reader])
    assert first + rest == RANGE_DATA


@pytest.mark.parametrize(
    "digest",
    [
        "../../etc/passwd",
        "A" * 64,
        hashlib.sha256(b"x").hexdigest().upper(),
        "ab" * 31,
        "a" * 65,
        "",
        "g" * 64,
        "../" + "a" * 61,
        "a" * 63 + "\n",
    ],
)
async def test_invalid_digest_rejected(store: LocalFirmwareStore, digest: str) -> None:
    with pytest.raises(ValueError):
        store.path_of(digest)
    with pytest.raises(ValueError):
        store.size_of(digest)
    with pytest.raises(ValueError):
        await store.exists(digest)
    with pytest.raises(ValueError):
        await store.delete(digest)
    with pytest.raises(ValueError):
        await store.open_range(digest, 0, None)


async def test_large_streamed_upload_uses_little_memory(tmp_path: Path) -> None:
    store = LocalFirmwareStore(tmp_path / "fw")  # default 1 MiB batches
    piece = os.urandom(64 * 1024)
    total = 20 * MiB
    expected = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        for i in range(total // len(piece)):
            chunk = piece[:1] + i.to_bytes(4, "big") + piece[5:]  # vary content per chunk
            expected.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        blob = await store.put(source(), max_bytes=total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    assert blob == StoredBlob(expected.hexdigest(), total, True)
    assert store.size_of(blob.sha256) == total
