"""Every kind of bad frame gets the CALLERROR the spec asks for, in 1.6 spelling, and the
connection stays up with the charger's data untouched."""

from __future__ import annotations

import json
import struct

import pytest
import websockets
from websockets.frames import Frame, Opcode

from tests.conftest import api_client, connect, provision

KEY = "frames-key-0123456789"
BOOT = [2, "boot-1", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X1"}]
GOOD_STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}

CASES = [
    # (name, raw frame, expected code, expected id)
    ("invalid-json", '[2, "a1", "Heartbeat", {', "FormationViolation", "-1"),
    ("not-an-array", '{"action": "Heartbeat"}', "FormationViolation", "-1"),
    ("empty-array", "[]", "FormationViolation", "-1"),
    ("id-not-string", '[2, 17, "Heartbeat", {}]', "FormationViolation", "-1"),
    ("id-too-long", json.dumps([2, "x" * 37, "Heartbeat", {}]), "FormationViolation", "-1"),
    ("wrong-message-type", '[7, "a2", "Heartbeat", {}]', "ProtocolError", "a2"),
    ("message-type-as-string", '["2", "a3", "Heartbeat", {}]', "ProtocolError", "a3"),
    ("call-too-short", '[2, "a4", "Heartbeat"]', "FormationViolation", "a4"),
    ("payload-not-object", '[2, "a5", "Heartbeat", []]', "FormationViolation", "a5"),
    ("unknown-action", '[2, "a6", "MakeCoffee", {}]', "NotImplemented", "a6"),
    ("csms-only-action", '[2, "a7", "Reset", {"type": "Soft"}]', "NotSupported", "a7"),
    (
        "missing-field",
        json.dumps([2, "a8", "StatusNotification", {"connectorId": 1, "status": "Available"}]),
        "OccurenceConstraintViolation",
        "a8",
    ),
    (
        "wrong-type",
        json.dumps([2, "a9", "StatusNotification", {**GOOD_STATUS, "connectorId": "one"}]),
        "TypeConstraintViolation",
        "a9",
    ),
    (
        "bad-enum",
        json.dumps([2, "a10", "StatusNotification", {**GOOD_STATUS, "status": "Exploded"}]),
        "PropertyConstraintViolation",
        "a10",
    ),
    (
        "too-long-string",
        json.dumps([2, "a11", "StatusNotification", {**GOOD_STATUS, "info": "i" * 51}]),
        "PropertyConstraintViolation",
        "a11",
    ),
    (
        "extra-property",
        json.dumps([2, "a12", "StatusNotification", {**GOOD_STATUS, "colour": "red"}]),
        "FormationViolation",
        "a12",
    ),
    (
        "bad-date-time",
        json.dumps([2, "a13", "StatusNotification", {**GOOD_STATUS, "timestamp": "tuesday"}]),
        "PropertyConstraintViolation",
        "a13",
    ),
]


async def _booted(runtime, identity):
    await provision(runtime, identity, KEY)
    ws = await connect(runtime, identity, KEY)
    await ws.send(json.dumps(BOOT))
    answer = json.loads(await ws.recv())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted"
    return ws


@pytest.mark.parametrize(("name", "frame", "code", "message_id"), CASES, ids=[c[0] for c in CASES])
async def test_bad_frame_gets_precise_callerror(evota_sqlite, name, frame, code, message_id):
    ws = await _booted(evota_sqlite, "CP-" + name)
    await ws.send(frame)
    answer = json.loads(await ws.recv())
    assert answer[0] == 4, answer
    assert answer[1] == message_id
    assert answer[2] == code, answer
    assert isinstance(answer[3], str) and answer[3]
    assert isinstance(answer[4], dict)
    # The connection stays up and keeps working.
    await ws.send(json.dumps([2, "after", "Heartbeat", {}]))
    answer = json.loads(await ws.recv())
    assert answer[:2] == [3, "after"] and "currentTime" in answer[2]
    await ws.close()


async def test_validation_error_names_the_field(evota_sqlite):
    ws = await _booted(evota_sqlite, "CP-field")
    frame = [2, "f1", "StatusNotification", {"connectorId": 1, "status": "Available"}]
    await ws.send(json.dumps(frame))
    answer = json.loads(await ws.recv())
    assert answer[4]["field"] == "errorCode"
    assert "errorCode" in answer[3]
    await ws.close()


async def test_bad_status_leaves_charger_data_untouched(evota_sqlite):
    ws = await _booted(evota_sqlite, "CP-untouched")
    await ws.send(json.dumps([2, "s1", "StatusNotification", GOOD_STATUS]))
    assert json.loads(await ws.recv()) == [3, "s1", {}]
    bad = {**GOOD_STATUS, "status": "Faulted", "errorCode": "NotAnErrorCode"}
    await ws.send(json.dumps([2, "s2", "StatusNotification", bad]))
    assert json.loads(await ws.recv())[2] == "PropertyConstraintViolation"
    await evota_sqlite.fleet.writer.flush()
    async with api_client(evota_sqlite) as api:
        detail = (await api.get("/api/v1/chargers/CP-untouched")).json()
    assert [(c["connector_id"], c["status"]) for c in detail["connectors"]] == [(1, "Available")]
    await ws.close()


async def test_call_before_boot_is_security_error(evota_sqlite):
    await provision(evota_sqlite, "CP-early", KEY)
    ws = await connect(evota_sqlite, "CP-early", KEY)
    await ws.send(json.dumps([2, "e1", "StatusNotification", GOOD_STATUS]))
    answer = json.loads(await ws.recv())
    assert answer[:3] == [4, "e1", "SecurityError"]
    await ws.send(json.dumps(BOOT))
    assert json.loads(await ws.recv())[2]["status"] == "Accepted"
    await ws.send(json.dumps([2, "e2", "StatusNotification", GOOD_STATUS]))
    assert json.loads(await ws.recv()) == [3, "e2", {}]
    await ws.close()


async def test_pending_charger_gets_security_error_until_accepted(evota_sqlite):
    await provision(evota_sqlite, "CP-pending", KEY, registration="Pending")
    ws = await connect(evota_sqlite, "CP-pending", KEY)
    await ws.send(json.dumps(BOOT))
    boot = json.loads(await ws.recv())
    assert boot[2]["status"] == "Pending"
    assert boot[2]["interval"] == evota_sqlite.settings.pending_interval
    await ws.send(json.dumps([2, "p1", "Heartbeat", {}]))
    assert json.loads(await ws.recv())[2] == "SecurityError"
    async with api_client(evota_sqlite) as api:
        r = await api.patch("/api/v1/chargers/CP-pending", json={"registration": "Accepted"})
        assert r.status_code == 200, r.text
    await ws.send(json.dumps(BOOT))
    assert json.loads(await ws.recv())[2]["status"] == "Accepted"
    await ws.send(json.dumps([2, "p2", "Heartbeat", {}]))
    assert json.loads(await ws.recv())[0] == 3
    await ws.close()


async def test_rejected_charger_boot_is_rejected(evota_sqlite):
    await provision(evota_sqlite, "CP-rejected", KEY, registration="Rejected")
    ws = await connect(evota_sqlite, "CP-rejected", KEY)
    await ws.send(json.dumps(BOOT))
    assert json.loads(await ws.recv())[2]["status"] == "Rejected"
    await ws.close()


async def test_fragmented_message_is_reassembled(evota_sqlite):
    ws = await _booted(evota_sqlite, "CP-fragments")
    text = json.dumps([2, "frag", "Heartbeat", {}])
    await ws.send([text[:5], text[5:12], text[12:]])
    assert json.loads(await ws.recv())[:2] == [3, "frag"]
    await ws.close()


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    """The code the server closed with; fails if it answered instead."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    return info.value.rcvd.code if info.value.rcvd else None


@pytest.mark.parametrize(
    "parts",
    [
        [b'[2, "u1", "Heartbeat", {"x": "\xff"}]'],
        [b'[2, "u2", "DataTransfer", {"vendorId": "St', b'\xc3"}]'],  # ends inside a character
    ],
    ids=["one-frame", "fragments"],
)
async def test_invalid_utf8_in_a_text_frame_closes_with_1007(evota_sqlite, parts):
    """RFC 6455 §8.1; it used to be answered with a CALLERROR as if it were bad JSON."""
    ws = await _booted(evota_sqlite, f"CP-utf8-{len(parts)}")
    await ws.send(parts if len(parts) > 1 else parts[0], text=True)
    assert await _close_code(ws) == 1007


async def test_a_character_split_across_text_fragments_is_fine(evota_sqlite):
    ws = await _booted(evota_sqlite, "CP-utf8-split")
    text = json.dumps([2, "u3", "DataTransfer", {"vendorId": "Stüdt"}], ensure_ascii=False)
    raw = text.encode()
    cut = raw.index("ü".encode()) + 1
    await ws.send([raw[:cut], raw[cut:]], text=True)
    assert json.loads(await ws.recv())[:2] == [3, "u3"]
    await ws.close()


async def test_binary_frames_close_with_1003(evota_sqlite):
    """OCPP-J is JSON text; a binary frame used to be processed as if it were text."""
    ws = await _booted(evota_sqlite, "CP-binary")
    await ws.send(json.dumps([2, "b1", "Heartbeat", {}]).encode())  # bytes: a binary frame
    assert await _close_code(ws) == 1003


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        (b"", 1000),  # no code: answered with a normal closure
        (struct.pack("!H", 4000) + "fertig, Tschüss".encode(), 4000),  # a valid code: echoed
        (struct.pack("!H", 1005), 1002),  # 1005, 1006, 1015 never go on the wire
        (struct.pack("!H", 1006), 1002),
        (struct.pack("!H", 1015), 1002),
        (struct.pack("!H", 2000), 1002),  # unassigned
        (struct.pack("!H", 5000), 1002),  # out of range
        (b"\x03", 1002),  # a 1-byte payload
        (struct.pack("!H", 1000) + b"bye \xe2\x82", 1007),  # reason ends inside "€"
    ],
    ids=["empty", "4000", "1005", "1006", "1015", "2000", "5000", "one-byte", "bad-utf8"],
)
async def test_a_close_frame_is_echoed_only_when_rfc_6455_allows(evota_sqlite, payload, answer):
    """§7.4, §8.1: evota used to echo any code back (1005 included, which a peer must fail)
    and to read a reason that is not UTF-8 leniently. The frame goes raw onto the socket:
    websockets refuses to send such codes itself."""
    ws = await _booted(evota_sqlite, f"CP-close-{answer}-{len(payload)}-{payload[:2].hex()}")
    ws.transport.write(Frame(Opcode.CLOSE, payload).serialize(mask=True))
    assert await _close_code(ws) == answer


async def test_late_or_unknown_result_is_dropped(evota_sqlite):
    ws = await _booted(evota_sqlite, "CP-late")
    await ws.send(json.dumps([3, "never-asked", {"status": "Accepted"}]))
    await ws.send(json.dumps([4, "never-asked-2", "GenericError", "", {}]))
    await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
    assert json.loads(await ws.recv())[:2] == [3, "hb"]
    await ws.close()
