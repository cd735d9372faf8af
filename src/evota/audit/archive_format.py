"""The audit archive file, pure: what ``evota audit archive`` writes before it prunes, and
the check that an archive is whole, unedited and linked to its signed checkpoint.

An archive is JSON Lines: a header (format, the checkpoint it continues from), one line per
entry with every hashed field and its hash, and last the checkpoint (``chain.Checkpoint``
with its MAC) whose ``archive_sha256`` is the SHA-256 of every line before it. The entries
verify on their own as a chain starting after the header's ``prev_seq``/``prev_hash``, and
end at the checkpoint's ``seq``/``hash``, which is where the chain in the database goes on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from evota.audit import chain

FORMAT: Final = "evota-audit-archive/1"


def file_name(prev_seq: int, seq: int) -> str:
    return f"audit-{prev_seq + 1:012d}-{seq:012d}.jsonl"


def _line(data: Mapping[str, Any]) -> bytes:
    return (
        json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    )


def entry_json(entry: chain.Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "outcome": entry.outcome,
        "target": entry.target,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "detail": dict(entry.detail),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "v": entry.v,
        "chargers": list(entry.chargers),
    }


def entry_from_json(data: Mapping[str, Any]) -> chain.Entry:
    return chain.Entry(
        seq=int(data["seq"]),
        at=datetime.fromisoformat(str(data["at"])),
        actor=str(data["actor"]),
        role=str(data["role"]),
        action=str(data["action"]),
        outcome=str(data["outcome"]),
        target=data.get("target"),
        reason=data.get("reason"),
        request_id=data.get("request_id"),
        detail=dict(data.get("detail") or {}),
        prev_hash=str(data["prev_hash"]),
        hash=str(data["hash"]),
        v=int(data.get("v", chain.VERSION)),
        chargers=tuple(data.get("chargers") or ()),
    )


def body(prev_seq: int, prev_hash: str, entries: Sequence[chain.Entry], at: datetime) -> bytes:
    """Header and entry lines: what the checkpoint's ``archive_sha256`` covers."""
    header = {
        "format": FORMAT,
        "prev_seq": prev_seq,
        "prev_hash": prev_hash,
        "entries": len(entries),
        "created_at": at.isoformat(),
    }
    return _line(header) + b"".join(_line(entry_json(e)) for e in entries)


def checkpoint_line(cp: chain.Checkpoint) -> bytes:
    return _line({"checkpoint": asdict(cp)})


@dataclass(frozen=True, slots=True)
class Checked:
    """An archive's check: ``problem`` is None when it is whole and its checkpoint signed
    (``signed``: the MAC was checked, which needs the key)."""

    entries: int
    checkpoint: chain.Checkpoint | None
    problem: str | None
    signed: bool


def check(data: bytes, key: bytes | None) -> Checked:
    """Check an archive on its own: the body's hash, the chain inside it, its end against
    the checkpoint and (with the key) the checkpoint's MAC."""
    lines = data.splitlines(keepends=True)
    if len(lines) < 2:
        return Checked(0, None, "not an evota audit archive (too short)", False)
    try:
        header = json.loads(lines[0])
        raw_cp = json.loads(lines[-1])["checkpoint"]
        cp = chain.Checkpoint(**{k: raw_cp[k] for k in chain.Checkpoint.__dataclass_fields__})
        entries = [entry_from_json(json.loads(line)) for line in lines[1:-1]]
    except (ValueError, KeyError, TypeError) as exc:
        return Checked(0, None, f"not an evota audit archive ({exc})", False)
    if header.get("format") != FORMAT:
        return Checked(0, cp, f"unknown archive format {header.get('format')!r}", False)
    signed = key is not None
    if key is not None and not chain.checkpoint_valid(cp, key):
        return Checked(0, cp, "the archive's checkpoint fails its MAC: not signed by the key", True)
    if hashlib.sha256(b"".join(lines[:-1])).hexdigest() != cp.archive_sha256:
        return Checked(0, cp, "the archive's content does not match its checkpoint: edited", signed)
    if (header.get("prev_seq"), header.get("prev_hash")) != (cp.prev_seq, cp.prev_hash):
        return Checked(0, cp, "the archive's header does not match its checkpoint", signed)
    count, broken = chain.verify(entries, chain.Head(cp.prev_seq, cp.prev_hash))
    if broken is not None:
        return Checked(count, cp, chain.explain(broken), signed)
    last = entries[-1] if entries else None
    if last is None or (last.seq, last.hash) != (cp.seq, cp.hash):
        return Checked(count, cp, "the archive does not end at its checkpoint", signed)
    return Checked(count, cp, None, signed)
