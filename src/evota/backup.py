"""``evota backup``: a consistent copy of a running evota, database and data directory.

A backup is a directory laid out like a data directory, so restoring is copying it back:

- SQLite: ``evota.db`` written with SQLite's online backup API (a consistent snapshot
  while evota keeps writing; ``cp`` of a live WAL database misses what is in the WAL);
- PostgreSQL: ``evota.dump`` from ``pg_dump --format=custom`` (one snapshot of the whole
  database), for ``pg_restore``;
- every other file of the data directory: the token keys, the audit head key, the charger
  CA, firmware images, charger uploads.

The order is what keeps a restore verifiable: the audit anchor file is copied *before* the
database (an anchor newer than the database would report the restored log as truncated),
firmware images and uploads *after* it (every image the database names is then in the
copy; images are only ever added).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from evota.audit.log import ANCHOR_FILE
from evota.files import private_dir

__all__ = ["Backup", "BackupError", "backup", "find_pg_dump"]

SQLITE_FILE: Final = "evota.db"
DUMP_FILE: Final = "evota.dump"
#: Scratch and per-process files that are never part of a backup.
_SKIPPED_SUFFIXES: Final = ("-wal", "-shm", "-journal", ".node-lock")
#: The S3 store's cache (evota.firmware.s3_storage) holds copies of what is in the bucket.
_SKIPPED_DIRS: Final = (Path("firmware") / "tmp", Path("firmware-cache"))


class BackupError(Exception):
    """A backup that could not be made; the message is one line for the operator."""


@dataclass(frozen=True)
class Backup:
    out: Path
    database: Path  # evota.db or evota.dump in ``out``
    database_bytes: int
    files: int  # other files copied from the data directory


def find_pg_dump(explicit: Path | None = None) -> Path:
    """``pg_dump``: the given path, else the one on PATH, else the newest Debian install."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise BackupError(f"{explicit} is not an executable pg_dump")
        return explicit
    found = shutil.which("pg_dump")
    if found:
        return Path(found)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1]
    raise BackupError("pg_dump not found: install the PostgreSQL client or pass --pg-dump")


def backup(data_dir: Path, database_url: str, out: Path, pg_dump: Path | None = None) -> Backup:
    """Back up the evota of ``data_dir`` and ``database_url`` into the new directory ``out``."""
    data_dir = data_dir.resolve()
    out = out.resolve()
    if not data_dir.is_dir():
        raise BackupError(f"no data directory at {data_dir}")
    if out == data_dir or data_dir in out.parents:
        raise BackupError(f"{out} is inside the data directory: choose a directory outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not empty: choose a new directory")
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise BackupError("the database URL is not a SQLAlchemy URL") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        source = Path(url.database or "")
        if not url.database or url.database == ":memory:" or not source.is_file():
            raise BackupError(f"no SQLite database at {source}")
        skip = {source.resolve()}
    elif backend == "postgresql":
        dump_tool = find_pg_dump(pg_dump)
        skip = set()
    else:
        raise BackupError(f"cannot back up a {backend} database: SQLite or PostgreSQL only")
    created = not out.exists()
    private_dir(out)
    try:
        copied = 0
        anchors = data_dir / ANCHOR_FILE
        if anchors.is_file():  # before the database: see the module's docstring
            _copy(anchors, out / ANCHOR_FILE)
            copied += 1
        if backend == "sqlite":
            target = out / SQLITE_FILE
            _sqlite_backup(source, target)
        else:
            target = out / DUMP_FILE
            _pg_dump(dump_tool, url, target)
        for path in _data_files(data_dir, skip | {anchors}):
            _copy(path, out / path.relative_to(data_dir))
            copied += 1
    except BaseException:  # no half backup that looks like a whole one
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return Backup(out, target, target.stat().st_size, copied)


def _data_files(data_dir: Path, skip: set[Path]) -> Iterator[Path]:
    """Every regular file of the data directory but the database's own and scratch files."""
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        dirs[:] = [d for d in dirs if (here / d).relative_to(data_dir) not in _SKIPPED_DIRS]
        for name in sorted(files):
            path = here / name
            if path in skip or path.is_symlink() or not path.is_file():
                continue
            if name == SQLITE_FILE and here == data_dir:
                continue  # the default database file, when the database is elsewhere
            if name.startswith(SQLITE_FILE) and name.endswith(_SKIPPED_SUFFIXES):
                continue
            yield path


def _copy(source: Path, target: Path) -> None:
    private_dir(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    shutil.copystat(source, target)
    os.chmod(target, 0o600)


def _sqlite_backup(source: Path, target: Path) -> None:
    """SQLite's online backup API in one step: a snapshot consistent at one transaction."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from byte 0
    os.close(fd)
    try:
        src = sqlite3.connect(source, timeout=30)  # only read: the backup never writes it
        dst = sqlite3.connect(target)
        try:
            with dst:
                src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from None


def _pg_dump(tool: Path, url: URL, target: Path) -> None:
    """``pg_dump --format=custom``; the password goes through the environment, never argv."""
    env = {**os.environ}
    args = [str(tool), "--format=custom", "--no-owner", f"--file={target}"]
    if url.host:
        args.append(f"--host={url.host}")
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--username={url.username}")
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    args.append(f"--dbname={url.database or 'postgres'}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {tool}: {exc.strerror}") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise BackupError(f"pg_dump failed: {lines[-1] if lines else f'exit {done.returncode}'}")
