"""Content-addressed firmware blob storage.

Firmware images are large (up to a few GiB), uploaded once and then read many times by
chargers using HTTP Range requests. Keying blobs by their SHA-256 gives free
deduplication and lets a download be verified end to end, and hiding the layout behind
:class:`FirmwareStore` lets an S3-compatible backend replace the local one later.

:class:`LocalFirmwareStore` streams uploads to a temp file while hashing, so memory use
stays bounded whatever the image size, and publishes the blob with an atomic link/rename,
so a reader never sees a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = [
    "BlobNotFound",
    "FirmwareStore",
    "LocalFirmwareStore",
    "RangeNotSatisfiable",
    "StoreUnavailable",
    "StoredBlob",
    "TooLarge",
    "validate_sha256",
]

_T = TypeVar("_T")

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FILE_MODE = 0o600  # only the server reads blobs (the download listener is in-process)
_DIR_MODE = 0o700
_MiB = 1024 * 1024


class TooLarge(Exception):
    """The upload exceeded ``max_bytes`` (too large; the API maps it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


class StoreUnavailable(Exception):
    """The blob store cannot be reached or refused the request now (a remote backend is down,
    its credentials are wrong, the local cache is full); callers answer 503 and retry later.

    The message is safe to show: it never holds a credential.
    """


class BlobNotFound(LookupError):
    """No blob with this digest is stored (not found; the caller maps it)."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no firmware blob with sha256 {sha256}")
        self.sha256 = sha256


class RangeNotSatisfiable(ValueError):
    """The requested range lies (partly) beyond the blob (unsatisfiable; the caller maps it).

    ``size`` is kept so the caller can answer with ``Content-Range: bytes */size``.
    """

    def __init__(self, start: int, end: int | None, size: int) -> None:
        shown = "EOF" if end is None else str(end)
        super().__init__(f"range [{start}, {shown}) is outside blob of {size} bytes")
        self.start = start
        self.end = end
        self.size = size


@dataclass(frozen=True)
class StoredBlob:
    """Result of :meth:`FirmwareStore.put`.

    ``created`` is False when identical content was already stored (deduplicated), so
    callers can tell a re-upload from a new image.
    """

    sha256: str
    size: int
    created: bool


class FirmwareStore(Protocol):
    """Storage interface for firmware blobs, keyed by lowercase hex SHA-256.

    Every method taking a digest raises ``ValueError`` unless it is exactly 64 lowercase
    hex characters, so a digest taken from a URL can never address anything else.
    """

    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredBlob:
        """Store the streamed content; raise :class:`TooLarge` past ``max_bytes``.

        Nothing becomes visible unless the whole stream was consumed successfully.
        """
        ...

    def path_of(self, sha256: str) -> Path | None:
        """Local filesystem path of the blob (for sendfile-style serving), None if absent.

        Remote backends always return None.
        """
        ...

    async def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        ...

    async def delete(self, sha256: str) -> bool:
        """Remove the blob; True if it existed."""
        ...

    async def open_range(self, sha256: str, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Validate a byte range and return an iterator over ``[start, end)``.

        ``start`` is inclusive and ``end`` exclusive (Python slice style); ``end=None``
        means "to the end of the blob". An HTTP ``Range: bytes=a-b`` maps to
        ``start=a, end=b + 1``. ``start == end`` (or ``start == size`` with ``end=None``)
        is a valid empty range.

        This is a coroutine that returns the iterator, so all validation happens at the
        ``await`` (before response headers are sent): :class:`BlobNotFound` if absent,
        :class:`RangeNotSatisfiable` if ``start`` or ``end`` exceeds the size, and
        ``ValueError`` for a negative ``start`` or ``end < start``.
        """
        ...

    def size_of(self, sha256: str) -> int | None:
        """Size in bytes, None if absent."""
        ...

    def sweep_temp(self, older_than_seconds: float = 0) -> int:
        """Remove what uploads a crash interrupted left behind locally; return how many."""
        ...


async def batched(
    chunks: AsyncIterator[bytes], *, max_bytes: int, batch: int
) -> AsyncIterator[bytearray]:
    """``chunks`` regrouped into pieces of at least ``batch`` bytes (the last one shorter, if
    any bytes are left), so a store writes in large steps and holds about one piece.
    :class:`TooLarge` as soon as more than ``max_bytes`` arrived, checked before a chunk is
    buffered, after the source is closed (an upload stream stops being read)."""
    size = 0
    buf = bytearray()
    async for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        if size > max_bytes:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            raise TooLarge(max_bytes)
        buf += chunk
        if len(buf) >= batch:
            piece, buf = buf, bytearray()
            yield piece
    if buf:
        yield buf


def validate_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex chars, else raise ``ValueError``.

    This is the only thing standing between user input and a filesystem path.
    """
    if not isinstance(sha256, str) or _SHA256_RE.fullmatch(sha256) is None:
        raise ValueError(f"invalid sha256 hex digest: {sha256!r}")
    return sha256


async def _blocking(fn: Callable[..., _T], *args: object) -> _T:
    """Run ``fn`` in a worker thread, and on cancellation wait for it to finish.

    A thread cannot be interrupted; if we returned at once, cleanup (closing the fd,
    unlinking the temp file) would race the still-running write or read, and a closed
    fd number could even be reused by another file.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # mark retrieved; the cancellation is what we report
        raise


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` may write less than asked; loop until everything is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _make_dirs(path: Path, stop: Path) -> None:
    """Create ``path`` and missing parents below ``stop`` with mode 0700 regardless of umask."""
    missing: list[Path] = []
    current = path
    while current != stop and not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            continue  # a concurrent upload created it
        os.chmod(directory, _DIR_MODE)


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry (the rename) across a crash; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _TempUpload:
    """A temp file being filled and hashed; either published once or discarded."""

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
        self.fd: int | None = fd
        self.path = Path(name)
        self.hasher = hashlib.sha256()
        try:
            os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600
        except BaseException:
            self.discard()
            raise

    def write(self, data: bytearray) -> None:
        """Hash and write one batch (in a worker thread; hashlib releases the GIL)."""
        assert self.fd is not None
        self.hasher.update(data)
        _write_all(self.fd, data)

    def publish(self, store_root: Path, path_for: Callable[[str], Path]) -> tuple[str, bool]:
        """fsync, then atomically expose the file under its digest; return (hex, created)."""
        assert self.fd is not None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        digest = self.hasher.hexdigest()
        final = path_for(digest)
        _make_dirs(final.parent, store_root)
        try:
            # link() never replaces an existing blob and tells us whether we created it.
            os.link(self.path, final)
            created = True
        except FileExistsError:
            created = False
        except OSError:
            # Filesystem without hard links: fall back to an atomic rename.
            created = not final.exists()
            if created:
                os.replace(self.path, final)
        if created:
            _fsync_dir(final.parent)
        self.path.unlink(missing_ok=True)
        return digest, created

    def discard(self) -> None:
        """Close and remove the temp file; safe to call more than once."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class LocalFirmwareStore:
    """Content-addressed store on a local filesystem.

    Layout: ``root/sha256/ab/cd/<hex>`` for blobs (two fan-out levels keep directories
    small) and ``root/tmp/`` for uploads in progress. ``tmp`` is on the same filesystem
    as the blobs so publishing is an atomic link/rename.
    """

    def __init__(
        self,
        root: Path,
        *,
        write_batch_bytes: int = _MiB,
        read_chunk_bytes: int = _MiB,
    ) -> None:
        if write_batch_bytes <= 0 or read_chunk_bytes <= 0:
            raise ValueError("write_batch_bytes and read_chunk_bytes must be positive")
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "sha256"
        self._write_batch = write_batch_bytes
        self._read_chunk = read_chunk_bytes
        self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, _DIR_MODE)  # regardless of umask; tightens an older 0755 store
        _make_dirs(self.tmp_dir, self.root)
        _make_dirs(self.blob_dir, self.root)

    def sweep_temp(self, older_than_seconds: float = 0) -> int:
        """Remove temp files a crash left in ``tmp/``; return how many were removed.

        A process that dies mid-upload never reaches its cleanup, and nothing else would ever
        delete the partial file. Call this at start-up, before uploads are accepted (the
        default age of 0 removes everything); a positive ``older_than_seconds`` spares
        files modified more recently, for sweeping while uploads may be in progress.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if older_than_seconds > 0 and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # removed meanwhile
            removed += 1
        return removed

    def _path_for(self, sha256: str) -> Path:
        validate_sha256(sha256)
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredBlob:
        """Stream ``chunks`` to disk, hashing on the way; see :meth:`FirmwareStore.put`.

        Writes are batched (``write_batch_bytes``) and run in a worker thread so the event
        loop is never blocked on disk I/O, and at most about one batch is held in memory.
        The size limit is checked before a chunk is buffered, so an oversized upload is
        rejected without writing past the limit.
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        upload = _TempUpload(self.tmp_dir)
        try:
            size = 0
            async for piece in batched(chunks, max_bytes=max_bytes, batch=self._write_batch):
                size += len(piece)
                await _blocking(upload.write, piece)
            digest, created = await _blocking(upload.publish, self.blob_dir, self._path_for)
        finally:
            # After a successful publish the temp name is already gone; otherwise this
            # removes the partial file on error or cancellation.
            upload.discard()
        return StoredBlob(sha256=digest, size=size, created=created)

    def path_of(self, sha256: str) -> Path | None:
        """Path of the stored blob, None if absent."""
        path = self._path_for(sha256)
        return path if path.is_file() else None

    async def exists(self, sha256: str) -> bool:
        """Whether the blob is stored (a single stat; cheap enough for the loop)."""
        return self.path_of(sha256) is not None

    async def delete(self, sha256: str) -> bool:
        """Remove the blob; True if it existed.

        Fan-out directories are left in place: removing them could race a concurrent
        upload publishing into the same directory. Readers that already opened the blob
        keep reading the old inode until they finish.
        """
        path = self._path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def size_of(self, sha256: str) -> int | None:
        """Size in bytes, None if absent."""
        path = self._path_for(sha256)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    async def open_range(self, sha256: str, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Validate and open ``[start, end)``; see :meth:`FirmwareStore.open_range`.

        The file is opened here, so a later ``delete`` cannot break a download that has
        already started. Iterate the result to completion or ``aclose()`` it to release
        the file descriptor promptly.
        """
        path = self._path_for(sha256)
        if start < 0:
            raise ValueError(f"range start must be >= 0, got {start}")
        if end is not None and end < start:
            raise ValueError(f"range end {end} is before start {start}")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        try:
            size = os.fstat(fd).st_size
            if start > size or (end is not None and end > size):
                raise RangeNotSatisfiable(start, end, size)
        except BaseException:
            os.close(fd)
            raise
        return _RangeReader(fd, start, size if end is None else end, self._read_chunk)


class _RangeReader:
    """Async iterator over ``[start, end)`` of an open fd, closing it when done.

    A class rather than an async generator so the fd is also released when the iterator
    is dropped without ever being iterated (a generator's ``finally`` would never run).
    """

    def __init__(self, fd: int, start: int, end: int, chunk: int) -> None:
        self._fd: int | None = fd
        self._offset = start
        self._end = end
        self._chunk = chunk

    def __aiter__(self) -> _RangeReader:
        return self

    async def __anext__(self) -> bytes:
        fd = self._fd
        if fd is None or self._offset >= self._end:
            self._close()
            raise StopAsyncIteration
        try:
            want = min(self._chunk, self._end - self._offset)
            data = await _blocking(os.pread, fd, want, self._offset)
            if not data:  # cannot happen for an immutable blob; avoid spinning
                raise OSError(f"unexpected end of blob at offset {self._offset}")
        except BaseException:
            self._close()
            raise
        self._offset += len(data)
        return data

    async def aclose(self) -> None:
        """Release the file descriptor early (e.g. client disconnected)."""
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self._close()
