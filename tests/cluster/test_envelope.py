"""The seal on messages between nodes (evota.cluster.envelope), pure."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from evota.cluster.envelope import Seal

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_genuine_message_opens_once_and_a_replay_is_refused() -> None:
    clock = Clock()
    sender, receiver = Seal(KEY, clock=clock), Seal(KEY, clock=clock)
    data = sender.seal({"t": "call", "id": "1", "c": "CP-1"})
    assert receiver.open(data) == {"t": "call", "id": "1", "c": "CP-1", "at": clock.now}
    assert receiver.open(data) is None  # the same id again
    assert receiver.refused == 1


def test_another_key_a_missing_mac_and_a_stale_message_are_refused() -> None:
    clock = Clock()
    receiver = Seal(KEY, clock=clock)
    assert receiver.open(Seal(b"x" * 32, clock=clock).seal({"t": "call", "id": "1"})) is None
    assert receiver.open(orjson.dumps({"t": "call", "id": "2", "at": clock.now})) is None
    old = Seal(KEY, clock=clock).seal({"t": "call", "id": "3"})
    clock.now += 301
    assert receiver.open(old) is None
    assert receiver.open(b"not json") is None and receiver.open(b"[1]") is None
    assert receiver.refused == 5


def test_the_replay_memory_is_bounded() -> None:
    clock = Clock()
    receiver = Seal(KEY, clock=clock, remember=10)
    sender = Seal(KEY, clock=clock)
    for i in range(100):
        assert receiver.open(sender.seal({"t": "call", "id": str(i)})) is not None
    assert len(receiver._seen) <= 10


def test_a_stream_tag_covers_its_bytes() -> None:
    seal = Seal(KEY)
    tag = seal.tag(b"node|[1]")
    assert seal.check(b"node|[1]", tag)
    assert not seal.check(b"node|[2]", tag) and not seal.check(b"node|[1]", None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(st.text(min_size=1, max_size=8), json_values, min_size=1, max_size=6), st.data()
)
def test_any_change_to_a_sealed_message_is_refused(
    msg: dict[str, Any], data: st.DataObject
) -> None:
    clock = Clock()
    msg.pop("mac", None)
    msg.pop("at", None)
    sealed = orjson.loads(Seal(KEY, clock=clock).seal(msg))
    field = data.draw(st.sampled_from(sorted(k for k in sealed if k != "mac")))
    changed = {**sealed, field: data.draw(json_values.filter(lambda v: v != sealed[field]))}
    assert Seal(KEY, clock=clock).open(orjson.dumps(changed)) is None
    assert Seal(KEY, clock=clock).open(orjson.dumps(sealed)) is not None
