"""Files evota keeps for itself are private to the server's user.

The data directory holds the database, the token and audit keys, charger uploads and the
firmware store: nobody else on the host needs to read any of it. Directories are made 0700
and files 0600 whatever the umask (``mkdir``/``open`` modes are masked by it, so the mode is
set explicitly), and a data directory or SQLite file left group- or world-readable by an
earlier version is tightened at start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "private_sqlite"]

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700; return it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (no-op if it is missing)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)


def private_sqlite(url: str) -> None:
    """Create the SQLite file of ``url`` 0600 before SQLite does (it would use 0644).

    SQLite gives its -wal, -shm and -journal files the database file's mode, so they follow.
    Existing files are tightened. Other databases and in-memory SQLite are left alone.
    """
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:") or parsed.query.get("uri"):
        return  # URI filenames: SQLite owns the parsing; nothing to pre-create reliably
    path = Path(database)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # an empty file is a valid empty SQLite database
    for suffix in ("", "-wal", "-shm", "-journal"):
        private_file(path.with_name(path.name + suffix))
