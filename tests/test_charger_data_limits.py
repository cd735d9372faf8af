"""What a charger sends cannot stop the fleet writer or break an API page (issue 12, items 1-2).

Real evota, real WebSocket clients on loopback: an accepted 2.0.1 charger sends hostile
free-form data (nesting 1000 deep, NUL, big strings), and another charger's boot must still be
stored, ``/healthz`` must stay 200, and the charger's API and console pages must answer 200.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, select
from websockets.asyncio.client import ClientConnection

from evota.fleet import writer as writer_module
from evota.fleet.bounds import FREE_FORM, STORED, Limits, bound, clean_text, safe_text
from evota.ocpp.schemas import MAX_CONNECTOR_ID
from evota.runtime import Runtime
from evota.store.models import Charger, ChargerEvent, ChargingSession

from .conftest import api_client, connect, provision, session_for, start_runtime
from .support import until

KEY = "limits-test-key-0123456789"
_ids = itertools.count(1)


def nested(depth: int, leaf: Any = "x") -> Any:
    """``[[[...leaf...]]]`` ``depth`` levels deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> orjson.Fragment:
    """JSON text nested ``depth`` deep, as a charger would send it (orjson will not build
    one deeper than 255 from Python objects)."""
    return orjson.Fragment(b"[" * depth + b'"x"' + b"]" * depth)


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, list | dict) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        depth += 1
    return depth


async def call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> list[Any]:
    """Send one CALL as raw text and return evota's answer frame."""
    message_id = f"m{next(_ids)}"
    await ws.send(orjson.dumps([2, message_id, action, payload]).decode())
    answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer[1] == message_id, answer
    return list(answer)


async def charger(rt: Runtime, charger_id: str, protocol: str) -> ClientConnection:
    """A provisioned, connected and booted charger (Accepted)."""
    await provision(rt, charger_id, KEY)
    ws = await connect(rt, charger_id, KEY, subprotocols=[protocol])
    if protocol == "ocpp2.0.1":
        boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M"}}
    else:
        boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    answer = await call(ws, "BootNotification", boot)
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


async def boot_is_stored(rt: Runtime, charger_id: str, firmware: str) -> None:
    """``charger_id`` boots on ``firmware`` (1.6) and the writer stores it."""
    ws = await connect(rt, charger_id, KEY)
    try:
        payload = {"chargePointVendor": "V", "chargePointModel": "M", "firmwareVersion": firmware}
        assert (await call(ws, "BootNotification", payload))[0] == 3
    finally:
        await ws.close()

    async def stored() -> bool:
        async with rt.engine.connect() as conn:
            found = await conn.execute(
                select(Charger.firmware_version).where(Charger.id == charger_id)
            )
            return found.scalar() == firmware

    await until(stored)


async def healthz(rt: Runtime) -> tuple[int, dict[str, Any]]:
    async with api_client(rt, None) as http:
        r = await http.get("/healthz")
        return r.status_code, r.json()


# -- the bounding function (pure) ------------------------------------------------------------


def test_bound_cuts_depth_size_and_text_and_never_raises() -> None:
    deep = bound(nested(100_000), FREE_FORM)
    assert depth_of(deep) == FREE_FORM.depth
    assert "nested deeper than 16" in str(deep)
    big = bound({"a": "x" * 100_000, "b": list(range(10_000))}, FREE_FORM)
    assert len(orjson.dumps(big)) < 2 * FREE_FORM.size
    assert big["a"].endswith("\u2026") and len(big["a"]) <= FREE_FORM.chars
    assert bound({"t": "a\x00b\ud800c"}) == {"t": "a\ufffdb\ufffdc"}
    assert bound([float("nan"), float("inf"), 1.5, 2**70, True, None]) == [
        None,
        None,
        1.5,
        2**70,
        True,
        None,
    ]
    assert bound({1: {3}}) == {"1": "set"}
    assert bound("\U0001f600" * 3) == "\U0001f600" * 3  # paired surrogates are fine
    orjson.dumps(bound(nested(5000, {"k": "\x00"}), STORED))  # serialisable at last
    assert clean_text("abcdef", 4) == "abc\u2026"


def test_safe_text_formats_what_repr_cannot() -> None:
    with pytest.raises(RecursionError):
        repr(nested(100_000))
    text = safe_text(nested(100_000))
    assert text.startswith("[[[[") and len(text) <= 300
    assert safe_text(RecursionError("too deep")) == "RecursionError: too deep"
    assert len(safe_text(Limits(1, 2, 3))) <= 300


# -- item 1: the writer never dies -------------------------------------------------------------


@pytest.fixture
async def rt(tmp_path: Path, database_url: str) -> Any:
    runtime = await start_runtime(tmp_path, database_url, write_interval=0.05)
    yield runtime
    await runtime.stop()


async def test_hostile_free_form_data_does_not_stop_the_writer(rt: Runtime) -> None:
    """The issue's reproduction: DataTransfer ``data`` nested 1000 deep from an accepted 2.0.1
    charger used to kill the writer; another charger's boot was never stored."""
    await provision(rt, "CP-OTHER", KEY)
    ws = await charger(rt, "CP-HOSTILE", "ocpp2.0.1")
    try:
        hostile: list[tuple[str, dict[str, Any]]] = [
            ("DataTransfer", {"vendorId": "v" * 255, "data": deep_json(1000)}),
            ("DataTransfer", {"vendorId": "big", "data": {"s": "\u00e9" * 100_000}}),
            ("DataTransfer", {"vendorId": "wide", "data": [[i] * 50 for i in range(400)]}),
            (
                "SecurityEventNotification",
                {"type": "\U0001f600" * 50, "timestamp": "2026-01-01T00:00:00Z"},
            ),
            (
                "StatusNotification",
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "connectorStatus": "Faulted",
                    "evseId": 1,
                    "connectorId": 1,
                },
            ),
        ]
        for action, payload in hostile:
            answer = await call(ws, action, payload)
            assert answer[0] == 3, answer  # a CALLRESULT: the data is stored, bounded
    finally:
        await ws.close()
    await boot_is_stored(rt, "CP-OTHER", "after-the-hostile-data")
    assert await healthz(rt) == (
        200,
        {"status": "ok", "connected_chargers": 0, "write_backlog": 0, "writer_restarts": 0},
    )
    assert rt.fleet.writer.dropped == 0  # bounded, stored: nothing had to be refused
    async with rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ChargerEvent.status, ChargerEvent.data)
                .where(
                    ChargerEvent.charger_id == "CP-HOSTILE", ChargerEvent.kind == "data_transfer"
                )
                .order_by(ChargerEvent.id)
            )
        ).all()
    assert [len(r.status) for r in rows] == [64, 3, 4]
    # 16 levels in all as stored, counting the event's own ``{"data": ...}``
    assert depth_of(rows[0].data["data"]) == STORED.depth - 1
    assert len(orjson.dumps(rows[1].data).decode()) < 2 * FREE_FORM.size  # characters


async def test_what_evota_cannot_store_is_refused_with_the_field_named(rt: Runtime) -> None:
    """Integers beyond OCPP's 32 bits and NUL characters used to fail inside the database
    (InternalError, the transaction lost); now they earn the precise CALLERROR."""
    await provision(rt, "CP-OTHER", KEY)
    ws16 = await charger(rt, "CP-16", "ocpp1.6")
    ws201 = await charger(rt, "CP-201", "ocpp2.0.1")
    at = "2026-01-01T00:00:00Z"
    start = {"connectorId": 1, "idTag": "tag", "meterStart": 0, "timestamp": at}
    event = {
        "eventType": "Started",
        "timestamp": at,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "T-1"},
    }
    cases: list[tuple[ClientConnection, str, dict[str, Any], str]] = [
        (ws16, "StartTransaction", {**start, "connectorId": 2**63}, "connectorId"),
        (ws16, "StartTransaction", {**start, "meterStart": 2**31}, "meterStart"),
        (ws16, "StartTransaction", {**start, "idTag": "t\x00g"}, "idTag"),
        (ws16, "DataTransfer", {"vendorId": "v", "data": "\x00"}, "data"),
        (ws201, "TransactionEvent", {**event, "seqNo": -(2**31) - 1}, "seqNo"),
        (
            ws201,
            "TransactionEvent",
            {**event, "transactionInfo": {"transactionId": "T\x00"}},
            "transactionInfo.transactionId",
        ),
        (ws201, "DataTransfer", {"vendorId": "v", "data": {"k": ["\x00"]}}, "data.k[0]"),
    ]
    try:
        for ws, action, payload, field in cases:
            answer = await call(ws, action, payload)
            assert answer[2] == "PropertyConstraintViolation", (action, answer)
            assert answer[4]["field"] == field, answer
        assert (await call(ws16, "StartTransaction", start))[0] == 3  # the same, valid
        assert (await call(ws201, "TransactionEvent", event))[0] == 3
    finally:
        await ws16.close()
        await ws201.close()
    await boot_is_stored(rt, "CP-OTHER", "after-the-refusals")


async def test_connector_ids_are_bounded_so_a_charger_cannot_grow_its_status_map(
    rt: Runtime,
) -> None:
    """evota keeps a status per connector id (in memory and in the ``connectors`` table): a
    charger counting its ids upwards earns PropertyConstraintViolation past 255 instead of
    one more entry per message."""
    ws16 = await charger(rt, "CP-IDS-16", "ocpp1.6")
    ws201 = await charger(rt, "CP-IDS-201", "ocpp2.0.1")
    status16 = {"errorCode": "NoError", "status": "Available"}
    status201 = {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Available"}
    try:
        for connector in range(250, 300):
            answer = await call(ws16, "StatusNotification", {**status16, "connectorId": connector})
            if connector <= MAX_CONNECTOR_ID:
                assert answer[0] == 3, answer
            else:
                assert answer[2] == "PropertyConstraintViolation", answer
                assert answer[4]["field"] == "connectorId", answer
        for evse, connector, field in ((256, 1, "evseId"), (1, 256, "connectorId")):
            payload = {**status201, "evseId": evse, "connectorId": connector}
            answer = await call(ws201, "StatusNotification", payload)
            assert answer[2] == "PropertyConstraintViolation" and answer[4]["field"] == field
        state = rt.live_state("CP-IDS-16")
        assert state is not None and max(state.connectors) == MAX_CONNECTOR_ID
    finally:
        await ws16.close()
        await ws201.close()


async def test_an_ended_writer_is_restarted_and_healthz_fails_when_it_stays_down(
    rt: Runtime,
) -> None:
    """If the writer task ever ends, it comes back; past the restart budget /healthz fails."""
    await provision(rt, "CP-OTHER", KEY)
    writer = rt.fleet.writer
    first = writer._task
    assert first is not None
    first.cancel()
    await until(lambda: writer.restarts == 1 and writer._task is not first)
    await boot_is_stored(rt, "CP-OTHER", "after-a-restart")
    status, body = await healthz(rt)
    assert (status, body["writer_restarts"]) == (200, 1)
    for _ in range(writer_module.MAX_RESTARTS):
        task = writer._task
        assert task is not None
        task.cancel()
        await until(lambda t=task: (t.done() and writer._task is not t) or writer.problem())
    status, body = await healthz(rt)
    assert status == 503, body
    assert body["status"] == "failing"
    assert "fleet writer ended 6 times in a minute: cancelled" in body["reason"]


# -- item 2: a charger cannot break its own pages ----------------------------------------------


async def test_a_charger_cannot_break_its_api_and_console_pages(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, write_interval=0.05)
    try:
        ws = await charger(rt, "CP-DEEP", "ocpp2.0.1")
        try:
            answer = await call(ws, "DataTransfer", {"vendorId": "v", "data": deep_json(300)})
            assert answer[0] == 3
        finally:
            await ws.close()
        # Data stored before evota bounded it (written straight to the table, as an older
        # version did) must render too: 300 deep, and a NUL.
        async with rt.engine.begin() as conn:
            for data in ({"data": nested(300)}, {"data": "\x00"}):
                await conn.execute(
                    insert(ChargerEvent).values(
                        charger_id="CP-DEEP",
                        kind="data_transfer",
                        status="old",
                        data=data,
                        received_at=datetime.now(UTC),
                    )
                )
        await rt.fleet.writer.flush()
        async with api_client(rt) as api:
            r = await api.get("/api/v1/chargers/CP-DEEP")
            assert r.status_code == 200, r.text
            kinds = [e["kind"] for e in r.json()["recent_events"]]
            assert kinds.count("data_transfer") == 3
        token = await session_for(rt, "viewer", ["viewer"])
        async with api_client(rt, None) as web:
            web.cookies.set("evota_session", token)
            r = await web.get("/console/chargers/CP-DEEP")
            assert r.status_code == 200, r.text[:500]
            assert "CP-DEEP" in r.text
    finally:
        await rt.stop()


async def test_a_charger_cannot_touch_another_chargers_session(rt: Runtime) -> None:
    """A transactionId is the charger's own: StopTransaction and MeterValues naming another
    charger's session used to stop it and overwrite its meter (a billing record)."""
    owner = await charger(rt, "CP-OWNER", "ocpp1.6")
    other = await charger(rt, "CP-INTRUDER", "ocpp1.6")
    at = "2026-01-01T00:00:00Z"
    try:
        started = await call(
            owner,
            "StartTransaction",
            {"connectorId": 1, "idTag": "tag", "meterStart": 100, "timestamp": at},
        )
        txn = started[2]["transactionId"]
        sample = [{"timestamp": at, "sampledValue": [{"value": "999999"}]}]
        meter = {"connectorId": 1, "transactionId": txn, "meterValue": sample}
        assert (await call(other, "MeterValues", meter))[0] == 3
        stop = {"transactionId": txn, "meterStop": 999999, "timestamp": at}
        assert (await call(other, "StopTransaction", stop))[0] == 3  # answered, not applied
        own = [{"timestamp": at, "sampledValue": [{"value": "150"}]}]
        meter = {"connectorId": 1, "transactionId": txn, "meterValue": own}
        assert (await call(owner, "MeterValues", meter))[0] == 3
    finally:
        await owner.close()
        await other.close()
    await rt.fleet.writer.flush()
    async with rt.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    ChargingSession.outcome,
                    ChargingSession.meter_last_wh,
                    ChargingSession.stopped_at,
                ).where(ChargingSession.id == txn)
            )
        ).one()
    assert (row.outcome, row.meter_last_wh, row.stopped_at) == ("active", 150, None)


def test_a_field_named_by_the_charger_is_cut_in_the_callerror() -> None:
    from evota.ocpp import schemas
    from evota.ocpp.errors import RpcError

    with pytest.raises(RpcError) as caught:
        schemas.v16().validate_request("Heartbeat", {"k" * 200_000: 1}, "m1")
    assert caught.value.details["field"] == "k" * 99 + "\u2026"
    assert len(caught.value.description) < 300


def test_stored_json_too_deep_to_parse_reads_as_a_marker() -> None:
    """Rows written before the limits existed may hold JSON too deep for ``json.loads``."""
    from evota.store.db import _json_loads

    assert _json_loads("[" * 100_000 + "]" * 100_000) == {"\u2026": "nested too deep to read"}
    assert _json_loads('{"a": [1]}') == {"a": [1]}
