"""Who may charge: the token store answers Authorize and transactions (issue 12, item 26).

Real evota with the secure default (``authorize_all`` off), real WebSocket clients and the
fleet simulator as chargers on loopback, a real HTTP server for the webhook.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection

from evota.control.commands import TriggerMessage
from evota.fleet import tokens
from evota.fleet.tokens import NOT_HERE, TokenRecord, decide
from evota.runtime import Runtime
from evota.sim import Fleet, SiteSpec, fleet_from_flags
from evota.sim.control.state import state as sim_state
from evota.store.models import AuditEntry, ChargingSession

from .conftest import TOKEN, api_client, connect, provision, start_runtime
from .sim.conftest import fast

KEY = "token-test-key-0123456789"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


# -- the pure decision ---------------------------------------------------------------------


def test_decision_cases() -> None:
    assert decide(None, "s1", NOW) == tokens.INVALID
    ok = TokenRecord("A", parent_id="G")
    assert decide(ok, "s1", NOW) == tokens.Decision("Accepted", None, "G")
    assert decide(TokenRecord("A", "Blocked"), "s1", NOW).status == "Blocked"
    assert decide(TokenRecord("A", "Invalid"), "s1", NOW).status == "Invalid"
    past = TokenRecord("A", expires_at=NOW - timedelta(seconds=1))
    assert decide(past, "s1", NOW).status == "Expired"
    at_expiry = TokenRecord("A", expires_at=NOW)
    assert decide(at_expiry, "s1", NOW).status == "Expired"
    future = TokenRecord("A", expires_at=NOW + timedelta(days=1))
    assert decide(future, "s1", NOW) == tokens.Decision("Accepted", future.expires_at, None)
    here = TokenRecord("A", sites=frozenset({"s1"}))
    assert decide(here, "s1", NOW).status == "Accepted"
    assert decide(here, "s2", NOW).status == NOT_HERE
    assert decide(here, None, NOW).status == NOT_HERE  # a charger at no site
    typed = TokenRecord("A", type="ISO14443")
    assert decide(typed, None, NOW, "ISO14443").accepted
    assert decide(typed, None, NOW, "Central") == tokens.INVALID
    assert decide(typed, None, NOW, None).accepted  # 1.6 id tags have no type
    # Blocked wins over expiry and place; 1.6 has no NotAtThisLocation
    blocked = TokenRecord("A", "Blocked", expires_at=NOW, sites=frozenset({"s9"}))
    assert decide(blocked, "s1", NOW).status == "Blocked"
    assert tokens.status_16(NOT_HERE) == "Invalid"
    assert tokens.status_16("Blocked") == "Blocked"


records = st.builds(
    TokenRecord,
    id_token=st.text("ABC123", min_size=1, max_size=4),
    status=st.sampled_from(tokens.STATUSES),
    type=st.none() | st.sampled_from(tokens.TOKEN_TYPES),
    expires_at=st.none()
    | st.datetimes(
        timezones=st.just(UTC), min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1)
    ),
    parent_id=st.none() | st.text("G1", min_size=1, max_size=3),
    sites=st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=2),
)


@given(
    record=st.none() | records,
    site=st.none() | st.sampled_from(["s1", "s2", "s3"]),
    now=st.datetimes(
        timezones=st.just(UTC), min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1)
    ),
    token_type=st.none() | st.sampled_from(tokens.TOKEN_TYPES),
)
def test_decision_properties(
    record: TokenRecord | None, site: str | None, now: datetime, token_type: str | None
) -> None:
    d = decide(record, site, now, token_type)
    assert d.status in (*tokens.STATUSES, NOT_HERE)
    # Accepted only for a known, Accepted, unexpired token of the right type at an allowed site
    expected_accept = (
        record is not None
        and record.status == "Accepted"
        and (record.expires_at is None or now < record.expires_at)
        and (not record.sites or site in record.sites)
        and (record.type is None or token_type is None or record.type == token_type)
    )
    assert d.accepted == expected_accept
    if record is None:
        assert d == tokens.INVALID
    elif record.status != "Accepted" and d.status != "Invalid":
        assert d.status == record.status  # what the operator set is never softened
    # the local list holds exactly the tokens not refused for their place, same statuses
    listed = tokens.local_list([record] if record else [], site, now)
    if record is None:
        assert listed == {}
    elif decide(record, site, now).status == NOT_HERE:
        assert record.id_token not in listed
    else:
        assert listed[record.id_token]["status"] == decide(record, site, now).status


def test_list_changes() -> None:
    sent = {"A": {"status": "Accepted"}, "B": {"status": "Accepted"}}
    wanted = {"A": {"status": "Blocked"}, "C": {"status": "Accepted"}}
    assert tokens.list_changes(sent, wanted) == {
        "A": {"status": "Blocked"},
        "C": {"status": "Accepted"},
        "B": None,
    }
    assert tokens.list_changes(wanted, wanted) == {}


# -- through real chargers -----------------------------------------------------------------


@pytest.fixture
async def secure(tmp_path: Path, database_url: str) -> AsyncIterator[Runtime]:
    """evota as shipped: the token store decides (the lab setting off)."""
    rt = await start_runtime(tmp_path, database_url, authorize_all=False)
    yield rt
    await rt.stop()


@pytest.fixture
async def secure_sqlite(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    rt = await start_runtime(tmp_path, sqlite_url, authorize_all=False)
    yield rt
    await rt.stop()


async def call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One CALL; evota's CALLRESULT payload (a CALLERROR fails the test). evota's own CALLs
    on the way (the configuration read a second after a 1.6 boot) are refused as a charger
    that does not implement them would, so they never stand in for the answer."""
    message_id = f"t{next(_ids)}"
    await ws.send(orjson.dumps([2, message_id, action, payload]).decode())
    while True:
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer[0] != 2:
            break
        await ws.send(orjson.dumps([4, answer[1], "NotImplemented", "", {}]).decode())
    assert answer[0] == 3 and answer[1] == message_id, answer
    return dict(answer[2])


async def charger(
    rt: Runtime, charger_id: str, protocol: str, site_id: str | None = None
) -> ClientConnection:
    """A provisioned, connected, booted (Accepted) charger speaking ``protocol``."""
    await provision(rt, charger_id, KEY, **({"site_id": site_id} if site_id else {}))
    ws = await connect(rt, charger_id, KEY, subprotocols=[protocol])
    if protocol == "ocpp2.0.1":
        boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M"}}
    else:
        boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    assert (await call(ws, "BootNotification", boot))["status"] == "Accepted"
    return ws


def ts() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def authorize_16(ws: ClientConnection, tag: str) -> dict[str, Any]:
    return dict((await call(ws, "Authorize", {"idTag": tag}))["idTagInfo"])


async def start_16(ws: ClientConnection, tag: str) -> dict[str, Any]:
    payload = {"connectorId": 1, "idTag": tag, "meterStart": 0, "timestamp": ts()}
    return await call(ws, "StartTransaction", payload)


async def authorize_201(ws: ClientConnection, tag: str, kind: str = "ISO14443") -> dict[str, Any]:
    answer = await call(ws, "Authorize", {"idToken": {"idToken": tag, "type": kind}})
    return dict(answer["idTokenInfo"])


async def started_201(ws: ClientConnection, tag: str, kind: str = "ISO14443") -> dict[str, Any]:
    payload = {
        "eventType": "Started",
        "timestamp": ts(),
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": f"tx-{next(_ids)}"},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": tag, "type": kind},
    }
    return await call(ws, "TransactionEvent", payload)


async def test_unknown_cards_are_invalid_on_both_protocols(secure: Runtime) -> None:
    rt = secure
    v16 = await charger(rt, "TOK-16", "ocpp1.6")
    v201 = await charger(rt, "TOK-201", "ocpp2.0.1")
    try:
        assert await authorize_16(v16, "NOBODY") == {"status": "Invalid"}
        started = await start_16(v16, "NOBODY")
        assert started["idTagInfo"] == {"status": "Invalid"}
        assert isinstance(started["transactionId"], int)  # 1.6 needs one; the charger stops
        assert await authorize_201(v201, "NOBODY") == {"status": "Invalid"}
        assert (await started_201(v201, "NOBODY"))["idTokenInfo"] == {"status": "Invalid"}
        # an event without an idToken asks nothing: no idTokenInfo
        payload = {
            "eventType": "Updated",
            "timestamp": ts(),
            "triggerReason": "MeterValuePeriodic",
            "seqNo": 1,
            "transactionInfo": {"transactionId": "no-token"},
        }
        assert "idTokenInfo" not in await call(v201, "TransactionEvent", payload)
    finally:
        await v16.close()
        await v201.close()


async def test_the_store_decides_accepted_blocked_expired_and_site(secure_sqlite: Runtime) -> None:
    rt = secure_sqlite
    async with api_client(rt) as api:
        for site in ("paris", "lyon"):
            assert (
                await api.post("/api/v1/sites", json={"id": site, "name": site})
            ).status_code == 201
        later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
        for body in (
            {"id_token": "GOOD", "parent_id": "FLEET", "expires_at": later.isoformat()},
            {"id_token": "BLOCKED", "status": "Blocked"},
            {"id_token": "OLD", "expires_at": "2020-01-01T00:00:00Z"},
            {"id_token": "LYON-ONLY", "sites": ["lyon"]},
            {"id_token": "APP", "type": "Central"},
        ):
            r = await api.post("/api/v1/id-tokens", json=body)
            assert r.status_code == 201, r.text
        v16 = await charger(rt, "PAR-16", "ocpp1.6", "paris")
        v201 = await charger(rt, "PAR-201", "ocpp2.0.1", "paris")
        lyon = await charger(rt, "LYO-16", "ocpp1.6", "lyon")
        try:
            expiry = later.isoformat().replace("+00:00", "Z")
            good = await authorize_16(v16, "GOOD")
            assert good == {"status": "Accepted", "expiryDate": expiry, "parentIdTag": "FLEET"}
            assert (await start_16(v16, "GOOD"))["idTagInfo"]["status"] == "Accepted"
            assert (await authorize_16(v16, "BLOCKED"))["status"] == "Blocked"
            assert (await start_16(v16, "OLD"))["idTagInfo"]["status"] == "Expired"
            assert (await authorize_16(v16, "LYON-ONLY"))["status"] == "Invalid"  # 1.6
            assert (await authorize_16(lyon, "LYON-ONLY"))["status"] == "Accepted"
            info = await authorize_201(v201, "GOOD")
            assert info == {
                "status": "Accepted",
                "cacheExpiryDateTime": expiry,
                "groupIdToken": {"idToken": "FLEET", "type": "ISO14443"},
            }
            assert (await authorize_201(v201, "BLOCKED"))["status"] == "Blocked"
            assert (await started_201(v201, "OLD"))["idTokenInfo"]["status"] == "Expired"
            assert (await authorize_201(v201, "LYON-ONLY"))["status"] == "NotAtThisLocation"
            assert (await authorize_201(v201, "APP", "Central"))["status"] == "Accepted"
            assert (await authorize_201(v201, "APP", "ISO14443"))["status"] == "Invalid"
            # a change is seen by the very next Authorize (the in-memory store is reloaded)
            r = await api.patch("/api/v1/id-tokens/GOOD", json={"status": "Blocked"})
            assert r.status_code == 200 and r.json()["status"] == "Blocked", r.text
            assert (await authorize_16(v16, "GOOD"))["status"] == "Blocked"
            assert (await api.delete("/api/v1/id-tokens/GOOD")).status_code == 204
            assert (await authorize_201(v201, "GOOD")) == {"status": "Invalid"}
            # StopTransaction's idTagInfo is the store's too
            stop = {"transactionId": 1, "meterStop": 10, "timestamp": ts(), "idTag": "BLOCKED"}
            assert (await call(v16, "StopTransaction", stop))["idTagInfo"]["status"] == "Blocked"
        finally:
            for ws in (v16, v201, lyon):
                await ws.close()


async def test_simulated_fleet_charges_only_with_provisioned_cards(secure_sqlite: Runtime) -> None:
    rt = secure_sqlite
    spec = fleet_from_flags(2, prefix="CARD-", seed="cards", v201_fraction=0.5)
    config = fast(speed=600.0, session_duration=(60.0, 60.0), meter_interval=20.0)
    fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=config)
    await fleet.provision(f"http://127.0.0.1:{rt.http_port}", TOKEN)
    async with api_client(rt) as api:
        assert (
            await api.post("/api/v1/id-tokens", json={"id_token": "CARD-OK"})
        ).status_code == 201
    async with fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 10)
        for sim in fleet:
            assert await sim.begin_session(1, id_tag="CARD-OK") is True
            assert await sim.begin_session(1, id_tag="STOLEN") is False
            assert sim.stats.authorize_rejected == 1
    async with rt.engine.connect() as conn:
        tags = (await conn.execute(select(ChargingSession.id_tag))).scalars().all()
    assert sorted(tags) == ["CARD-OK", "CARD-OK"]  # the refused card never started one


# -- the API ---------------------------------------------------------------------------------


async def test_api_validates_and_names_the_field(secure: Runtime) -> None:
    rt = secure
    async with api_client(rt) as api:
        bad = [
            ({"id_token": "A", "status": "Maybe"}, "status"),
            ({"id_token": "has space"}, "id_token"),
            ({"id_token": "X" * 37}, "id_token"),
            ({"id_token": "A", "type": "Card"}, "type"),
            ({"id_token": "A", "expires_at": "2027-01-01T00:00:00"}, "expires_at"),
            ({"id_token": "A", "sites": ["nowhere"]}, "sites"),
            ({"id_token": "A", "colour": "red"}, "colour"),
        ]
        for body, field in bad:
            r = await api.post("/api/v1/id-tokens", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["field"].startswith(field), (body, r.json())
        assert (await api.post("/api/v1/id-tokens", json={"id_token": "A"})).status_code == 201
        dup = await api.post("/api/v1/id-tokens", json={"id_token": "A"})
        assert dup.status_code == 409 and dup.json()["field"] == "id_token"
        missing = await api.get("/api/v1/id-tokens/NOPE")
        assert missing.status_code == 404 and missing.json()["field"] == "id_token"
        assert (
            await api.patch("/api/v1/id-tokens/NOPE", json={"status": "Blocked"})
        ).status_code == 404
        r = await api.patch("/api/v1/id-tokens/A", json={"status": None})
        assert r.status_code == 422 and r.json()["field"] == "status"
        assert (await api.delete("/api/v1/id-tokens/NOPE")).status_code == 404
        for i in range(5):
            status = "Blocked" if i % 2 else "Accepted"
            await api.post("/api/v1/id-tokens", json={"id_token": f"L{i}", "status": status})
        page = (await api.get("/api/v1/id-tokens", params={"status": "Blocked", "limit": 1})).json()
        assert (page["total"], [t["id_token"] for t in page["items"]]) == (2, ["L1"])
        page = (await api.get("/api/v1/id-tokens", params={"q": "l", "offset": 4})).json()
        assert page["total"] == 5 and [t["id_token"] for t in page["items"]] == ["L4"]
        for site in ("s_1", "s%1", "sx1"):
            assert (
                await api.post("/api/v1/sites", json={"id": site, "name": site})
            ).status_code in (201, 422)
        await api.post("/api/v1/id-tokens", json={"id_token": "ONLY-S1", "sites": ["sx1"]})
        page = (await api.get("/api/v1/id-tokens", params={"site": "s_1"})).json()
        assert "ONLY-S1" not in [t["id_token"] for t in page["items"]]  # "_" is no wildcard
        page = (await api.get("/api/v1/id-tokens", params={"site": "sx1"})).json()
        assert "ONLY-S1" in [t["id_token"] for t in page["items"]] and page["total"] == 7
        r = await api.patch("/api/v1/id-tokens/A", json={"status": "Blocked", "parent_id": "G"})
        assert r.status_code == 200, r.text
    async with rt.engine.connect() as conn:
        actions = (
            await conn.execute(
                select(AuditEntry.action, AuditEntry.outcome, AuditEntry.target, AuditEntry.detail)
            )
        ).all()
    created = [a for a in actions if a.action == "api.create_id_token" and a.outcome == "ok"]
    assert created and created[0].target == "A"
    assert created[0].detail["target_type"] == "id_token"
    assert created[0].detail["changes"]["status"] == {"before": None, "after": "Accepted"}
    updated = [a for a in actions if a.action == "api.update_id_token" and a.outcome == "ok"]
    assert updated[-1].target == "A"
    assert updated[-1].detail["changes"] == {
        "status": {"before": "Accepted", "after": "Blocked"},
        "parent_id": {"before": None, "after": "G"},
    }


CSV_BAD = """id_token,status,type,expires_at,parent_id,sites
GOOD-1,Accepted,ISO14443,2030-01-01T00:00:00Z,FLEET,
BAD-STATUS,Maybe,,,,
BAD-DATE,Accepted,,tomorrow,,
GOOD-2,Blocked,,,,
GOOD-1,Accepted,,,,
"""


async def test_csv_import_reports_every_bad_row_and_imports_nothing(secure_sqlite: Runtime) -> None:
    rt = secure_sqlite
    async with api_client(rt) as api:
        headers = {"content-type": "text/csv"}
        r = await api.post("/api/v1/id-tokens/import", content=CSV_BAD, headers=headers)
        assert r.status_code == 422, r.text
        errors = [(e["row"], e["field"]) for e in r.json()["errors"]]
        assert errors == [(3, "status"), (4, "expires_at"), (6, "id_token")]
        assert r.json()["field"] == "status"
        assert (await api.get("/api/v1/id-tokens")).json()["total"] == 0
        r = await api.post(
            "/api/v1/id-tokens/import",
            content="id_token,sites\nS-1,nowhere\n",
            headers=headers,
        )
        assert r.status_code == 422 and r.json()["errors"][0] == {
            "row": 2,
            "field": "sites",
            "message": "no site 'nowhere'",
        }
        r = await api.post("/api/v1/id-tokens/import", content="colour\nred\n", headers=headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "id_token"
        r = await api.post("/api/v1/id-tokens/import", json={"id_token": "A"})
        assert r.status_code == 415
        good = "\n".join([*CSV_BAD.splitlines()[:2], CSV_BAD.splitlines()[4]]) + "\n"
        r = await api.post("/api/v1/id-tokens/import", content=good, headers=headers)
        assert r.json() == {"created": 2, "updated": 0}, r.text
        again = good.replace("GOOD-2,Blocked", "GOOD-2,Accepted")
        r = await api.post("/api/v1/id-tokens/import", content=again, headers=headers)
        assert r.json() == {"created": 0, "updated": 2}, r.text
        one = (await api.get("/api/v1/id-tokens/GOOD-1")).json()
        assert (one["type"], one["parent_id"], one["expires_at"]) == (
            "ISO14443",
            "FLEET",
            "2030-01-01T00:00:00Z",
        )
    assert rt.fleet.tokens.records["GOOD-2"].status == "Accepted"  # the store was reloaded


# -- local authorization lists ---------------------------------------------------------------


async def test_sync_sends_full_then_differential_lists_to_simulated_chargers(
    secure: Runtime,
) -> None:
    rt = secure
    sites = [SiteSpec(id="site-a", name="A")]
    spec = fleet_from_flags(2, prefix="LL-", seed="lists", sites=sites, v201_fraction=0.5)
    fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=fast())
    await fleet.provision(f"http://127.0.0.1:{rt.http_port}", TOKEN)
    async with api_client(rt) as api, fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 10)
        for body in (
            {"id_token": "CARD-1", "parent_id": "FLEET"},
            {"id_token": "CARD-2", "status": "Blocked"},
            {"id_token": "ELSEWHERE", "sites": ["site-a"]},
            {"id_token": "L" * 30},  # longer than a 1.6 id tag: answered online only
        ):
            assert (await api.post("/api/v1/id-tokens", json=body)).status_code == 201
        ids = [c.identity for c in fleet]
        r = await api.post("/api/v1/id-tokens/sync", json={"charger_ids": ids, "reason": "t"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [(x["status"], x["update_type"], x["version"], x["entries"]) for x in results] == [
            ("Accepted", "Full", 1, 3)
        ] * 2
        for sim in fleet:
            local = sim_state(sim).local_list
            assert local.version == 1
            assert set(local.entries) == {"CARD-1", "CARD-2", "ELSEWHERE"}
            assert local.entries["CARD-2"]["status"] == "Blocked"
        # from now on every change reaches them by itself: the differences, version + 1
        await api.patch("/api/v1/id-tokens/CARD-1", json={"status": "Blocked"})
        await rt.local_lists.idle()
        for sim in fleet:
            local = sim_state(sim).local_list
            assert local.version == 2 and local.entries["CARD-1"]["status"] == "Blocked"
        await api.delete("/api/v1/id-tokens/ELSEWHERE")
        await rt.local_lists.idle()
        for sim in fleet:
            local = sim_state(sim).local_list
            assert local.version == 3 and set(local.entries) == {"CARD-1", "CARD-2"}
        r = await api.post("/api/v1/id-tokens/sync", json={"charger_ids": ids})
        assert [x["status"] for x in r.json()["results"]] == ["unchanged"] * 2
        # a charger that lost its list gets the whole list again when it boots
        lost = fleet[ids[0]]
        sim_state(lost).local_list = type(sim_state(lost).local_list)()
        assert (await rt.gateway.send(ids[0], TriggerMessage("BootNotification"))).status == (
            "Accepted"
        )
        await fleet.wait_until(lambda f: sim_state(lost).local_list.version == 4, 10)
        assert set(sim_state(lost).local_list.entries) == {"CARD-1", "CARD-2"}
        unknown = await api.post("/api/v1/id-tokens/sync", json={"charger_ids": ["NOPE"]})
        assert unknown.status_code == 404 and unknown.json()["field"] == "charger_ids"
    async with rt.engine.connect() as conn:
        sent = (
            await conn.execute(
                select(AuditEntry.actor, AuditEntry.reason, AuditEntry.detail)
                .where(AuditEntry.action == "command.send-local-list")
                .order_by(AuditEntry.seq)
            )
        ).all()
    kinds = [(e.actor, e.reason, e.detail["params"]["update_type"]) for e in sent]
    admin = kinds[0][0]
    assert kinds == [
        (admin, "t", "Full"),
        (admin, "t", "Full"),
        *[(admin, "id tokens changed", "Differential")] * 4,
        ("system", "charger booted", "Full"),
    ]


# -- the webhook and the lab setting -----------------------------------------------------------


class Webhook:
    """A real HTTP server on loopback answering like an operator's authorization service."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.requests.append(body)
                if body["id_token"] == "WEB-SLOW":
                    hook.release.wait(10)  # longer than evota waits
                if body["id_token"] == "WEB-ERROR":
                    self.send_response(500)
                    self.end_headers()
                    return
                answer = {"status": "Accepted", "parent_id": "WEB"}
                if body["id_token"] == "WEB-BAD":
                    answer = {"status": "Sure"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/authorize"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


async def test_webhook_decides_unknown_tokens_and_fails_closed(
    tmp_path: Path, sqlite_url: str
) -> None:
    hook = Webhook()
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        authorize_all=False,
        authorization_webhook_url=hook.url,
        authorization_webhook_timeout=0.5,
    )
    try:
        async with api_client(rt) as api:
            await api.post("/api/v1/sites", json={"id": "paris", "name": "Paris"})
            await api.post(
                "/api/v1/id-tokens", json={"id_token": "KNOWN-BLOCKED", "status": "Blocked"}
            )
        v201 = await charger(rt, "WEB-201", "ocpp2.0.1", "paris")
        v16 = await charger(rt, "WEB-16", "ocpp1.6")
        try:
            info = await authorize_201(v201, "WEB-OK", "eMAID")
            assert info == {
                "status": "Accepted",
                "groupIdToken": {"idToken": "WEB", "type": "ISO14443"},
            }
            assert hook.requests == [
                {"charger_id": "WEB-201", "id_token": "WEB-OK", "type": "eMAID", "site": "paris"}
            ]
            assert (await started_201(v201, "WEB-OK"))["idTokenInfo"]["status"] == "Accepted"
            assert (await start_16(v16, "WEB-OK"))["idTagInfo"]["status"] == "Accepted"
            assert hook.requests[-1] == {
                "charger_id": "WEB-16",
                "id_token": "WEB-OK",
                "type": None,
                "site": None,
            }
            # the store's own answer wins: the webhook is not asked about known tokens
            asked = len(hook.requests)
            assert (await authorize_16(v16, "KNOWN-BLOCKED"))["status"] == "Blocked"
            assert len(hook.requests) == asked
            # failures answer Invalid: an error, an answer that is not one, a timeout
            assert (await authorize_16(v16, "WEB-ERROR")) == {"status": "Invalid"}
            assert (await authorize_16(v16, "WEB-BAD")) == {"status": "Invalid"}
            assert (await authorize_16(v16, "WEB-SLOW")) == {"status": "Invalid"}
            hook.release.set()
        finally:
            await v201.close()
            await v16.close()
    finally:
        await rt.stop()
        hook.close()


async def test_accept_all_is_a_loud_lab_setting(tmp_path: Path, sqlite_url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        rt = await start_runtime(tmp_path, sqlite_url, authorize_all=True)
    try:
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert any("EVOTA_AUTHORIZE_ALL" in e["event"] for e in warnings), logs
        ws = await charger(rt, "LAB-16", "ocpp1.6")
        try:
            assert (await authorize_16(ws, "ANYONE"))["status"] == "Accepted"
        finally:
            await ws.close()
    finally:
        await rt.stop()


def test_the_default_is_the_token_store() -> None:
    from evota.config import Settings

    assert Settings().authorize_all is False


# -- the CLI ---------------------------------------------------------------------------------


async def test_cli_manages_tokens_and_reports_bad_csv_rows(
    secure_sqlite: Runtime, tmp_path: Path
) -> None:
    from .test_cli import invoke

    rt = secure_sqlite
    async with api_client(rt) as api:
        await api.post("/api/v1/sites", json={"id": "depot", "name": "Depot"})
    r = await invoke(rt, "id-token", "add", "CLI-0", "--expires", "next year")
    assert r.exit_code == 1 and "--expires: not an ISO 8601 time" in r.output, r.output
    r = await invoke(rt, "id-token", "add", "CLI-1", "--site", "depot", "--expires", "2030-01-01")
    assert r.exit_code == 0, r.output
    assert "CLI-1" in r.stdout and "depot" in r.stdout
    assert rt.fleet.tokens.records["CLI-1"].sites == frozenset({"depot"})
    r = await invoke(rt, "id-token", "block", "CLI-1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "Blocked", r.output
    assert rt.fleet.tokens.records["CLI-1"].status == "Blocked"
    r = await invoke(rt, "id-token", "unblock", "CLI-1")
    assert r.exit_code == 0 and "Accepted" in r.stdout, r.output
    bad = tmp_path / "cards.csv"
    bad.write_text("id_token,status\nOK-1,Accepted\nBAD-1,Maybe\nBAD 2,Blocked\n")
    r = await invoke(rt, "id-token", "import", str(bad))
    assert r.exit_code == 1
    assert "line 3, status" in r.output and "line 4, id_token" in r.output, r.output
    assert "Traceback" not in r.output
    good = tmp_path / "good.csv"
    good.write_text("id_token,status,sites\nOK-1,Accepted,depot\nOK-2,Blocked,\n")
    r = await invoke(rt, "id-token", "import", str(good))
    assert r.exit_code == 0 and "2 new, 0 replaced" in r.stdout, r.output
    r = await invoke(rt, "id-token", "list", "--status", "Blocked", "--json")
    assert [t["id_token"] for t in json.loads(r.stdout)["items"]] == ["OK-2"]
    r = await invoke(rt, "id-token", "show", "NOPE")
    assert r.exit_code == 1 and "HTTP 404" in r.output
    r = await invoke(rt, "id-token", "add", "X", "--status", "Maybe")
    assert r.exit_code == 1 and "status" in r.output
    r = await invoke(rt, "id-token", "import", str(tmp_path / "missing.csv"))
    assert r.exit_code == 1 and "missing.csv" in r.output
    r = await invoke(rt, "id-token", "delete", "OK-1")
    assert r.exit_code == 0 and "OK-1" not in rt.fleet.tokens.records
    r = await invoke(rt, "id-token", "sync", "NOPE")
    assert r.exit_code == 1 and "HTTP 404" in r.output


async def test_sim_cli_drivers_present_the_given_cards(secure_sqlite: Runtime) -> None:
    import typer
    from typer.testing import CliRunner

    from evota.sim.cli import sim_command

    rt = secure_sqlite
    async with api_client(rt) as api:
        assert (
            await api.post("/api/v1/id-tokens", json={"id_token": "SIMCARD"})
        ).status_code == 201
    app = typer.Typer()
    app.command()(sim_command)
    args = [
        "--url", f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", "--count", "2", "--prefix", "SC-",
        "--provision", "--api-url", f"http://127.0.0.1:{rt.http_port}", "--token", TOKEN,
        "--id-tag", "SIMCARD", "--session-rate", "3600", "--speed", "600", "--duration", "3",
    ]  # fmt: skip
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env={"EVOTA_TOKEN": ""})
    assert result.exit_code == 0, result.output
    async with rt.engine.connect() as conn:
        tags = (await conn.execute(select(ChargingSession.id_tag))).scalars().all()
    assert tags and set(tags) == {"SIMCARD"}
