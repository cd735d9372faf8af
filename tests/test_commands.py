"""Every remote command end to end: REST (and CLI) -> evota -> OCPP 1.6 -> the simulated
charger, which really does it (sessions start and stop, connectors go Unavailable, files are
uploaded over HTTP into evota). Each command leaves one audit entry with the charger's answer;
missing answers map to 409/504/502, bad input to 422 naming the field."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from evota.cli import app as cli_app
from evota.control import catalog
from evota.firmware import signing
from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.control.state import ControlState, state
from evota.store.models import AuditCharger, AuditEntry, ChargerEvent, ChargerFile

from .conftest import TOKEN, Keys, connect, provision
from .sim.conftest import fast
from .support import until
from .test_firmware_update import Bench, running

FAST = {"call_timeout": 3.0}


class CommandBench(Bench):
    """Bench with simulated chargers tuned for commands (long remote sessions, small files)."""

    async def sim(
        self, identity: str = "CMD-0001", *, capability: str = "both", **config: Any
    ) -> SimulatedCharger:
        base = fleet_from_flags(1, prefix=identity[:-4], seed="cmd", firmware_update=capability)
        spec = replace(base.chargers[0], firmware_roots=(self.keys.ca_cert.decode(),))
        settings: dict[str, Any] = {
            "speed": 600.0,
            "download_retry_interval": 0.2,
            "upload_bytes": 20_000,
            **config,
        }
        fleet = Fleet.from_spec(
            replace(base, chargers=(spec,)),
            f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp",
            config=fast(**settings),
        )
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        self.fleets.append(fleet)
        await fleet.start()
        charger = fleet[spec.identity]
        await fleet.wait_until(lambda f: charger.accepted, 10)
        await until(lambda: self.charger_row(spec.identity), lambda c: c["vendor"])
        await until(lambda: charger.connector_status, lambda s: all(s.values()), timeout=5)
        return charger

    async def command(
        self, charger_id: str, name: str, reason: str | None = "test", **params: Any
    ) -> httpx.Response:
        body = {**params, **({"reason": reason} if reason is not None else {})}
        return await self.api.post(f"/api/v1/chargers/{charger_id}/commands/{name}", json=body)

    async def ok(self, charger_id: str, name: str, **params: Any) -> dict[str, Any]:
        r = await self.command(charger_id, name, **params)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        assert answer["charger_id"] == charger_id and answer["command"] == name
        return answer

    async def audit(self, name: str) -> list[Any]:
        async with self.rt.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action == f"command.{name}")
                    .order_by(AuditEntry.seq)
                )
            ).all()
        return list(rows)

    async def events(self, charger_id: str, kind: str) -> list[str | None]:
        async with self.rt.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ChargerEvent.status)
                    .where(ChargerEvent.charger_id == charger_id, ChargerEvent.kind == kind)
                    .order_by(ChargerEvent.id)
                )
            ).all()
        return [r.status for r in rows]


@pytest.fixture
async def bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[CommandBench]:
    async with running(CommandBench, tmp_path, sqlite_url, keys, **FAST) as b:
        yield b


@pytest.fixture
async def any_db_bench(
    tmp_path: Path, database_url: str, keys: Keys
) -> AsyncIterator[CommandBench]:
    async with running(CommandBench, tmp_path, database_url, keys, **FAST) as b:
        yield b


def control(charger: SimulatedCharger) -> ControlState:
    return state(charger)


# -- the catalog and its routes -----------------------------------------------------------------


def test_the_catalog_covers_every_1_6_remote_command_with_the_right_criticality():
    critical = {n for n, s in catalog.COMMANDS.items() if s.critical}
    assert critical == {
        "reset",
        "remote-start",
        "remote-stop",
        "unlock-connector",
        "change-availability",
        "change-configuration",
        "send-local-list",
        "set-charging-profile",
        "clear-charging-profile",
        "clear-cache",
        "install-certificate",
        "delete-certificate",
        "set-variables",  # OCPP 2.0.1 only
    }
    assert set(catalog.COMMANDS) - critical == {
        "get-configuration",
        "get-local-list-version",
        "get-diagnostics",
        "get-log",
        "trigger-message",
        "get-installed-certificate-ids",
        "data-transfer",
        "get-variables",  # OCPP 2.0.1 only
        "get-base-report",  # OCPP 2.0.1 only
    }


async def test_openapi_shows_one_route_and_body_per_command(bench: CommandBench):
    spec = (await bench.api.get("/api/openapi.json")).json()
    for name, command in catalog.COMMANDS.items():
        post = spec["paths"][f"/api/v1/chargers/{{charger_id}}/commands/{name}"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert "reason" in body["properties"]
        assert set(command.params.model_fields) <= set(body["properties"]), name
        assert body.get("additionalProperties") is False, name
    assert "/api/v1/chargers/{charger_id}/files" in spec["paths"]


# -- each command against the simulator -----------------------------------------------------------


async def test_reset_reboots_and_is_audited_with_the_answer(bench: CommandBench):
    sim = await bench.sim()
    answer = await bench.ok(sim.identity, "reset", type="Hard", reason="stuck display")
    assert answer["status"] == "Accepted"
    await until(lambda: sim.stats.boots_accepted >= 2 and sim.accepted)
    [entry] = await bench.audit("reset")
    assert (entry.outcome, entry.reason, entry.actor, entry.target) == (
        "Accepted",
        "stuck display",
        "bootstrap-admin",
        sim.identity,
    )
    assert entry.detail["params"] == {"type": "Hard"}
    assert entry.detail["answer"] == {"status": "Accepted"}
    async with bench.rt.engine.connect() as conn:
        chargers = (
            (
                await conn.execute(
                    select(AuditCharger.charger_id).where(AuditCharger.entry_id == entry.id)
                )
            )
            .scalars()
            .all()
        )
    assert chargers == [sim.identity]
    # One entry per command: the generic middleware entry is not written as well.
    async with bench.rt.engine.connect() as conn:
        generic = (
            await conn.execute(select(AuditEntry).where(AuditEntry.action.like("api.command%")))
        ).all()
    assert generic == []


async def test_remote_start_runs_a_real_session_and_remote_stop_ends_it(bench: CommandBench):
    sim = await bench.sim()
    answer = await bench.ok(sim.identity, "remote-start", id_tag="RFID-42", connector_id=2)
    assert answer["status"] == "Accepted"
    await until(lambda: 2 in sim.transactions and sim.transactions[2].transaction_id)
    txn = sim.transactions[2]
    assert txn.id_tag == "RFID-42" and sim.connector_status[2] == "Charging"
    # A busy connector refuses a second start.
    busy = await bench.ok(sim.identity, "remote-start", id_tag="RFID-43", connector_id=2)
    assert busy["status"] == "Rejected"
    stop = await bench.ok(sim.identity, "remote-stop", transaction_id=txn.transaction_id)
    assert stop["status"] == "Accepted"
    await until(lambda: 2 not in sim.transactions and sim.connector_status[2] == "Available")
    assert sim.stats.transactions_completed == 1
    unknown = await bench.ok(sim.identity, "remote-stop", transaction_id=999_999)
    assert unknown["status"] == "Rejected"
    assert [e.outcome for e in await bench.audit("remote-stop")] == ["Accepted", "Rejected"]
    assert [e.outcome for e in await bench.audit("remote-start")] == ["Accepted", "Rejected"]


async def test_unlock_stops_the_session_on_the_connector(bench: CommandBench):
    sim = await bench.sim()
    await bench.ok(sim.identity, "remote-start", id_tag="RFID-1", connector_id=1)
    await until(lambda: 1 in sim.transactions and sim.connector_status[1] == "Charging")
    answer = await bench.ok(sim.identity, "unlock-connector", connector_id=1)
    assert answer["status"] == "Unlocked"
    await until(lambda: 1 not in sim.transactions)
    assert control(sim).unlocked == [1]
    # The charger's own CALLERROR (no such connector) is a 502 naming the OCPP error code.
    r = await bench.command(sim.identity, "unlock-connector", connector_id=7)
    assert r.status_code == 502, r.text
    assert r.json()["ocpp_error_code"] == "PropertyConstraintViolation"
    assert r.json()["reason"] == "callerror"
    outcomes = [e.outcome for e in await bench.audit("unlock-connector")]
    assert outcomes == ["Unlocked", "error:callerror"]


async def test_maintenance_mode_per_connector_and_per_charger(bench: CommandBench):
    sim = await bench.sim()
    answer = await bench.ok(sim.identity, "change-availability", connector_id=1, type="Inoperative")
    assert answer["status"] == "Accepted"
    await until(lambda: sim.connector_status[1] == "Unavailable")
    assert sim.connector_status[2] == "Available"
    # The evota side sees the connector Unavailable too.
    await until(
        lambda: bench.charger_row(sim.identity),
        lambda c: (
            {k["connector_id"]: k["status"] for k in c.get("connectors", [])}.get(1)
            == "Unavailable"
        ),
    )
    # A session on connector 2: making the whole charger Inoperative is Scheduled until it ends.
    await bench.ok(sim.identity, "remote-start", id_tag="RFID-7", connector_id=2)
    await until(lambda: sim.connector_status.get(2) == "Charging")
    whole = await bench.ok(sim.identity, "change-availability", connector_id=0, type="Inoperative")
    assert whole["status"] == "Scheduled"
    await until(lambda: sim.connector_status[0] == "Unavailable")
    assert sim.connector_status[2] == "Charging"
    txn = sim.transactions[2]
    await bench.ok(sim.identity, "remote-stop", transaction_id=txn.transaction_id)
    await until(lambda: sim.connector_status[2] == "Unavailable")
    # Back in service; an unavailable connector refuses a remote start meanwhile.
    refused = await bench.ok(sim.identity, "remote-start", id_tag="RFID-8", connector_id=1)
    assert refused["status"] == "Rejected"
    back = await bench.ok(sim.identity, "change-availability", connector_id=0, type="Operative")
    assert back["status"] == "Accepted"
    await until(lambda: set(sim.connector_status.values()) == {"Available"})
    no_such = await bench.ok(sim.identity, "change-availability", connector_id=9, type="Operative")
    assert no_such["status"] == "Rejected"


async def test_configuration_read_and_change(bench: CommandBench):
    sim = await bench.sim()
    everything = await bench.ok(sim.identity, "get-configuration")
    keys = {k["key"]: k for k in everything["details"]["configuration"]}
    assert keys["NumberOfConnectors"] == {
        "key": "NumberOfConnectors",
        "readonly": True,
        "value": "2",
    }
    assert "AuthorizationKey" not in keys  # write-only
    some = await bench.ok(sim.identity, "get-configuration", keys=["HeartbeatInterval", "Nope"])
    assert [k["key"] for k in some["details"]["configuration"]] == ["HeartbeatInterval"]
    assert some["details"]["unknown_keys"] == ["Nope"]

    async def change(key: str, value: str) -> str:
        answer = await bench.ok(sim.identity, "change-configuration", key=key, value=value)
        return str(answer["status"])

    assert await change("HeartbeatInterval", "120") == "Accepted"
    assert sim.heartbeat_interval == 120
    assert await change("NumberOfConnectors", "4") == "Rejected"  # read-only
    assert await change("LocalPreAuthorize", "maybe") == "Rejected"  # not a boolean
    assert await change("FluxCapacitor", "1.21") == "NotSupported"
    assert await change("WebSocketPingInterval", "60") == "RebootRequired"
    # The charger's key and profile change how it connects: set as a plain configuration
    # change, the charger would switch while evota still expects the old one (a lock-out).
    for key in ("AuthorizationKey", "authorizationkey", "SecurityProfile"):
        r = await bench.command(sim.identity, "change-configuration", key=key, value="2")
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "key" and "/api/v1/chargers/{id}/" in r.json()["detail"]
    again = await bench.ok(sim.identity, "get-configuration", keys=["HeartbeatInterval"])
    assert again["details"]["configuration"][0]["value"] == "120"
    entries = await bench.audit("change-configuration")
    assert [e.outcome for e in entries] == [
        "Accepted",
        "Rejected",
        "Rejected",
        "NotSupported",
        "RebootRequired",
    ]
    assert sim.auth_key != "2"


async def test_local_list_and_cache(bench: CommandBench):
    sim = await bench.sim()
    version = await bench.ok(sim.identity, "get-local-list-version")
    assert (version["status"], version["details"]) == ("Accepted", {"list_version": 0})
    full = await bench.ok(
        sim.identity,
        "send-local-list",
        version=3,
        update_type="Full",
        entries=[
            {"id_tag": "A1", "status": "Accepted"},
            {"id_tag": "B2", "status": "Blocked", "expiry": "2030-01-01T00:00:00Z"},
        ],
    )
    assert full["status"] == "Accepted"
    assert set(control(sim).local_list.entries) == {"A1", "B2"}
    stale = await bench.ok(
        sim.identity, "send-local-list", version=2, update_type="Differential", entries=[]
    )
    assert stale["status"] == "VersionMismatch"
    diff = await bench.ok(
        sim.identity,
        "send-local-list",
        version=4,
        update_type="Differential",
        entries=[{"id_tag": "A1"}, {"id_tag": "C3", "status": "Accepted"}],
    )
    assert diff["status"] == "Accepted"
    assert set(control(sim).local_list.entries) == {"B2", "C3"}
    version = await bench.ok(sim.identity, "get-local-list-version")
    assert version["details"] == {"list_version": 4}
    assert (await bench.ok(sim.identity, "clear-cache"))["status"] == "Accepted"
    await bench.ok(
        sim.identity, "change-configuration", key="AuthorizationCacheEnabled", value="false"
    )
    assert (await bench.ok(sim.identity, "clear-cache"))["status"] == "Rejected"


async def test_site_limit_caps_the_power_and_clearing_lifts_it(bench: CommandBench):
    sim = await bench.sim()
    site_limit = {
        "id": 10,
        "purpose": "ChargePointMaxProfile",
        "kind": "Absolute",
        "rate_unit": "W",
        "periods": [{"start_period": 0, "limit": 7400.0}],
    }
    answer = await bench.ok(
        sim.identity, "set-charging-profile", connector_id=0, profile=site_limit
    )
    assert answer["status"] == "Accepted"
    assert sim.charging_power_kw(1) == pytest.approx(7.4)
    # Two sessions share the site limit.
    await bench.ok(sim.identity, "remote-start", id_tag="T1", connector_id=1)
    await bench.ok(sim.identity, "remote-start", id_tag="T2", connector_id=2)
    await until(lambda: len(sim.transactions) == 2)
    assert sim.charging_power_kw(1) == pytest.approx(3.7)
    # A TxProfile needs the session's connector; on an idle one the charger refuses it.
    tx = {**site_limit, "id": 11, "purpose": "TxProfile", "rate_unit": "A",
          "periods": [{"start_period": 0, "limit": 6.0, "number_phases": 1}]}  # fmt: skip
    assert (await bench.ok(sim.identity, "set-charging-profile", connector_id=1, profile=tx))[
        "status"
    ] == "Accepted"
    assert sim.charging_power_kw(1) == pytest.approx(6.0 * 230 / 1000)
    cleared = await bench.ok(sim.identity, "clear-charging-profile", profile_id=10)
    assert cleared["status"] == "Accepted"
    assert sim.charging_power_kw(2) == pytest.approx(sim.config.power_kw)
    missing = await bench.ok(sim.identity, "clear-charging-profile", profile_id=10)
    assert missing["status"] == "Unknown"


async def test_trigger_message_makes_the_charger_send_it(bench: CommandBench):
    sim = await bench.sim()
    before = sim.stats.calls_sent["StatusNotification"]
    answer = await bench.ok(sim.identity, "trigger-message", message="StatusNotification")
    assert answer["status"] == "Accepted"
    await until(lambda: sim.stats.calls_sent["StatusNotification"] >= before + 3)
    await bench.ok(sim.identity, "trigger-message", message="Heartbeat")
    await until(lambda: sim.stats.calls_sent["Heartbeat"] >= 1)
    await bench.ok(sim.identity, "trigger-message", message="MeterValues", connector_id=1)
    await until(lambda: sim.stats.calls_sent["MeterValues"] >= 1)
    # Security extension: ExtendedTriggerMessage, and the CSR arrives at evota, whose charger
    # CA signs it (tests/test_charger_certificates.py follows the certificate further).
    answer = await bench.ok(sim.identity, "trigger-message", message="SignChargePointCertificate")
    assert answer["status"] == "Accepted"
    assert sim.stats.calls_received["ExtendedTriggerMessage"] == 1
    await until(lambda: bench.events(sim.identity, "sign_certificate"), lambda e: e == ["Accepted"])
    await bench.ok(sim.identity, "trigger-message", message="DiagnosticsStatusNotification")
    await until(lambda: bench.events(sim.identity, "diagnostics_status"), lambda e: e == ["Idle"])
    refused = await bench.ok(
        sim.identity, "trigger-message", message="StatusNotification", connector_id=5
    )
    assert refused["status"] == "Rejected"


async def _download(bench: CommandBench, file_id: str) -> bytes:
    r = await bench.api.get(f"/api/v1/files/{file_id}")
    assert r.status_code == 200, r.text
    return r.content


async def test_diagnostics_upload_lands_is_listed_and_downloads_byte_identical(
    bench: CommandBench,
):
    sim = await bench.sim()
    answer = await bench.ok(sim.identity, "get-diagnostics", start="2026-01-01T00:00:00Z")
    assert answer["status"] == "Accepted"
    file_name = answer["details"]["file_name"]
    await until(
        lambda: bench.events(sim.identity, "diagnostics_status"),
        lambda e: e == ["Uploading", "Uploaded"],
    )
    [upload] = control(sim).uploads
    assert upload.status == "Uploaded" and upload.file_name == file_name
    page = (await bench.api.get(f"/api/v1/chargers/{sim.identity}/files")).json()
    assert page["total"] == 1
    [item] = page["items"]
    assert (item["kind"], item["filename"], item["size"]) == ("diagnostics", file_name, 20_000)
    assert item["sha256"] == upload.sha256
    body = await _download(bench, item["id"])
    assert hashlib.sha256(body).hexdigest() == upload.sha256 and len(body) == upload.size
    # The upload is audited as the charger's act; the command as the operator's.
    async with bench.rt.engine.connect() as conn:
        uploaded = (
            await conn.execute(select(AuditEntry).where(AuditEntry.action == "file.uploaded"))
        ).one()
    assert (uploaded.actor, uploaded.target) == (sim.identity, item["id"])
    [entry] = await bench.audit("get-diagnostics")
    assert entry.outcome == "Accepted" and entry.reason == "test"
    assert entry.detail["answer"] == {"status": "Accepted", "file_name": file_name}


async def test_get_log_uploads_with_put_and_reports_per_request(bench: CommandBench):
    sim = await bench.sim()
    answer = await bench.ok(sim.identity, "get-log", log_type="SecurityLog", request_id=77)
    assert answer["status"] == "Accepted"
    await until(
        lambda: bench.events(sim.identity, "log_status"), lambda e: e == ["Uploading", "Uploaded"]
    )
    async with bench.rt.engine.connect() as conn:
        row = (await conn.execute(select(ChargerFile))).one()
    assert (row.kind, row.request_id, row.filename) == ("log", 77, answer["details"]["file_name"])
    [upload] = control(sim).uploads
    assert hashlib.sha256(await _download(bench, row.id)).hexdigest() == upload.sha256
    logs = (await bench.api.get(f"/api/v1/chargers/{sim.identity}/files?kind=log")).json()
    assert [f["id"] for f in logs["items"]] == [row.id]
    none = (await bench.api.get(f"/api/v1/chargers/{sim.identity}/files?kind=diagnostics")).json()
    assert none["total"] == 0


async def test_certificates_install_list_delete(bench: CommandBench):
    sim = await bench.sim()
    _, root = signing.generate_ca("Evota CSMS Root", "Evota")
    installed = await bench.ok(
        sim.identity,
        "install-certificate",
        certificate_type="CentralSystemRootCertificate",
        certificate=root.decode(),
    )
    assert installed["status"] == "Accepted"
    listed = await bench.ok(
        sim.identity,
        "get-installed-certificate-ids",
        certificate_type="CentralSystemRootCertificate",
    )
    assert listed["status"] == "Accepted"
    [cert] = listed["details"]["certificates"]
    # The manufacturer root the charger trusts for firmware is listed under its own type.
    maker = await bench.ok(
        sim.identity,
        "get-installed-certificate-ids",
        certificate_type="ManufacturerRootCertificate",
    )
    assert len(maker["details"]["certificates"]) == 1
    deleted = await bench.ok(sim.identity, "delete-certificate", **cert)
    assert deleted["status"] == "Accepted"
    again = await bench.ok(sim.identity, "delete-certificate", **cert)
    assert again["status"] == "NotFound"
    gone = await bench.ok(
        sim.identity,
        "get-installed-certificate-ids",
        certificate_type="CentralSystemRootCertificate",
    )
    assert gone["status"] == "NotFound"
    [entry] = await bench.audit("install-certificate")
    assert entry.detail["params"]["subject"] == "O=Evota,CN=Evota CSMS Root"
    assert "BEGIN CERTIFICATE" not in json.dumps(entry.detail)
    r = await bench.command(
        sim.identity,
        "install-certificate",
        certificate_type="CentralSystemRootCertificate",
        certificate="not a certificate",
    )
    assert r.status_code == 422 and r.json()["field"] == "certificate"


async def test_data_transfer(bench: CommandBench):
    sim = await bench.sim()
    echo = await bench.ok(
        sim.identity,
        "data-transfer",
        vendor_id="Evota",
        message_id="echo",
        data="ping",
        reason=None,
    )
    assert (echo["status"], echo["details"]) == ("Accepted", {"data": "ping"})
    other = await bench.ok(sim.identity, "data-transfer", vendor_id="Acme", reason=None)
    assert other["status"] == "UnknownVendorId"
    unknown = await bench.ok(sim.identity, "data-transfer", vendor_id="Evota", message_id="x")
    assert unknown["status"] == "UnknownMessageId"
    [first, *_] = await bench.audit("data-transfer")
    assert first.reason is None and first.outcome == "Accepted"


async def test_a_charger_without_the_security_extension_answers_not_implemented(
    bench: CommandBench,
):
    sim = await bench.sim("PLN-0001", capability="plain")
    r = await bench.command(sim.identity, "get-log")
    assert r.status_code == 502 and r.json()["ocpp_error_code"] == "NotImplemented"
    # ...but its core GetDiagnostics works.
    assert (await bench.ok(sim.identity, "get-diagnostics"))["status"] == "Accepted"


# -- errors ------------------------------------------------------------------------------------


async def test_refusals_name_the_field(bench: CommandBench):
    sim = await bench.sim()
    cid = sim.identity
    r = await bench.command(cid, "reset", reason=None, type="Soft")
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = await bench.command(cid, "reset", reason="   ", type="Soft")
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = await bench.command(cid, "unlock-connector", connector_id=1, force=True)
    assert r.status_code == 422 and r.json()["field"] == "force"
    r = await bench.command(cid, "change-availability", connector_id=1, type="Sleepy")
    assert r.status_code == 422 and r.json()["field"] == "type"
    bad_period = {
        "id": 1,
        "purpose": "ChargePointMaxProfile",
        "rate_unit": "A",
        "periods": [{"start_period": 5, "limit": 16.05}],
    }
    r = await bench.command(cid, "set-charging-profile", profile=bad_period)
    assert r.status_code == 422
    assert r.json()["field"] == "profile.periods.0.limit"  # not a multiple of 0.1
    bad_period["periods"] = [{"start_period": 5, "limit": 16.1}]
    r = await bench.command(cid, "set-charging-profile", profile=bad_period)
    assert r.status_code == 422 and r.json()["field"] == "profile.periods"  # must start at 0
    good = {**bad_period, "periods": [{"start_period": 0, "limit": 16.0}]}
    r = await bench.command(cid, "set-charging-profile", connector_id=1, profile=good)
    assert r.status_code == 422 and r.json()["field"] == "connector_id"
    r = await bench.command(
        cid, "get-diagnostics", start="2026-02-01T00:00:00Z", stop="2026-01-01T00:00:00Z"
    )
    assert r.status_code == 422 and r.json()["field"] == "stop"
    r = await bench.command(cid, "send-local-list", version=1, entries=[{"id_tag": "X"}])
    assert r.status_code == 422 and r.json()["field"] == "entries"
    r = await bench.command("NO-SUCH", "reset", type="Soft")
    assert r.status_code == 404
    # Nothing went to the charger and no command entry was written for any of these.
    assert sim.stats.calls_received["Reset"] == 0
    assert await bench.audit("reset") == []


async def test_offline_timeout_and_callerror_map_to_problems_and_audit(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    async with running(CommandBench, tmp_path, sqlite_url, keys, call_timeout=0.5) as bench:
        await provision(bench.rt, "OFF-1", "off-key-0123456789abc")
        r = await bench.command("OFF-1", "reset", type="Soft")
        assert r.status_code == 409 and r.json()["reason"] == "offline"
        # A charger that never answers.
        await provision(bench.rt, "MUTE-1", "mute-key-0123456789abc")
        ws = await connect(bench.rt, "MUTE-1", "mute-key-0123456789abc")
        boot = {"chargePointVendor": "Acme", "chargePointModel": "X1"}
        await ws.send(json.dumps([2, "b", "BootNotification", boot]))
        await ws.recv()
        r = await bench.command("MUTE-1", "clear-cache")
        assert r.status_code == 504 and r.json()["reason"] == "timeout"

        async def answer_with_error() -> None:
            call = json.loads(await ws.recv())
            if call[2] == "ClearCache":  # the timed-out one may arrive first
                call = json.loads(await ws.recv())
            await ws.send(json.dumps([4, call[1], "NotSupported", "no data transfer", {}]))

        task = asyncio.create_task(answer_with_error())
        r = await bench.command("MUTE-1", "data-transfer", vendor_id="Acme")
        await task
        assert r.status_code == 502 and r.json()["ocpp_error_code"] == "NotSupported"
        await ws.close()
        outcomes = {
            (e.target, e.action, e.outcome): e.detail["error"]["reason"]
            for name in ("reset", "clear-cache", "data-transfer")
            for e in await bench.audit(name)
        }
        assert outcomes == {
            ("OFF-1", "command.reset", "error:offline"): "offline",
            ("MUTE-1", "command.clear-cache", "error:timeout"): "timeout",
            ("MUTE-1", "command.data-transfer", "error:callerror"): "callerror",
        }


# -- the upload endpoint ---------------------------------------------------------------------


async def test_upload_endpoint_refuses_bad_tokens_and_oversize(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    async with running(
        CommandBench, tmp_path, sqlite_url, keys, upload_max_bytes=4096, **FAST
    ) as bench:
        await provision(bench.rt, "UP-1", "up-key-0123456789abcd")
        location = bench.rt.uploads.url("UP-1", "diagnostics")
        async with httpx.AsyncClient(timeout=10) as http:  # a charger has no API token
            ok = await http.put(f"{location}/diag.txt", content=b"hello\n")
            assert ok.status_code == 201, ok.text
            second = bench.rt.uploads.url("UP-1", "diagnostics")  # another request
            form = await http.post(second, files={"file": ("d.log", b"x" * 100)})
            assert form.status_code == 201 and form.json()["size"] == 100
            assert form.json()["id"] != ok.json()["id"]
            token = location.rsplit("/", 1)[1]
            forged = location[: -len(token)] + token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
            r = await http.put(f"{forged}/diag.txt", content=b"x")
            assert r.status_code in (401, 403) and r.json()["field"] == "token"
            r = await http.put(f"{location[: -len(token)]}garbage/diag.txt", content=b"x")
            assert r.status_code in (401, 403)
            big = await http.put(f"{location}/big.txt", content=b"y" * 5000)
            assert big.status_code == 413
            chunked = await http.put(
                f"{location}/big.txt", content=_chunks(b"z" * 1000, 6)
            )  # no Content-Length: the limit is enforced while streaming
            assert chunked.status_code == 413
            form = await http.post(location, files={"file": ("big.log", b"w" * 5000)})
            assert form.status_code == 413
        r = await bench.api.get("/api/v1/chargers/UP-1/files")
        assert sorted(f["size"] for f in r.json()["items"]) == [6, 100]  # refusals kept them
        stored = list((bench.rt.settings.data_dir / "uploads").iterdir())
        assert len(stored) == 2  # nothing partial left behind
        # Listing and downloading are operator reads.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{bench.rt.http_port}", timeout=10
        ) as anonymous:
            assert (await anonymous.get("/api/v1/chargers/UP-1/files")).status_code == 401
            file_id = r.json()["items"][0]["id"]
            assert (await anonymous.get(f"/api/v1/files/{file_id}")).status_code == 401
        assert (await bench.api.get("/api/v1/files/not-a-uuid")).status_code == 404


async def test_an_upload_url_stores_one_file(tmp_path: Path, sqlite_url: str, keys: Keys):
    """An upload URL once stored any number of files for 24 h; now a retry replaces the one
    file of its request, and the URL cannot add more."""
    async with running(CommandBench, tmp_path, sqlite_url, keys, **FAST) as bench:
        await provision(bench.rt, "UP-2", "up-key-0123456789abcd")
        location = bench.rt.uploads.url("UP-2", "log", 7)
        async with httpx.AsyncClient(timeout=10) as http:  # a charger has no API token
            first = await http.put(f"{location}/a.log", content=b"first try")
            assert first.status_code == 201, first.text
            again = await http.put(f"{location}/b.log", content=b"second try, longer")
            form = await http.post(location, files={"file": ("c.log", b"third")})
            assert again.status_code == 201 and form.status_code == 201
            assert first.json()["id"] == again.json()["id"] == form.json()["id"]
        page = (await bench.api.get("/api/v1/chargers/UP-2/files")).json()
        assert page["total"] == 1
        [item] = page["items"]
        assert (item["filename"], item["size"], item["request_id"]) == ("c.log", 5, 7)
        assert await _download(bench, item["id"]) == b"third"
        stored = list((bench.rt.settings.data_dir / "uploads").iterdir())
        assert [p.name for p in stored] == [item["id"].replace("-", "")]
        assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(stored[0].parent.stat().st_mode) == 0o700
        # every issued URL is distinct, even for the same charger, kind and request
        assert bench.rt.uploads.url("UP-2", "log", 7) != location
        async with bench.rt.engine.connect() as conn:
            entries = (
                await conn.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action == "file.uploaded", AuditEntry.target == item["id"])
                    .order_by(AuditEntry.seq)
                )
            ).all()
        assert [e.detail.get("replaced", False) for e in entries] == [False, True, True]


async def _chunks(data: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield data


async def test_an_upload_over_the_limit_is_reported_failed_by_the_charger(
    tmp_path: Path, sqlite_url: str, keys: Keys
):
    async with running(
        CommandBench, tmp_path, sqlite_url, keys, upload_max_bytes=4096, **FAST
    ) as bench:
        sim = await bench.sim(upload_bytes=10_000)
        await bench.ok(sim.identity, "get-diagnostics", retries=1, retry_interval=1)
        await until(
            lambda: bench.events(sim.identity, "diagnostics_status"),
            lambda e: e == ["Uploading", "UploadFailed"],
        )
        [upload] = control(sim).uploads
        assert upload.attempts == 2 and upload.error == "HTTP 413"
        r = await bench.api.get(f"/api/v1/chargers/{sim.identity}/files")
        assert r.json()["total"] == 0


# -- on every database backend ----------------------------------------------------------------


async def test_commands_on_every_backend(any_db_bench: CommandBench):
    bench = any_db_bench
    sim = await bench.sim()
    assert (await bench.ok(sim.identity, "get-configuration", keys=["NumberOfConnectors"]))[
        "details"
    ]["configuration"][0]["value"] == "2"
    assert (
        await bench.ok(sim.identity, "change-availability", connector_id=2, type="Inoperative")
    )["status"] == "Accepted"
    answer = await bench.ok(sim.identity, "get-diagnostics")
    await until(
        lambda: bench.events(sim.identity, "diagnostics_status"),
        lambda e: e == ["Uploading", "Uploaded"],
    )
    page = (await bench.api.get(f"/api/v1/chargers/{sim.identity}/files")).json()
    [item] = page["items"]
    assert item["filename"] == answer["details"]["file_name"]
    assert hashlib.sha256(await _download(bench, item["id"])).hexdigest() == item["sha256"]
    assert [e.outcome for e in await bench.audit("change-availability")] == ["Accepted"]


# -- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


async def invoke(bench: CommandBench, *args: str) -> Any:
    env = {"EVOTA_URL": f"http://127.0.0.1:{bench.rt.http_port}", "EVOTA_TOKEN": TOKEN}
    return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=env)


async def test_cli_commands(bench: CommandBench, tmp_path: Path):
    sim = await bench.sim()
    r = await invoke(
        bench, "charger", "get-configuration", sim.identity, "--key", "NumberOfConnectors"
    )
    assert r.exit_code == 0, r.output
    assert "NumberOfConnectors" in r.stdout and "Accepted" in r.stdout
    r = await invoke(bench, "charger", "reset", sim.identity)  # critical: no reason
    assert r.exit_code == 1 and "reason" in r.output and len(r.output.strip().splitlines()) == 1
    r = await invoke(bench, "charger", "reset", sim.identity, "--hard", "--reason", "cli test")
    assert r.exit_code == 0 and "reset Accepted" in r.stdout
    r = await invoke(
        bench,
        "charger",
        "change-availability",
        sim.identity,
        "--connector-id",
        "1",
        "--type",
        "Inoperative",
        "--reason",
        "repair",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "Accepted"
    profile = tmp_path / "limit.json"
    profile.write_text(
        json.dumps(
            {
                "id": 5,
                "purpose": "ChargePointMaxProfile",
                "rate_unit": "W",
                "periods": [{"start_period": 0, "limit": 11000}],
            }
        )
    )
    r = await invoke(
        bench, "charger", "set-charging-profile", sim.identity, "--profile", f"@{profile}",
        "--reason", "site limit",
    )  # fmt: skip
    assert r.exit_code == 0 and "set-charging-profile Accepted" in r.stdout, r.output
    r = await invoke(bench, "charger", "set-charging-profile", sim.identity, "--profile", "{bad")
    assert r.exit_code == 1 and "--profile" in r.output
    r = await invoke(bench, "charger", "unlock-connector", sim.identity, "--connector-id", "x")
    assert r.exit_code != 0
    [reset] = await bench.audit("reset")
    assert reset.reason == "cli test"
