"""Sending a CALL to a charger and awaiting its typed answer or a clear error."""

from __future__ import annotations

import asyncio
import json

import pytest

from evota.control import commands
from tests.conftest import api_client, connect, provision

KEY = "cmd-key-0123456789abc"
BOOT = [2, "b", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X1"}]


async def _charger(runtime, identity):
    await provision(runtime, identity, KEY)
    ws = await connect(runtime, identity, KEY)
    await ws.send(json.dumps(BOOT))
    await ws.recv()
    return ws


async def test_reset_via_api_returns_the_chargers_answer(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-r")

    async def charger_side():
        call = json.loads(await ws.recv())
        assert call[0] == 2 and call[2] == "Reset" and call[3] == {"type": "Hard"}
        await ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))

    task = asyncio.create_task(charger_side())
    async with api_client(evota_sqlite) as api:
        r = await api.post(
            "/api/v1/chargers/CP-r/commands/reset", json={"type": "Hard", "reason": "test"}
        )
    await task
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Rejected"
    await ws.close()


async def test_offline_charger_is_409(evota_sqlite):
    await provision(evota_sqlite, "CP-off", KEY)
    async with api_client(evota_sqlite) as api:
        r = await api.post(
            "/api/v1/chargers/CP-off/commands/reset", json={"type": "Soft", "reason": "test"}
        )
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["reason"] == "offline"


async def test_bad_reset_type_is_422_naming_the_field(evota_sqlite):
    await provision(evota_sqlite, "CP-x", KEY)
    async with api_client(evota_sqlite) as api:
        r = await api.post("/api/v1/chargers/CP-x/commands/reset", json={"type": "Gentle"})
        assert r.status_code == 422
        assert r.json()["field"] == "type"
        # The charger is looked up (and its scope checked) before the body is read.
        r = await api.post("/api/v1/chargers/CP-nope/commands/reset", json={"type": "Gentle"})
        assert r.status_code == 404


async def test_timeout_then_late_answer_is_dropped(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-slow")
    with pytest.raises(commands.CommandTimeout):
        await evota_sqlite.gateway.send("CP-slow", commands.Reset("Soft"), timeout=0.2)
    call = json.loads(await ws.recv())
    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))  # too late
    await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
    assert json.loads(await ws.recv())[:2] == [3, "hb"]
    await ws.close()


async def test_callerror_answer_raises_command_rejected(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-err")

    async def charger_side():
        call = json.loads(await ws.recv())
        await ws.send(json.dumps([4, call[1], "NotSupported", "no resets here", {}]))

    task = asyncio.create_task(charger_side())
    with pytest.raises(commands.CommandRejected) as info:
        await evota_sqlite.gateway.send("CP-err", commands.Reset("Soft"))
    await task
    assert info.value.code == "NotSupported"
    await ws.close()


async def test_schema_invalid_answer_is_a_clear_error(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-badans")

    async def charger_side():
        call = json.loads(await ws.recv())
        await ws.send(json.dumps([3, call[1], {"status": "Maybe"}]))

    task = asyncio.create_task(charger_side())
    with pytest.raises(commands.CommandError, match="invalid answer"):
        await evota_sqlite.gateway.send("CP-badans", commands.Reset("Soft"))
    await task
    await ws.close()


async def test_one_outstanding_call_per_charger_and_calls_may_cross(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-serial")
    first = asyncio.create_task(evota_sqlite.gateway.send("CP-serial", commands.Reset("Soft")))
    second = asyncio.create_task(evota_sqlite.gateway.send("CP-serial", commands.Reset("Hard")))
    call1 = json.loads(await ws.recv())
    # The second CALL must not be on the wire while the first is outstanding.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)
    # The charger's own CALL crosses ours and is answered meanwhile.
    await ws.send(json.dumps([2, "mine", "Heartbeat", {}]))
    assert json.loads(await ws.recv())[:2] == [3, "mine"]
    await ws.send(json.dumps([3, call1[1], {"status": "Accepted"}]))
    call2 = json.loads(await ws.recv())
    assert call2[3] == {"type": "Hard"}
    await ws.send(json.dumps([3, call2[1], {"status": "Accepted"}]))
    assert (await first).status == "Accepted"
    assert (await second).accepted
    await ws.close()


async def test_disconnect_fails_the_pending_call(evota_sqlite):
    ws = await _charger(evota_sqlite, "CP-gone")
    task = asyncio.create_task(evota_sqlite.gateway.send("CP-gone", commands.Reset("Soft")))
    await ws.recv()
    await ws.close()
    with pytest.raises(commands.ChargerOffline):
        await task
