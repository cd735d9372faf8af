"""Firmware images and charger files in an S3-compatible object store, served from a local cache.

With ``EVOTA_FIRMWARE_STORE=s3://bucket/prefix`` every node of a cluster sees the same images:
an upload streams into the bucket and any node's download server can serve it. The layout
under the prefix::

    firmware/sha256/<hex>   an image, content-addressed like the local store
    firmware/tmp/<uuid>     an upload in progress (its digest is known only at the end)
    uploads/<file id>       a charger's diagnostics or log file (evota.control.uploads)

Uploads go part by part (multipart, :data:`PART_BYTES` each), hashed on the way, into a
temporary key; once complete the object is copied server-side to its digest's key and the
temporary one deleted. A failed or cancelled upload aborts its multipart upload, so nothing
becomes visible; a refused one is deleted by ``intake.discard`` like a local blob.

The download server sends bodies with ``os.sendfile`` from a path, so it reads images from
:class:`FirmwareCache`, a bounded directory on local disk keyed by SHA-256: a missing image is
fetched once (concurrent requests wait for the same fetch), hashed while written and only
served when the digest matches. A cached file is hashed again when its size, mtime or inode
changed since it was checked (or on first use after a restart), so a damaged copy is
detected, removed and fetched again. When a new image needs room, the least recently used
images that no download is reading are removed.

boto3 is synchronous: every call runs in a worker thread (the download server's lookups
already are in one). Its errors become :class:`~evota.firmware.storage.StoreUnavailable` with
a message that names what failed and never a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog

from evota import metrics
from evota.firmware.storage import (
    BlobNotFound,
    RangeNotSatisfiable,
    StoredBlob,
    StoreUnavailable,
    _blocking,
    batched,
    validate_sha256,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "PART_BYTES",
    "CacheFull",
    "CachedImage",
    "FirmwareCache",
    "S3Config",
    "S3Files",
    "S3FirmwareStore",
    "S3Location",
    "parse_store_url",
]

log = structlog.get_logger("evota.firmware.s3_storage")

_T = TypeVar("_T")
_MiB: Final = 1024 * 1024
PART_BYTES: Final = 8 * _MiB  # S3 parts are >= 5 MiB except the last; one part is in memory
READ_BYTES: Final = _MiB  # per read from a GET body (cache fill, open_range)
_COPY_MULTIPART: Final = 4 * 1024 * _MiB  # CopyObject takes up to 5 GiB; beyond, part copies
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")


# -- the store's address (pure) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Location:
    """Bucket and key prefix ('' or ending in '/') of ``s3://bucket/prefix``."""

    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_store_url(text: str) -> S3Location | None:
    """``local`` (None) or ``s3://BUCKET[/PREFIX]``; ``ValueError`` in one line otherwise."""
    if text == "local":
        return None
    if not text.startswith("s3://"):
        raise ValueError(f"must be 'local' or s3://BUCKET[/PREFIX], not {text[:80]!r}")
    bucket, _, prefix = text[5:].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket[:80]!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots "
            "and hyphens, starting and ending with a letter or digit)"
        )
    prefix = prefix.strip("/")
    if prefix and (
        len(prefix) > 200
        or not all(_PREFIX_PART.fullmatch(p) and p not in (".", "..") for p in prefix.split("/"))
    ):
        raise ValueError(
            "the prefix after the bucket must be path segments of letters, digits, '.', '_' "
            "and '-' (at most 200 characters)"
        )
    return S3Location(bucket, f"{prefix}/" if prefix else "")


@dataclass(frozen=True, slots=True)
class S3Config:
    """How to reach the bucket. Unset credentials: boto3's chain (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role)."""

    location: S3Location
    endpoint_url: str | None = None  # MinIO, moto, Ceph...; None: AWS
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 3

    def __repr__(self) -> str:  # never the secret
        return f"S3Config({self.location}, endpoint_url={self.endpoint_url!r})"

    def client(self) -> S3Client:
        """A boto3 client (thread-safe; one per store) with bounded timeouts and retries."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.attempts, "mode": "standard"},
            # MinIO and moto serve buckets by path; AWS picks virtual hosts itself.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            max_pool_connections=32,
        )
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=config,
        )


# -- boto3 calls, their errors made one kind ----------------------------------------------------


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return str(error.get("Code")) if error.get("Code") is not None else None
    return None


def _missing(exc: BaseException) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound")


def _unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    """One line naming the call and the cause; no endpoint, key or secret in it."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        why = "no credentials (set EVOTA_S3_ACCESS_KEY_ID/SECRET_ACCESS_KEY or AWS_*)"
    elif isinstance(exc, ClientError):
        why = f"the object store answered {_code(exc) or 'an error'}"
    else:
        why = f"the object store cannot be reached ({type(exc).__name__})"
    return StoreUnavailable(f"firmware store unavailable: {what}: {why}")


def _s3_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import S3CopyFailedError

    return (BotoCoreError, ClientError, S3CopyFailedError)


class S3Files:
    """Blocking object calls under one location (run them in worker threads), and the
    streaming multipart upload every write goes through."""

    def __init__(self, client: S3Client, location: S3Location) -> None:
        self.client = client
        self.location = location
        self.bucket = location.bucket
        self._errors = _s3_errors()

    def _call(self, what: str, fn: Callable[..., _T], **kwargs: Any) -> _T:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except self._errors as exc:
            raise _unavailable(exc, what) from None

    def head(self, key: str) -> int | None:
        """The object's size, None if there is none."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._errors as exc:
            if _missing(exc):
                return None
            raise _unavailable(exc, "HEAD") from None

    def delete(self, key: str) -> None:
        self._call("DELETE", self.client.delete_object, Key=key)

    def get(self, key: str, byte_range: str | None = None) -> tuple[int, Any] | None:
        """``(size of the body, its stream)``; None if there is no such object."""
        kwargs: dict[str, Any] = {"Key": key}
        if byte_range is not None:
            kwargs["Range"] = byte_range
        try:
            answer = self.client.get_object(Bucket=self.bucket, **kwargs)
        except self._errors as exc:
            if _missing(exc):
                return None
            raise _unavailable(exc, "GET") from None
        return int(answer["ContentLength"]), answer["Body"]

    def read(self, body: Any, n: int) -> bytes:
        try:
            return bytes(body.read(n))
        except self._errors as exc:
            raise _unavailable(exc, "GET body") from None
        except OSError as exc:  # the connection broke mid-body
            raise StoreUnavailable(
                f"firmware store unavailable: GET body: {type(exc).__name__}"
            ) from None

    def copy(self, source: str, target: str) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=_COPY_MULTIPART, use_threads=False)
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": source}, self.bucket, target, Config=config
            )
        except self._errors as exc:
            raise _unavailable(exc, "COPY") from None

    async def upload(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> tuple[str, int]:
        """Stream ``chunks`` to ``key``; return (sha256 hex, size). :class:`TooLarge` past
        ``max_bytes``. One part is held in memory; a failure, a refusal or a cancellation
        aborts the multipart upload, so ``key`` keeps what it held before (or stays absent)."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        hasher = hashlib.sha256()
        size = 0
        buf = bytearray()  # the tail, shorter than a part
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for piece in batched(chunks, max_bytes=max_bytes, batch=PART_BYTES):
                size += len(piece)
                if len(piece) < PART_BYTES:
                    buf = piece
                    continue
                if upload_id is None:
                    upload_id = await _blocking(self._create, key)
                parts.append(
                    await _blocking(self._part, key, upload_id, len(parts) + 1, piece, hasher)
                )
            if upload_id is None:  # small: one PUT
                await _blocking(self._put, key, buf, hasher)
            else:
                if buf:
                    parts.append(
                        await _blocking(self._part, key, upload_id, len(parts) + 1, buf, hasher)
                    )
                await _blocking(self._complete, key, upload_id, parts)
                upload_id = None
        except BaseException:
            if upload_id is not None:
                try:
                    await _blocking(self._abort, key, upload_id)
                except StoreUnavailable as exc:  # a bucket lifecycle rule ends it (docs)
                    log.warning("multipart upload not aborted", key=key, why=str(exc))
            raise
        return hasher.hexdigest(), size

    def _create(self, key: str) -> str:
        return str(self._call("upload", self.client.create_multipart_upload, Key=key)["UploadId"])

    def _part(
        self, key: str, upload_id: str, number: int, data: bytearray, hasher: Any
    ) -> dict[str, Any]:
        hasher.update(data)
        answer = self._call(
            "upload",
            self.client.upload_part,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(data),
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def _put(self, key: str, data: bytearray, hasher: Any) -> None:
        hasher.update(data)
        self._call("upload", self.client.put_object, Key=key, Body=bytes(data))

    def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._call(
            "upload",
            self.client.complete_multipart_upload,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )

    def _abort(self, key: str, upload_id: str) -> None:
        self._call("abort", self.client.abort_multipart_upload, Key=key, UploadId=upload_id)

    async def stream(self, key: str) -> AsyncIterator[bytes] | None:
        """The whole object as chunks read in worker threads; None if absent."""
        got = await _blocking(self.get, key)
        if got is None:
            return None
        return _BodyReader(self, got[1], got[0])


class _BodyReader:
    """An S3 GET body as an async iterator of :data:`READ_BYTES` chunks; closed when done."""

    def __init__(self, files: S3Files, body: Any, remaining: int) -> None:
        self._files = files
        self._body: Any = body
        self._remaining = remaining

    def __aiter__(self) -> _BodyReader:
        return self

    async def __anext__(self) -> bytes:
        if self._body is None or self._remaining <= 0:
            await self.aclose()
            raise StopAsyncIteration
        try:
            data = await _blocking(self._files.read, self._body, min(READ_BYTES, self._remaining))
            if not data:
                raise StoreUnavailable("firmware store unavailable: GET body ended early")
        except BaseException:
            await self.aclose()
            raise
        self._remaining -= len(data)
        return data

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()


# -- the firmware store ----------------------------------------------------------------------------


class S3FirmwareStore:
    """:class:`~evota.firmware.storage.FirmwareStore` in a bucket, with a local serving cache.

    ``path_of`` is always None (the protocol's remote case): the download server reads
    :attr:`cache` instead.
    """

    def __init__(self, config: S3Config, cache_dir: Path, cache_max_bytes: int) -> None:
        self.location = config.location
        self.files = S3Files(config.client(), config.location)
        self.cache = FirmwareCache(cache_dir, cache_max_bytes, self._fetch)

    def _key(self, sha256: str) -> str:
        return self.location.key("firmware", "sha256", validate_sha256(sha256))

    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredBlob:
        """Stream into a temporary key, then copy to the digest's key unless it exists."""
        tmp = self.location.key("firmware", "tmp", uuid.uuid4().hex)
        digest, size = await self.files.upload(tmp, chunks, max_bytes=max_bytes)
        final = self._key(digest)
        try:
            created = await _blocking(self.files.head, final) is None
            if created:
                await _blocking(self.files.copy, tmp, final)
        finally:
            try:
                await _blocking(self.files.delete, tmp)
            except StoreUnavailable as exc:  # the lifecycle rule on firmware/tmp/ removes it
                log.warning("temporary upload object not deleted", key=tmp, why=str(exc))
        return StoredBlob(sha256=digest, size=size, created=created)

    def path_of(self, sha256: str) -> Path | None:
        validate_sha256(sha256)
        return None

    async def exists(self, sha256: str) -> bool:
        return await _blocking(self.files.head, self._key(sha256)) is not None

    async def delete(self, sha256: str) -> bool:
        key = self._key(sha256)
        if await _blocking(self.files.head, key) is None:
            return False
        await _blocking(self.files.delete, key)
        return True

    def size_of(self, sha256: str) -> int | None:
        """A HEAD request: blocking, call it from a worker thread."""
        return self.files.head(self._key(sha256))

    def sweep_temp(self, older_than_seconds: float = 0) -> int:
        """The cache's unfinished fills (local, this node's own). Unfinished uploads in the
        bucket may be another node's in progress: a lifecycle rule ends them (docs)."""
        return self.cache.sweep_temp()

    async def open_range(self, sha256: str, start: int, end: int | None) -> AsyncIterator[bytes]:
        key = self._key(sha256)
        if start < 0:
            raise ValueError(f"range start must be >= 0, got {start}")
        if end is not None and end < start:
            raise ValueError(f"range end {end} is before start {start}")
        size = await _blocking(self.files.head, key)
        if size is None:
            raise BlobNotFound(sha256)
        if start > size or (end is not None and end > size):
            raise RangeNotSatisfiable(start, end, size)
        stop = size if end is None else end
        if stop == start:
            return _empty()
        got = await _blocking(self.files.get, key, f"bytes={start}-{stop - 1}")
        if got is None:
            raise BlobNotFound(sha256)
        return _BodyReader(self.files, got[1], got[0])

    def _fetch(self, sha256: str) -> tuple[int, Iterator[bytes], Callable[[], None]] | None:
        """The cache's source: the object's size, its chunks and how to close it."""
        got = self.files.get(self._key(sha256))
        if got is None:
            return None
        size, body = got

        def chunks() -> Iterator[bytes]:
            left = size
            while left > 0:
                data = self.files.read(body, min(READ_BYTES, left))
                if not data:
                    raise StoreUnavailable("firmware store unavailable: GET body ended early")
                left -= len(data)
                yield data

        return size, chunks(), body.close


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


# -- the local serving cache --------------------------------------------------------------------


class CacheFull(StoreUnavailable):
    """No room for an image: it is larger than the cache, or every cached image is being
    downloaded (the download server answers 503 and the charger retries)."""


@dataclass(frozen=True, slots=True)
class CachedImage:
    """A verified local copy, pinned until ``release`` is called (once)."""

    path: Path
    size: int
    release: Callable[[], None]


@dataclass(slots=True)
class _Entry:
    size: int
    used: int  # a counter: larger is more recent
    pins: int = 0
    verified: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) when last hashed


Source = Callable[[str], "tuple[int, Iterator[bytes], Callable[[], None]] | None"]


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


class FirmwareCache:
    """Verified local copies of remote images, bounded in bytes; thread-safe and blocking
    (the download server's threads call :meth:`lookup`). See the module docstring."""

    def __init__(self, root: Path, max_bytes: int, source: Source) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root)
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.max_bytes = max_bytes
        self._source = source
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reserved = 0  # bytes of fills in progress
        self._fills: dict[str, list[Any]] = {}  # sha256 -> [lock, waiters]
        self._clock = itertools.count()
        self.fetches = 0  # images fetched from the store
        self.damaged = 0  # cached copies found damaged and removed
        self.evicted = 0
        for directory in (self.root, self.blob_dir, self.tmp_dir):
            directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(directory, _DIR_MODE)
        self.sweep_temp()
        self._scan()

    # -- start ---------------------------------------------------------------------------

    def sweep_temp(self) -> int:
        """Remove fills a crash interrupted (this node's own directory)."""
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def _scan(self) -> None:
        """Copies from an earlier run: known, oldest first, checked again before use."""
        found: list[tuple[float, str, int]] = []
        for entry in os.scandir(self.blob_dir):
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                validate_sha256(entry.name)
            except ValueError:
                continue
            st = entry.stat(follow_symlinks=False)
            found.append((st.st_mtime, entry.name, st.st_size))
        for _mtime, sha256, size in sorted(found):
            self._entries[sha256] = _Entry(size, next(self._clock))
        with self._lock:
            self._make_room(0)

    # -- reads -----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values()) + self._reserved

    def cached(self) -> set[str]:
        with self._lock:
            return set(self._entries)

    def path_for(self, sha256: str) -> Path:
        return self.blob_dir / validate_sha256(sha256)

    def lookup(self, sha256: str) -> CachedImage | None:
        """A verified copy of the image, fetched if needed; None if the store has none.

        Raises :class:`~evota.firmware.storage.StoreUnavailable` (the store is down, the
        stored object is damaged) or :class:`CacheFull`.
        """
        path = self.path_for(sha256)
        with self._exclusive(sha256):
            entry = self._pin(sha256)
            if entry is not None and not self._check(sha256, path, entry):
                entry = None
            if entry is None:
                entry = self._fill(sha256, path)
                if entry is None:
                    return None
        return CachedImage(path, entry.size, _Release(self, entry))

    def _pin(self, sha256: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(sha256)
            if entry is not None:
                entry.pins += 1
                entry.used = next(self._clock)
            return entry

    def unpin(self, entry: _Entry) -> None:
        with self._lock:
            entry.pins -= 1

    def _check(self, sha256: str, path: Path, entry: _Entry) -> bool:
        """Whether the pinned copy is intact: unchanged since hashed, or hashed again now."""
        try:
            st = os.stat(path)
            if entry.verified == _identity(st):
                return True
            ok = _file_sha256(path) == sha256
        except FileNotFoundError:
            ok = False
        if ok:
            entry.verified = _identity(st)
            entry.size = st.st_size
            return True
        log.warning("firmware cache copy damaged; fetching it again", sha256=sha256)
        metrics.FIRMWARE_CACHE.labels("damaged").inc()
        with self._lock:
            self.damaged += 1
            entry.pins -= 1
            self._forget(sha256, entry)
        return False

    def _fill(self, sha256: str, path: Path) -> _Entry | None:
        got = self._source(sha256)
        if got is None:
            return None
        size, chunks, close = got
        try:
            with self._lock:
                self._make_room(size)
                self._reserved += size
            try:
                entry = self._write(sha256, path, size, chunks)
            finally:
                with self._lock:
                    self._reserved -= size
        finally:
            with contextlib.suppress(Exception):
                close()
        return entry

    def _write(self, sha256: str, path: Path, size: int, chunks: Iterator[bytes]) -> _Entry:
        fd, name = _mkstemp(self.tmp_dir)
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as f:
                for data in chunks:
                    digest.update(data)
                    f.write(data)
                    written += len(data)
                f.flush()
                os.fsync(f.fileno())
            if written != size or digest.hexdigest() != sha256:
                log.error("stored firmware object damaged", sha256=sha256, size=written)
                raise StoreUnavailable(
                    f"firmware store unavailable: the stored object {sha256[:12]}... does not "
                    "match its SHA-256"
                )
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        st = os.stat(path)
        entry = _Entry(size, 0, pins=1, verified=_identity(st))
        metrics.FIRMWARE_CACHE.labels("fetched").inc()
        with self._lock:
            self.fetches += 1
            entry.used = next(self._clock)
            self._entries[sha256] = entry
        log.info("firmware image cached", sha256=sha256, size=size)
        return entry

    # -- room (under self._lock) ------------------------------------------------------------

    def _make_room(self, size: int) -> None:
        if size > self.max_bytes:
            metrics.FIRMWARE_CACHE.labels("full").inc()
            raise CacheFull(
                f"the image ({size} bytes) is larger than the firmware cache "
                f"(EVOTA_FIRMWARE_CACHE_MAX_BYTES={self.max_bytes})"
            )
        used = sum(e.size for e in self._entries.values()) + self._reserved
        if used + size <= self.max_bytes:
            return
        for sha256, entry in sorted(self._entries.items(), key=lambda item: item[1].used):
            if entry.pins > 0:
                continue
            self._forget(sha256, entry)
            self.evicted += 1
            metrics.FIRMWARE_CACHE.labels("evicted").inc()
            used -= entry.size
            if used + size <= self.max_bytes:
                return
        metrics.FIRMWARE_CACHE.labels("full").inc()
        raise CacheFull(
            "the firmware cache is full of images being downloaded "
            f"(EVOTA_FIRMWARE_CACHE_MAX_BYTES={self.max_bytes})"
        )

    def _forget(self, sha256: str, entry: _Entry) -> None:
        """Drop ``entry`` and its file (readers that opened it keep their inode)."""
        if self._entries.get(sha256) is entry:
            del self._entries[sha256]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.blob_dir / sha256)

    @contextlib.contextmanager
    def _exclusive(self, sha256: str) -> Iterator[None]:
        """One thread at a time checks or fills a given image; other images go on."""
        with self._lock:
            slot = self._fills.get(sha256)
            if slot is None:
                slot = self._fills[sha256] = [threading.Lock(), 0]
            slot[1] += 1
        try:
            with slot[0]:
                yield
        finally:
            with self._lock:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._fills[sha256]


class _Release:
    """Unpins once, however often it is called."""

    def __init__(self, cache: FirmwareCache, entry: _Entry) -> None:
        self._cache: FirmwareCache | None = cache
        self._entry = entry

    def __call__(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.unpin(self._entry)


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    fd, name = tempfile.mkstemp(dir=directory, prefix="fill-", suffix=".part")
    os.fchmod(fd, _FILE_MODE)
    return fd, name
