"""Properties of the OCPP-J framing and schema checks: any input gets a typed message or an
RpcError, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.ocpp import rpc, schemas
from evota.ocpp.errors import V16_SPELLING, V201_SPELLING, ErrorKind, RpcError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
message_ids = st.text(min_size=1, max_size=36)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@given(st.binary(max_size=200))
def test_decode_never_crashes_on_bytes(data):
    try:
        rpc.decode(data)
    except RpcError as exc:
        assert isinstance(exc.kind, ErrorKind)


def readable_id(value: object) -> str:
    """The id a CALLERROR must reference: the frame's own when it has a usable one, else -1."""
    usable = isinstance(value, list) and len(value) >= 2 and isinstance(value[1], str)
    if usable and 1 <= len(value[1]) <= rpc.MAX_ID_LENGTH:
        return str(value[1])
    return "-1"


@given(json_values)
def test_decode_never_crashes_on_json(value):
    try:
        rpc.decode(json.dumps(value))
    except RpcError as exc:
        assert exc.message_id == readable_id(value), exc.description


# Frame-shaped values (a type number, an id, anything after): random JSON almost never gets
# past the message id, where most of the checks are.
frames = st.builds(
    lambda kind, message_id, rest: [kind, message_id, *rest],
    st.sampled_from([2, 3, 4, 5, 2.0, "2", None]),
    message_ids | st.text(max_size=40) | json_values,
    st.lists(json_values, max_size=4),
)


@settings(max_examples=300)
@given(frames)
def test_a_frame_error_names_the_frame_id_when_readable(value):
    try:
        rpc.decode(json.dumps(value))
    except RpcError as exc:
        assert exc.message_id == readable_id(value), exc.description


@given(message_ids, st.text(min_size=1, max_size=40), payloads)
def test_call_round_trip(message_id, action, payload):
    assert rpc.decode(rpc.encode_call(message_id, action, payload)) == rpc.Call(
        message_id, action, payload
    )


@given(message_ids, payloads)
def test_result_round_trip(message_id, payload):
    assert rpc.decode(rpc.encode_result(message_id, payload)) == rpc.CallResult(message_id, payload)


@given(message_ids, st.sampled_from(sorted(V16_SPELLING.values())), st.text(max_size=300))
def test_error_round_trip(message_id, code, description):
    decoded = rpc.decode(rpc.encode_error(message_id, code, description))
    assert isinstance(decoded, rpc.CallError)
    assert (decoded.message_id, decoded.code) == (message_id, code)
    assert decoded.description == description[:255]


@given(st.sampled_from(sorted(schemas.v16().actions)), payloads)
def test_schema_check_raises_only_rpc_errors(action, payload):
    try:
        schemas.v16().validate_request(action, payload, "id")
    except RpcError as exc:
        assert exc.kind in {
            ErrorKind.OCCURRENCE_CONSTRAINT,
            ErrorKind.TYPE_CONSTRAINT,
            ErrorKind.FORMAT,
            ErrorKind.PROPERTY_CONSTRAINT,
        }
        assert exc.details["field"]


def test_v16_spelling_uses_the_official_misspellings():
    assert V16_SPELLING[ErrorKind.FORMAT] == "FormationViolation"
    assert V16_SPELLING[ErrorKind.OCCURRENCE_CONSTRAINT] == "OccurenceConstraintViolation"
    assert V201_SPELLING[ErrorKind.FORMAT] == "FormatViolation"
    assert set(V16_SPELLING.values()) <= {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }


@pytest.mark.parametrize(
    ("payload", "kind", "field"),
    [
        ({"connectorId": 1, "status": "Available"}, ErrorKind.OCCURRENCE_CONSTRAINT, "errorCode"),
        (
            {"connectorId": 1.5, "errorCode": "NoError", "status": "Available"},
            ErrorKind.TYPE_CONSTRAINT,
            "connectorId",
        ),
        (
            {"connectorId": 1, "errorCode": "NoError", "status": "On"},
            ErrorKind.PROPERTY_CONSTRAINT,
            "status",
        ),
        (
            {"connectorId": 1, "errorCode": "NoError", "status": "Available", "x": 1},
            ErrorKind.FORMAT,
            "x",
        ),
    ],
)
def test_keyword_to_error_kind(payload, kind, field):
    with pytest.raises(RpcError) as info:
        schemas.v16().validate_request("StatusNotification", payload, "m1")
    assert info.value.kind is kind
    assert info.value.details["field"] == field
    assert info.value.message_id == "m1"


def test_empty_payload_verdicts_are_cached_per_schema():
    s = schemas.v16()
    for _ in range(2):  # the second call takes the cached verdict
        s.validate_response("StatusNotification", {}, "m")
        with pytest.raises(RpcError):
            s.validate_response("BootNotification", {}, "m")  # required fields missing
