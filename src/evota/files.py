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
import re
import secrets
import stat
from pathlib import Path
from typing import Final, overload

from sqlalchemy.engine import make_url

from evota.signed_tokens import MIN_KEY_BYTES, new_key

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "load_key",
    "private_dir",
    "private_file",
    "private_sqlite",
    "safe_filename",
]

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
MAX_FILENAME_CHARS: Final = 255  # the filename columns (firmware images, charger files)

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


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


def load_key(path: Path) -> bytes:
    """A token HMAC key kept in the data directory, created (0600) on first use.

    The one loader for every signing key file (download and upload tokens). A file too
    short to be a key (an interrupted write) is replaced: nothing can have been signed with
    it. A new key is written whole to a temporary file and then linked into place, so two
    processes starting together agree on one key and never read half of one.
    """
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= MIN_KEY_BYTES:
        return key
    fresh = new_key()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(fresh)
        if key:
            os.replace(tmp, path)  # an unusable file
        else:
            os.link(tmp, path)  # only if no other process made one meanwhile
    except FileExistsError:
        return load_key(path)  # another process won: its key is complete (linked whole)
    finally:
        tmp.unlink(missing_ok=True)
    return fresh


@overload
def safe_filename(raw: str | None, fallback: str) -> str: ...
@overload
def safe_filename(raw: str | None, fallback: None = None) -> str | None: ...


def safe_filename(raw: str | None, fallback: str | None = None) -> str | None:
    """A harmless label for a file someone else named: the basename only, a conservative
    alphabet (anything else becomes ``_``), no leading or trailing dots, at most 255
    characters; ``fallback`` when nothing is left.

    The one rule for every name a client sends (firmware uploads, charger uploads). It is
    only ever shown and offered as a download name; storage paths never use it.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip("._")[:MAX_FILENAME_CHARS]
    return name or fallback
