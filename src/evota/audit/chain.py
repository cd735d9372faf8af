"""The audit log's hash chain: pure functions to seal entries and find where a chain breaks.

Each entry carries the SHA-256 of its own canonical form, which includes the previous
entry's hash, so editing, deleting or reordering any entry changes every hash after it.
``verify`` walks a chain once and names the first entry where it breaks and how, which is
what ``evota audit verify`` and ``GET /api/v1/audit/verify`` report. Storage and the API
come with the operators issue; this module is the part that must be exactly right.

Canonical form: JSON with sorted keys, no whitespace, UTF-8, timestamps as ISO 8601 UTC
with microseconds, so the same entry hashes the same on every platform and database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    outcome: str
    target: str | None = None
    reason: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""


@dataclass(frozen=True, slots=True)
class Break:
    """Where a chain stops being trustworthy: ``seq`` of the first bad entry and why."""

    seq: int
    position: int  # index in the sequence handed to verify
    reason: str  # edited | missing | reordered | bad_start


def _timestamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry: Entry) -> bytes:
    """The bytes that are hashed: every field but ``hash``."""
    data: dict[str, Any] = {}
    for f in fields(entry):
        if f.name == "hash":
            continue
        value = getattr(entry, f.name)
        data[f.name] = _timestamp(value) if isinstance(value, datetime) else value
    data["detail"] = dict(entry.detail)
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest(entry: Entry) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def seal(previous: Entry | None, entry: Entry) -> Entry:
    """``entry`` linked after ``previous`` (None for the first), with its hash set."""
    linked = replace(
        entry,
        seq=previous.seq + 1 if previous else 1,
        prev_hash=previous.hash if previous else GENESIS,
        hash="",
    )
    return replace(linked, hash=digest(linked))


def verify(entries: Iterable[Entry]) -> tuple[int, Break | None]:
    """Check a whole chain, from entry 1, in order; returns (entries checked, first break).

    Deleting the newest entries leaves a shorter valid chain: that is caught by comparing
    with the head the store keeps (count and last hash), not here.

    ``edited``: the entry's content no longer matches its hash. ``missing``: the sequence
    skips a number that appears nowhere (an entry was deleted). ``reordered``: the next
    number is stored later (rows were moved or their sequence numbers swapped), or numbers
    go backwards or repeat. ``bad_start``: the first entry is not linked to the genesis
    hash although it claims to be the first. An entry whose content matches its hash but
    whose ``prev_hash`` is not the previous hash was re-linked after a deletion or edit
    before it: ``edited``.
    """
    items = list(entries)
    seqs = {e.seq for e in items}
    previous: Entry | None = None
    count = 0
    for position, entry in enumerate(items):
        count += 1
        expected = previous.seq + 1 if previous else 1
        if entry.seq != expected:
            # The expected entry is elsewhere in storage: the order was changed. Otherwise
            # it is gone (or the sequence repeats, which is a reordering too).
            if expected in seqs or (previous is not None and entry.seq <= previous.seq):
                return count, Break(expected, position, "reordered")
            return count, Break(expected, position, "missing")
        if digest(entry) != entry.hash:
            return count, Break(entry.seq, position, "edited")
        if previous is None:
            if entry.prev_hash != GENESIS:
                return count, Break(entry.seq, position, "bad_start")
        elif entry.prev_hash != previous.hash:
            return count, Break(entry.seq, position, "edited")
        previous = entry
    return count, None
