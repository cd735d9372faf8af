"""The audit log's hash chain: pure functions to seal entries and find where a chain breaks.

Each entry carries the SHA-256 of its own canonical form, which includes the previous
entry's hash and (since canonical form 2) the ids of the chargers it concerns, so editing,
deleting, reordering or unlinking any entry changes what the chain computes. The newest
entry is also kept as a *head* (seq, hash) under an HMAC whose key lives outside the
database, so deleting the newest entries cannot be hidden by someone who can only write the
database. ``verify`` walks a chain once and names the first entry where it breaks and how;
``check_head`` and ``check_anchor`` compare its end with the sealed head and the latest
external anchor. ``evota audit verify`` and ``GET /api/v1/audit/verify`` report the result.

Canonical form: JSON with sorted keys, no whitespace, UTF-8, timestamps as ISO 8601 UTC
with microseconds, so the same entry hashes the same on every platform and database.
Version 1 (entries sealed before evota 0007's migration) hashes every field but ``hash``;
version 2 adds ``v`` and the sorted ``chargers``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
VERSION = 2
"""The canonical form new entries are sealed with."""


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
    v: int = VERSION
    chargers: tuple[str, ...] = ()
    linked: tuple[str, ...] | None = None
    """What the link table says (not hashed; None = not read): must equal ``chargers``."""


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry as sealed with the head key (``mac``), or as anchored outside."""

    seq: int
    hash: str
    mac: str = ""


@dataclass(frozen=True, slots=True)
class Break:
    """Where a chain stops being trustworthy: ``seq`` of the first bad entry and why.

    For ``truncated``, ``seq`` is the first entry that is gone and ``head`` the sequence
    number the sealed head (or an anchor) says the log reached."""

    seq: int
    position: int  # index in the sequence handed to verify
    reason: str  # edited | missing | reordered | bad_start | unlinked | truncated | ...
    head: int | None = None
    source: str = "head"  # truncated: which record says so (head | anchor)


EXPLAIN = {
    "edited": "entry {seq} does not match its hash or its predecessor: it was changed",
    "missing": "entry {seq} is missing: it was deleted",
    "reordered": "entry {seq} is out of order: entries were reordered",
    "bad_start": "entry {seq} claims to be the first but is not linked to the start",
    "unlinked": "entry {seq}: charger links changed",
    "truncated": "audit log truncated after entry {last}: {source} says {head}",
    "unsealed": "entries after {head} were appended without the head key (head says {head})",
    "head_forged": "the stored head (entry {head}) fails its MAC: it was written without the key",
    "head_missing": "the sealed head is missing from the database: it was deleted",
    "head_mismatch": "entry {seq} does not match the sealed head: it was replaced",
    "checkpoint_forged": "the checkpoint at entry {head} fails its MAC: it was written without "
    "the key",
}


def explain(broken: Break) -> str:
    """One line naming what happened, for the CLI and the API."""
    return EXPLAIN[broken.reason].format(
        seq=broken.seq, last=broken.seq - 1, head=broken.head, source=broken.source
    )


def _timestamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry: Entry) -> bytes:
    """The bytes that are hashed. Version 1: every stored field but ``hash``; version 2
    adds ``v`` and the sorted charger ids, so unlinking an entry changes its hash."""
    data: dict[str, Any] = {
        "seq": entry.seq,
        "at": _timestamp(entry.at),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "outcome": entry.outcome,
        "target": entry.target,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "detail": dict(entry.detail),
        "prev_hash": entry.prev_hash,
    }
    if entry.v != 1:
        data["v"] = entry.v
        data["chargers"] = sorted(entry.chargers)
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
        v=VERSION,
        chargers=tuple(sorted(set(entry.chargers))),
        linked=None,
    )
    return replace(linked, hash=digest(linked))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an archived and pruned prefix of the log ended: entries ``prev_seq``+1 ..
    ``seq`` are in the archive named ``archive`` (the SHA-256 of its body), and the chain
    in the database goes on after ``seq``/``hash``. ``mac`` binds all of it to the key."""

    prev_seq: int
    prev_hash: str
    seq: int
    hash: str
    archive: str
    archive_sha256: str
    mac: str = ""

    @property
    def start(self) -> Head:
        """What the remaining chain links to."""
        return Head(self.seq, self.hash)


def checkpoint_mac(key: bytes, cp: Checkpoint) -> str:
    message = (
        f"evota-audit-checkpoint:{cp.prev_seq}:{cp.prev_hash}:{cp.seq}:{cp.hash}:"
        f"{cp.archive}:{cp.archive_sha256}"
    ).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal_checkpoint(key: bytes, cp: Checkpoint) -> Checkpoint:
    return replace(cp, mac=checkpoint_mac(key, cp))


def checkpoint_valid(cp: Checkpoint, key: bytes) -> bool:
    return hmac.compare_digest(cp.mac, checkpoint_mac(key, cp))


def check_checkpoints(checkpoints: Sequence[Checkpoint], key: bytes | None) -> Break | None:
    """Checkpoints (oldest first) must each follow the one before (the first: the start of
    the log) and, when ``key`` is known, carry its MAC: a pruned prefix without a valid
    checkpoint cannot pass for an archived one."""
    prev_seq, prev_hash = 0, GENESIS
    for position, cp in enumerate(checkpoints):
        if key is not None and not checkpoint_valid(cp, key):
            return Break(cp.seq, position, "checkpoint_forged", head=cp.seq)
        if (cp.prev_seq, cp.prev_hash) != (prev_seq, prev_hash) or cp.seq <= cp.prev_seq:
            return Break(prev_seq + 1, position, "missing")
        prev_seq, prev_hash = cp.seq, cp.hash
    return None


def verify(entries: Iterable[Entry], start: Head | None = None) -> tuple[int, Break | None]:
    """Check a whole chain in order, from entry 1 or, after an archived prefix, from the
    entry after ``start`` (the last checkpoint: its seq and hash); returns (entries checked,
    first break).

    Deleting the newest entries leaves a shorter valid chain: that is caught by comparing
    its end with the sealed head (``check_head``) and the latest anchor (``check_anchor``).

    ``edited``: the entry's content no longer matches its hash. ``missing``: the sequence
    skips a number that appears nowhere (an entry was deleted). ``reordered``: the next
    number is stored later (rows were moved or their sequence numbers swapped), or numbers
    go backwards or repeat. ``bad_start``: the first entry is not linked to the genesis
    hash although it claims to be the first. An entry whose content matches its hash but
    whose ``prev_hash`` is not the previous hash was re-linked after a deletion or edit
    before it: ``edited``. ``unlinked``: the entry's charger links (``linked``, when read)
    are not the charger ids it was sealed with.
    """
    items = list(entries)
    seqs = {e.seq for e in items}
    previous: Entry | None = None
    base = start.seq if start is not None else 0
    count = 0
    for position, entry in enumerate(items):
        count += 1
        expected = previous.seq + 1 if previous else base + 1
        if entry.seq != expected:
            # The expected entry is elsewhere in storage: the order was changed. Otherwise
            # it is gone (or the sequence repeats, which is a reordering too).
            if expected in seqs or (previous is not None and entry.seq <= previous.seq):
                return count, Break(expected, position, "reordered")
            return count, Break(expected, position, "missing")
        if digest(entry) != entry.hash:
            return count, Break(entry.seq, position, "edited")
        if previous is None:
            if entry.prev_hash != (start.hash if start is not None else GENESIS):
                return count, Break(entry.seq, position, "bad_start")
        elif entry.prev_hash != previous.hash:
            return count, Break(entry.seq, position, "edited")
        if entry.linked is not None and set(entry.linked) != set(entry.chargers):
            return count, Break(entry.seq, position, "unlinked")
        previous = entry
    return count, None


def head_mac(key: bytes, seq: int, hash_: str) -> str:
    """HMAC-SHA-256 over the head; without the key nobody can write a head that passes."""
    message = f"evota-audit-head:{seq}:{hash_}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal_head(key: bytes, last: Entry | None) -> Head:
    """The head after ``last`` (None: the empty log)."""
    seq, hash_ = (last.seq, last.hash) if last is not None else (0, GENESIS)
    return Head(seq, hash_, head_mac(key, seq, hash_))


def head_valid(head: Head, key: bytes) -> bool:
    return hmac.compare_digest(head.mac, head_mac(key, head.seq, head.hash))


def check_head(
    entries: Sequence[Entry],
    head: Head | None,
    key: bytes,
    *,
    after: Head | None = None,
    start: Head | None = None,
) -> Break | None:
    """Compare an intact chain with the sealed head read *before* it (``head``) and the
    one read after it (``after``; appends may move it meanwhile).

    ``head_missing``: no head (evota seals one at its first start with the key).
    ``head_forged``: a MAC does not match (the row was rewritten without the key).
    ``truncated``: the head is further than the chain. ``head_mismatch``: the entry at the
    head's number is not the one that was sealed (replaced after a truncation).
    ``unsealed``: entries past even the later head (appended without the key).
    ``entries`` begin after ``start`` (the last checkpoint) when a prefix was archived."""
    end = len(entries)
    base = start.seq if start is not None else 0
    for h in (head, after):
        if h is None:
            return Break(end + 1, end, "head_missing")
        if not head_valid(h, key):
            return Break(h.seq, end, "head_forged", head=h.seq)
    assert head is not None and after is not None
    last = entries[-1].seq if entries else base
    if head.seq > last:
        return Break(last + 1, end, "truncated", head=head.seq)
    if head.seq < base:  # a checkpoint is never past the head: the head was replaced
        return Break(head.seq, 0, "head_mismatch", head=head.seq)
    if _hash_at(entries, head.seq, start) != head.hash:
        return Break(head.seq, head.seq - base - 1, "head_mismatch", head=head.seq)
    if after.seq < last:
        return Break(after.seq + 1, after.seq, "unsealed", head=after.seq)
    return None


def _hash_at(entries: Sequence[Entry], seq: int, start: Head | None) -> str:
    """The hash of entry ``seq`` in a verified chain beginning after ``start``."""
    base = start.seq if start is not None else 0
    if seq == base:
        return start.hash if start is not None else GENESIS
    return entries[seq - base - 1].hash


def check_anchor(
    entries: Sequence[Entry], anchor: Head | None, start: Head | None = None
) -> Break | None:
    """An anchor (a head published outside the database) must still be in the chain: this
    catches a rollback of the whole database, head row included, to an older state. An
    anchor inside an archived prefix is the archive's to check (``evota audit archive
    verify``)."""
    base = start.seq if start is not None else 0
    if anchor is None or anchor.seq == 0 or anchor.seq < base:
        return None
    if anchor.seq > base + len(entries):
        last = entries[-1].seq if entries else base
        return Break(last + 1, len(entries), "truncated", head=anchor.seq, source="anchor")
    if _hash_at(entries, anchor.seq, start) != anchor.hash:
        return Break(anchor.seq, anchor.seq - base - 1, "head_mismatch", head=anchor.seq)
    return None
