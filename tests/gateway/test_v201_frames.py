"""Bad 2.0.1 frames get the 2.0.1 CALLERROR; subprotocol choice and identity rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets
from ocpp.v201 import call

from evota.runtime import Runtime
from tests.conftest import basic, connect, provision
from tests.gateway.v201_station import KEY, SUBPROTOCOL, station

# -- frames ------------------------------------------------------------------------------------

GOOD_STATUS = {
    "timestamp": "2026-11-29T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}

CASES = [
    # (name, raw frame, expected 2.0.1 code, expected id)
    ("invalid-json", '[2, "a1", "Heartbeat", {', "RpcFrameworkError", "-1"),
    ("not-an-array", '{"action": "Heartbeat"}', "RpcFrameworkError", "-1"),
    ("empty-array", "[]", "RpcFrameworkError", "-1"),
    ("id-not-string", '[2, 17, "Heartbeat", {}]', "RpcFrameworkError", "-1"),
    ("id-too-long", json.dumps([2, "x" * 37, "Heartbeat", {}]), "RpcFrameworkError", "-1"),
    ("wrong-message-type", '[7, "a2", "Heartbeat", {}]', "MessageTypeNotSupported", "a2"),
    ("message-type-as-string", '["2", "a3", "Heartbeat", {}]', "MessageTypeNotSupported", "a3"),
    ("call-result-error-21", '[5, "a3b", {}]', "MessageTypeNotSupported", "a3b"),
    ("call-too-short", '[2, "a4", "Heartbeat"]', "RpcFrameworkError", "a4"),
    ("action-not-string", '[2, "a4b", 7, {}]', "RpcFrameworkError", "a4b"),
    ("payload-not-object", '[2, "a5", "Heartbeat", []]', "FormatViolation", "a5"),
    ("unknown-action", '[2, "a6", "MakeCoffee", {}]', "NotImplemented", "a6"),
    ("16-only-action", '[2, "a6b", "StartTransaction", {}]', "NotImplemented", "a6b"),
    ("csms-only-action", '[2, "a7", "Reset", {"type": "Immediate"}]', "NotSupported", "a7"),
    (
        "missing-field",
        json.dumps(
            [
                2,
                "a8",
                "StatusNotification",
                {k: v for k, v in GOOD_STATUS.items() if k != "connectorStatus"},
            ]
        ),
        "OccurrenceConstraintViolation",
        "a8",
    ),
    (
        "wrong-type",
        json.dumps([2, "a9", "StatusNotification", {**GOOD_STATUS, "evseId": "one"}]),
        "TypeConstraintViolation",
        "a9",
    ),
    (
        "bad-enum",
        json.dumps(
            [2, "a10", "StatusNotification", {**GOOD_STATUS, "connectorStatus": "Charging"}]
        ),
        "PropertyConstraintViolation",
        "a10",
    ),
    (
        "too-long-string",
        json.dumps(
            [
                2,
                "a11",
                "SecurityEventNotification",
                {"type": "t" * 51, "timestamp": "2026-11-29T10:00:00Z"},
            ]
        ),
        "PropertyConstraintViolation",
        "a11",
    ),
    (
        "extra-property",
        json.dumps([2, "a12", "StatusNotification", {**GOOD_STATUS, "errorCode": "NoError"}]),
        "FormatViolation",
        "a12",
    ),
    (
        "bad-date-time",
        json.dumps([2, "a13", "StatusNotification", {**GOOD_STATUS, "timestamp": "tuesday"}]),
        "PropertyConstraintViolation",
        "a13",
    ),
    (
        "empty-sampled-values",
        json.dumps([2, "a14", "MeterValues", {"evseId": 1, "meterValue": []}]),
        "OccurrenceConstraintViolation",
        "a14",
    ),
]


async def _booted_201(rt: Runtime, identity: str) -> Any:
    await provision(rt, identity, KEY)
    ws = await connect(rt, identity, KEY, subprotocols=[SUBPROTOCOL])
    boot = {"chargingStation": {"vendorName": "A", "model": "B"}, "reason": "PowerUp"}
    await ws.send(json.dumps([2, "boot-1", "BootNotification", boot]))
    answer = json.loads(await ws.recv())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


@pytest.mark.parametrize(("name", "frame", "code", "message_id"), CASES, ids=[c[0] for c in CASES])
async def test_bad_frame_gets_the_201_callerror(evota_sqlite, name, frame, code, message_id):
    ws = await _booted_201(evota_sqlite, "V201-" + name)
    await ws.send(frame)
    answer = json.loads(await ws.recv())
    assert answer[0] == 4, answer
    assert answer[1] == message_id
    assert answer[2] == code, answer
    assert isinstance(answer[3], str) and answer[3]
    assert isinstance(answer[4], dict)
    await ws.send(json.dumps([2, "after", "Heartbeat", {}]))
    answer = json.loads(await ws.recv())
    assert answer[:2] == [3, "after"] and "currentTime" in answer[2]
    await ws.close()


async def test_a_201_call_before_boot_is_a_security_error(evota_sqlite):
    await provision(evota_sqlite, "V201-EARLY", KEY)
    ws = await connect(evota_sqlite, "V201-EARLY", KEY, subprotocols=[SUBPROTOCOL])
    await ws.send(json.dumps([2, "e1", "StatusNotification", GOOD_STATUS]))
    assert json.loads(await ws.recv())[:3] == [4, "e1", "SecurityError"]
    await ws.close()


async def test_subprotocol_is_chosen_per_connection(evota_sqlite):
    rt = evota_sqlite
    await provision(rt, "V201-PROTO", KEY)
    for offered, agreed in (
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp2.0.1"),  # the newer protocol when both are offered
        (["ocpp1.6"], "ocpp1.6"),
    ):
        ws = await connect(rt, "V201-PROTO", KEY, subprotocols=offered)
        assert ws.subprotocol == agreed
        await ws.close()
    ws = await connect(rt, "V201-PROTO", KEY, subprotocols=["ocpp2.1"])
    assert ws.subprotocol is None
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002


@pytest.mark.parametrize(
    "identity",
    ["x" * 49, "CP%3A1", "CP:1"],
    ids=["49-characters", "percent-encoded-colon", "colon"],
)
async def test_identity_rules(evota_sqlite, identity):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/ocpp/{identity}",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(identity, KEY)},
            open_timeout=5,
        )
    assert refused.value.response.status_code == 404


async def test_48_character_identity_is_fine(evota_sqlite):
    identity = "I" * 48
    async with station(evota_sqlite, identity) as cp:
        assert (await cp.call(call.Heartbeat())).current_time
