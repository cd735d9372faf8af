"""The audit hash chain: any edit, deletion or reordering is found, and where."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.audit.chain import GENESIS, Entry, canonical, seal, verify

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def chain(n: int) -> list[Entry]:
    out: list[Entry] = []
    for i in range(n):
        entry = Entry(
            seq=0,
            at=T0 + timedelta(seconds=i),
            actor=f"user{i % 3}",
            role="operator",
            action="charger.reset",
            outcome="Accepted",
            target=f"CP-{i}",
            reason="stuck" if i % 2 else None,
            request_id=f"req-{i}",
            detail={"type": "Soft", "n": i, "ünïcode": "✓"},
        )
        out.append(seal(out[-1] if out else None, entry))
    return out


def test_a_sealed_chain_verifies():
    entries = chain(5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS and entries[1].prev_hash == entries[0].hash
    assert verify(entries) == (5, None)
    assert verify([]) == (0, None)


def test_canonical_form_is_stable_and_needs_aware_time():
    e = chain(1)[0]
    tokyo = e.at.astimezone(timezone(timedelta(hours=9)))
    assert canonical(e) == canonical(replace(e, at=tokyo))  # the same instant, the same bytes
    with pytest.raises(ValueError):
        canonical(replace(e, at=datetime(2026, 1, 1)))


def test_each_kind_of_tampering_is_named():
    entries = chain(6)
    edited = [*entries[:2], replace(entries[2], actor="mallory"), *entries[3:]]
    brk = verify(edited)[1]
    assert brk is not None and (brk.seq, brk.position, brk.reason) == (3, 2, "edited")
    deleted = entries[:2] + entries[3:]
    brk = verify(deleted)[1]
    assert brk is not None and (brk.seq, brk.reason) == (3, "missing")
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    brk = verify(swapped)[1]
    assert brk is not None and brk.reason in ("missing", "reordered")
    # an attacker who re-seals an edited entry still breaks the link to the next one
    resealed = list(entries)
    resealed[3] = seal(entries[2], replace(entries[3], outcome="Rejected"))
    brk = verify(resealed)[1]
    assert brk is not None and (brk.seq, brk.reason) == (5, "edited")
    # deleting the oldest entry is caught too: the chain must start at 1
    brk = verify(entries[1:])[1]
    assert brk is not None and (brk.seq, brk.reason) == (1, "missing")


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 30),
    st.data(),
    st.sampled_from(["edit", "delete", "swap", "truncate_middle"]),
)
def test_any_single_tampering_is_detected_at_or_before_the_damage(n, data, kind):
    entries = chain(n)
    i = data.draw(st.integers(0, n - 2))  # never only the newest entry (see verify)
    if kind == "edit":
        tampered = list(entries)
        tampered[i] = replace(entries[i], reason="rewritten")
    elif kind == "delete":
        tampered = entries[:i] + entries[i + 1 :]
    elif kind == "swap":
        tampered = list(entries)
        tampered[i], tampered[i + 1] = tampered[i + 1], tampered[i]
    else:
        if i + 2 >= n:
            return  # removing the newest entry is the store's head check, not the chain's
        tampered = entries[: i + 1] + entries[i + 2 :]
    _, brk = verify(tampered)
    assert brk is not None
    assert brk.position <= i + 1
