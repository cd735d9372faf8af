"""The fast schema check (evota.ocpp.fastcheck) agrees with fastjsonschema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# -- the fast schema check agrees with fastjsonschema ------------------------------------------


def _all_schemas() -> list[tuple[str, str]]:
    import importlib.resources

    out = []
    for package in ("ocpp.v16.schemas", "ocpp.v201.schemas"):
        for entry in importlib.resources.files(package).iterdir():
            if entry.name.endswith(".json"):
                out.append((package, entry.name))
    return sorted(out)


def _schema(package: str, name: str) -> dict[str, Any]:
    import importlib.resources

    schema = json.loads((importlib.resources.files(package) / name).read_text())
    schema.pop("$id", None)
    return dict(schema)


_TIMESTAMPS = [
    "2026-11-29T10:00:00Z",
    "2026-11-29T10:00:00.123+01:00",
    "2024-02-29T23:59:60z",
    "2026-02-30T00:00:00Z",  # no such day
    "2026-11-29T10:00:00",  # no zone
    "tuesday",
]


def _instances(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """Mostly valid instances of ``schema``, with every kind of near miss mixed in."""
    from hypothesis import strategies as st

    if "$ref" in schema:
        return _instances(defs[schema["$ref"].rsplit("/", 1)[1]], defs, depth + 1)
    kind = schema.get("type")
    junk = st.sampled_from([None, True, 1.5, "x", [], {}])
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        if depth > 8:
            return st.just({})
        fields = {
            key: st.tuples(st.integers(0, 9), _instances(sub, defs, depth + 1))
            for key, sub in props.items()
        }

        def build(drawn: dict[str, Any], extra: bool) -> dict[str, Any]:
            out = {}
            for key, (roll, value) in drawn.items():
                if (key in required and roll != 0) or (key not in required and roll > 6):
                    out[key] = value
            if extra:
                out["colour"] = "red"
            return out

        return st.one_of(
            st.builds(
                build, st.fixed_dictionaries(fields), st.booleans().map(lambda b: b and False)
            ),
            st.builds(build, st.fixed_dictionaries(fields), st.booleans()),
            junk,
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        items = _instances(schema.get("items", {}), defs, depth + 1)
        return st.one_of(st.lists(items, min_size=max(0, low - 1), max_size=low + 2), junk)
    if kind == "string":
        if "enum" in schema:
            return st.sampled_from([*schema["enum"], "Bogus", 7])
        if schema.get("format") == "date-time":
            return st.sampled_from(_TIMESTAMPS)
        limit = schema.get("maxLength", 30)
        return st.one_of(st.text(max_size=min(limit + 2, 60)), st.just("a" * (limit + 1)), junk)
    if kind == "integer":
        return st.one_of(st.integers(-3, 2**31), st.sampled_from([1.0, 2.5, True, "3", -0.0]), junk)
    if kind == "number":
        return st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=False, width=32), junk)
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true"]))
    return st.one_of(st.integers(), st.text(max_size=5), st.just({"a": [1]}))


@pytest.mark.slow
def test_fast_check_never_accepts_what_fastjsonschema_refuses() -> None:
    """Soundness of evota.ocpp.fastcheck, over every 1.6 and 2.0.1 schema: whenever it says
    valid, the full validator agrees (when unsure it defers, so errors stay the full
    validator's)."""
    import fastjsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from evota.ocpp.fastcheck import compile_acceptor

    compiled = {}
    for package, name in _all_schemas():
        schema = _schema(package, name)
        accept = compile_acceptor(schema)
        assert accept is not None, name  # every OCPP schema is in the modelled subset
        full = fastjsonschema.compile(schema, use_default=False)
        compiled[package, name] = (accept, full, _instances(schema, schema.get("definitions", {})))

    accepted: list[int] = [0, 0]

    @settings(max_examples=2000, deadline=None)
    @given(st.data())
    def check(data: Any) -> None:
        key = data.draw(st.sampled_from(sorted(compiled)))
        accept, full, instances = compiled[key]
        payload = data.draw(instances)
        if accept(payload):
            accepted[0] += 1
            full(payload)  # raises if the fast check was wrong
        else:
            accepted[1] += 1

    check()
    assert accepted[0] > 300 and accepted[1] > 300, accepted  # both verdicts were exercised


def test_fast_check_accepts_the_common_messages() -> None:
    """The fast path is taken for what chargers really send (else it would save nothing)."""
    import sys

    from evota.ocpp import fastcheck, rpc

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    import loadgen

    frame = loadgen.ChargerConn.build_transaction(
        b"000001-0000000001", 5, b"000001-", b"2026-11-29T10:00:00.123Z"
    )
    payload = rpc.decode(frame).payload
    accept = fastcheck.compile_acceptor(
        _schema("ocpp.v201.schemas", "TransactionEventRequest.json")
    )
    assert accept is not None and accept(payload)
    status = fastcheck.compile_acceptor(_schema("ocpp.v16.schemas", "StatusNotification.json"))
    assert status is not None
    assert status({"connectorId": 1, "errorCode": "NoError", "status": "Available"})
    assert not status({"connectorId": 1, "errorCode": "NoError", "status": "Bogus"})
