"""Security profile 1 on the upgrade, subprotocol negotiation and connection replacement."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import api_client, basic, connect, provision, start_runtime
from tests.support import until

KEY = "auth-key-0123456789ab"
BOOT = [2, "b", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X1"}]


async def _status_of(coro) -> int:
    with pytest.raises(InvalidStatus) as info:
        await coro
    return info.value.response.status_code


async def test_wrong_key_is_401(evota_sqlite):
    await provision(evota_sqlite, "CP-a", KEY)
    assert await _status_of(connect(evota_sqlite, "CP-a", "not-the-right-key-000")) == 401


async def test_missing_credentials_is_401_with_challenge(evota_sqlite):
    await provision(evota_sqlite, "CP-b", KEY)
    with pytest.raises(InvalidStatus) as info:
        await connect(evota_sqlite, "CP-b", None)
    assert info.value.response.status_code == 401
    assert info.value.response.headers["WWW-Authenticate"].startswith("Basic")


async def test_user_must_match_identity(evota_sqlite):
    await provision(evota_sqlite, "CP-c", KEY)
    await provision(evota_sqlite, "CP-d", KEY)
    coro = websockets.connect(
        f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/ocpp/CP-c",
        subprotocols=["ocpp1.6"],
        additional_headers={"Authorization": basic("CP-d", KEY)},
    )
    assert await _status_of(coro) == 401


async def test_unknown_identity_is_401_with_known_only(evota_sqlite):
    # Like a wrong key (docs/ocpp.md): the answer must not tell which identities exist.
    assert await _status_of(connect(evota_sqlite, "CP-nobody", KEY)) == 401


async def test_bad_path_is_404(evota_sqlite):
    coro = websockets.connect(f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/other/CP-x")
    assert await _status_of(coro) == 404


async def test_unknown_identity_admitted_as_pending_with_open(tmp_path, sqlite_url):
    runtime = await start_runtime(tmp_path, sqlite_url, registration="open")
    try:
        ws = await connect(runtime, "CP-new", KEY)
        await ws.send(json.dumps(BOOT))
        assert json.loads(await ws.recv())[2]["status"] == "Pending"
        await ws.close()
        # The key presented first is remembered: a different key is refused afterwards.
        assert await _status_of(connect(runtime, "CP-new", "another-key-0123456789")) == 401
        await runtime.fleet.writer.flush()
        async with api_client(runtime) as api:
            charger = (await api.get("/api/v1/chargers/CP-new")).json()
        assert charger["registration"] == "Pending"
        assert charger["vendor"] == "Acme"
    finally:
        await runtime.stop()


async def test_no_supported_subprotocol_completes_handshake_then_closes(evota_sqlite):
    await provision(evota_sqlite, "CP-proto", KEY)
    ws = await connect(evota_sqlite, "CP-proto", KEY, subprotocols=["ocpp9.9"])
    assert ws.subprotocol is None
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1002


async def test_second_connection_replaces_the_first(evota_sqlite):
    await provision(evota_sqlite, "CP-twice", KEY)
    first = await connect(evota_sqlite, "CP-twice", KEY)
    await first.send(json.dumps(BOOT))
    await first.recv()
    second = await connect(evota_sqlite, "CP-twice", KEY)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(first.recv(), 5)
    # The charger stays online through the new connection, which works.
    await asyncio.sleep(0.05)
    assert evota_sqlite.gateway.is_connected("CP-twice")
    await second.send(json.dumps([2, "h", "Heartbeat", {}]))
    assert json.loads(await second.recv())[0] == 3
    async with api_client(evota_sqlite) as api:
        assert (await api.get("/api/v1/chargers/CP-twice")).json()["connected"] is True
    await second.close()
    await until(lambda: not evota_sqlite.gateway.is_connected("CP-twice"))


async def test_keys_are_not_stored_in_clear(evota_sqlite):
    from sqlalchemy import select

    from evota.store.models import Charger

    await provision(evota_sqlite, "CP-hash", KEY)
    async with evota_sqlite.engine.connect() as conn:
        row = (await conn.execute(select(Charger).where(Charger.id == "CP-hash"))).one()
    assert KEY not in (row.auth_hash, row.auth_salt)
    assert len(row.auth_hash) == 64


async def test_silent_charger_and_stalled_handshake_are_closed(evota_sqlite):
    import asyncio as aio

    gateway = evota_sqlite.gateway
    gateway.idle_timeout, gateway.handshake_timeout, gateway.sweep_interval = 0.5, 0.5, 0.1
    gateway._sweeper.cancel()
    gateway._sweeper = aio.create_task(gateway._sweep())
    await provision(evota_sqlite, "CP-silent", KEY)
    ws = await connect(evota_sqlite, "CP-silent", KEY)
    reader, writer = await aio.open_connection("127.0.0.1", evota_sqlite.ocpp_port)  # no upgrade
    await aio.sleep(0.05)
    assert gateway.is_connected("CP-silent")
    with pytest.raises(ConnectionClosed):
        await aio.wait_for(ws.recv(), 5)
    assert await aio.wait_for(reader.read(), 5) == b""  # the stalled socket was closed too
    assert not gateway.is_connected("CP-silent")
    writer.close()
