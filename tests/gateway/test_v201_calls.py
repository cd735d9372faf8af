"""Every command as a valid OCPP 2.0.1 CALL to a strict station, its answer mapped back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from ocpp.v201 import call
from sqlalchemy import select

from evota.control import catalog
from evota.ocpp import v201_variables
from evota.runtime import Runtime
from evota.store.models import AuditEntry, ChargerSetting
from tests.conftest import Keys, api_client, connect, provision, start_runtime
from tests.gateway.v201_station import (
    DEFAULT_ANSWERS,
    KEY,
    _profile,
    boot_call,
    charger_events,
    now,
    session_rows,
    station,
)
from tests.support import until

# -- commands ------------------------------------------------------------------------------------


async def test_every_command_is_a_valid_201_call_and_its_answer_maps_back(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    # the configuration read after the boot is part of this test (the fixtures defer it)
    rt = await start_runtime(tmp_path, sqlite_url, config_boot_delay_seconds=0.5)
    api = api_client(rt)

    async def send(name: str, **params: Any) -> httpx.Response:
        body = {**params, "reason": "v201 test"}
        return await api.post(f"/api/v1/chargers/V201-CMD/commands/{name}", json=body)

    async def ok(name: str, **params: Any) -> dict[str, Any]:
        r = await send(name, **params)
        assert r.status_code == 200, (name, r.text)
        return dict(r.json())

    async def refused(name: str, **params: Any) -> str:
        r = await send(name, **params)
        assert r.status_code == 409, (name, r.text)
        assert r.json()["reason"] == "unsupported"
        return str(r.json()["detail"])

    try:
        async with station(rt, "V201-CMD") as cp:
            # The configuration read at boot is a GetVariables of every mapped, readable key.
            fetch = await until(lambda: cp.calls("GetVariables"))
            asked = {
                (i["component"]["name"], i["variable"]["name"]) for i in fetch[0]["getVariableData"]
            }
            assert ("OCPPCommCtrlr", "HeartbeatInterval") in asked
            assert ("SecurityCtrlr", "BasicAuthPassword") not in asked  # write-only
            settings = await until(lambda: _settings(rt, "V201-CMD"))
            assert settings["HeartbeatInterval"] == ("60", False)
            assert settings["SecurityProfile"] == ("1", True)

            # A session to address by evota's id.
            await cp.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp=now(),
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transactionId": "TX-CMD"},
                    evse={"id": 1, "connectorId": 1},
                    id_token={"idToken": "T1", "type": "ISO14443"},
                )
            )
            (session,) = await session_rows(rt, "V201-CMD")

            assert (await ok("reset", type="Hard"))["status"] == "Accepted"
            assert cp.calls("Reset")[-1] == {"type": "Immediate"}
            assert (await ok("reset", type="Immediate"))["status"] == "Accepted"
            assert cp.calls("Reset")[-1] == {"type": "Immediate"}

            started = await ok(
                "remote-start",
                id_tag="A-TOKEN-LONGER-THAN-20-CHARS",
                connector_id=1,
                charging_profile=_profile("TxProfile"),
            )
            assert started["status"] == "Accepted"
            assert started["details"] == {"transaction_id": "TX-REMOTE"}
            sent = cp.calls("RequestStartTransaction")[-1]
            assert sent["idToken"] == {"idToken": "A-TOKEN-LONGER-THAN-20-CHARS", "type": "Central"}
            assert sent["evseId"] == 1 and isinstance(sent["remoteStartId"], int)
            assert sent["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
            assert sent["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
                {"startPeriod": 0, "limit": 16.0},
                {"startPeriod": 600, "limit": 8.5},
            ]

            await ok("remote-stop", transaction_id=session.id)  # evota's session id ...
            assert cp.calls("RequestStopTransaction")[-1] == {"transactionId": "TX-CMD"}
            await ok("remote-stop", transaction_id="TX-OTHER")  # ... or the charger's own
            assert cp.calls("RequestStopTransaction")[-1] == {"transactionId": "TX-OTHER"}
            assert "session 999999" in await refused("remote-stop", transaction_id=999999)

            assert (await ok("unlock-connector", connector_id=2, evse_connector_id=2))[
                "status"
            ] == "Unlocked"
            assert cp.calls("UnlockConnector")[-1] == {"evseId": 2, "connectorId": 2}
            await ok("unlock-connector", connector_id=1)
            assert cp.calls("UnlockConnector")[-1] == {"evseId": 1, "connectorId": 1}

            cp.answers["ChangeAvailability"] = {"status": "Scheduled"}
            assert (await ok("change-availability", connector_id=0, type="Inoperative"))[
                "status"
            ] == "Scheduled"
            assert cp.calls("ChangeAvailability")[-1] == {"operationalStatus": "Inoperative"}
            await ok("change-availability", connector_id=1, type="Operative")
            assert cp.calls("ChangeAvailability")[-1] == {
                "operationalStatus": "Operative",
                "evse": {"id": 1},
            }

            got = await ok("get-configuration", keys=["heartbeatinterval", "SecurityProfile"])
            assert got["details"]["configuration"] == [
                {"key": "HeartbeatInterval", "value": "60", "readonly": False},
                {"key": "SecurityProfile", "value": "1", "readonly": True},
            ]
            got = await ok(
                "get-configuration",
                keys=[
                    "OCPPCommCtrlr.MessageAttempts[TransactionEvent]",
                    "ConnectionTimeOut",
                ],
            )
            assert got["details"] == {
                "configuration": [
                    {
                        "key": "OCPPCommCtrlr.MessageAttempts[TransactionEvent]",
                        "value": "3",
                        "readonly": False,
                    }
                ],
                "unknown_keys": ["ConnectionTimeOut"],
            }
            assert "BlinkRepeat" in await refused("get-configuration", keys=["BlinkRepeat"])

            changed = await ok("change-configuration", key="HeartbeatInterval", value="120")
            assert changed["status"] == "Accepted"
            assert cp.calls("SetVariables")[-1] == {
                "setVariableData": [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "HeartbeatInterval"},
                        "attributeValue": "120",
                    }
                ]
            }
            assert cp.model["OCPPCommCtrlr", "HeartbeatInterval", None][0] == "120"
            assert (await ok("change-configuration", key="StopTxnSampledData", value="SoC"))[
                "status"
            ] == "NotSupported"
            assert "no OCPP 2.0.1 equivalent" in await refused(
                "change-configuration", key="LightIntensity", value="50"
            )

            variables = await ok(
                "get-variables",
                variables=[
                    {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"},
                    {
                        "component": "EVSE",
                        "evse_id": 1,
                        "variable": "Power",
                        "attribute_type": "MaxSet",
                    },
                ],
            )
            assert variables["status"] == "UnknownVariable"
            assert [r["label"] for r in variables["details"]["results"]] == [
                "OCPPCommCtrlr.HeartbeatInterval",
                "EVSE@1.Power",
            ]
            assert variables["details"]["results"][0]["attribute_value"] == "120"
            assert cp.calls("GetVariables")[-1]["getVariableData"][1] == {
                "component": {"name": "EVSE", "evse": {"id": 1}},
                "variable": {"name": "Power"},
                "attributeType": "MaxSet",
            }
            remote_start = {
                "component": "AuthCtrlr",
                "variable": "AuthorizeRemoteStart",
                "value": "false",
            }
            password = {"component": "SecurityCtrlr", "variable": "BasicAuthPassword"}
            sent = len(cp.calls("SetVariables"))
            # The charger's password only through its own flow (evota must switch with it).
            r = await send(
                "set-variables", variables=[remote_start, {**password, "value": "s" * 24}]
            )
            assert r.status_code == 422 and r.json()["field"] == "variables", r.text
            assert len(cp.calls("SetVariables")) == sent
            set_result = await ok("set-variables", variables=[remote_start])
            assert set_result["status"] == "Accepted"
            assert "s" * 24 not in str(
                [e.detail for e in await _audit(rt, "command.set-variables")]
            )

            report = await ok("get-base-report", report_base="FullInventory", request_id=77)
            assert report["status"] == "Accepted"
            assert cp.calls("GetBaseReport")[-1] == {"requestId": 77, "reportBase": "FullInventory"}
            (part,) = await until(lambda: charger_events(rt, "V201-CMD", "report"))
            assert part.request_id == 77 and part.data["items"][0]["value"] == "60"

            await ok("clear-cache")
            assert cp.calls("ClearCache")[-1] == {}
            await ok(
                "send-local-list",
                version=3,
                update_type="Full",
                entries=[{"id_tag": "TAG-A", "status": "Accepted", "parent_id_tag": "GROUP"}],
            )
            assert cp.calls("SendLocalList")[-1] == {
                "versionNumber": 3,
                "updateType": "Full",
                "localAuthorizationList": [
                    {
                        "idToken": {"idToken": "TAG-A", "type": "ISO14443"},
                        "idTokenInfo": {
                            "status": "Accepted",
                            "groupIdToken": {"idToken": "GROUP", "type": "ISO14443"},
                        },
                    }
                ],
            }
            assert (await ok("get-local-list-version"))["details"] == {"list_version": 3}

            await ok(
                "set-charging-profile", connector_id=0, profile=_profile("ChargePointMaxProfile")
            )
            sent = cp.calls("SetChargingProfile")[-1]
            assert sent["evseId"] == 0
            assert sent["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
            await ok(
                "set-charging-profile",
                connector_id=1,
                profile=_profile("TxProfile", transaction_id=session.id),
            )
            assert (
                cp.calls("SetChargingProfile")[-1]["chargingProfile"]["transactionId"] == "TX-CMD"
            )
            await ok("clear-charging-profile", connector_id=1, purpose="TxDefaultProfile")
            assert cp.calls("ClearChargingProfile")[-1] == {
                "chargingProfileCriteria": {
                    "evseId": 1,
                    "chargingProfilePurpose": "TxDefaultProfile",
                }
            }

            await ok("trigger-message", message="StatusNotification", connector_id=1)
            assert cp.calls("TriggerMessage")[-1] == {
                "requestedMessage": "StatusNotification",
                "evse": {"id": 1},
            }
            await ok("trigger-message", message="SignChargePointCertificate")
            assert cp.calls("TriggerMessage")[-1] == {
                "requestedMessage": "SignChargingStationCertificate"
            }
            await ok("trigger-message", message="TransactionEvent")
            assert "cannot trigger" in await refused(
                "trigger-message", message="DiagnosticsStatusNotification"
            )
            assert "get-log" in await refused("get-diagnostics")

            log = await ok("get-log", log_type="SecurityLog", request_id=4242)
            assert log["details"] == {"file_name": "security.log"}
            sent = cp.calls("GetLog")[-1]
            assert (sent["logType"], sent["requestId"]) == ("SecurityLog", 4242)
            assert sent["log"]["remoteLocation"].startswith("http")

            await ok(
                "install-certificate",
                certificate_type="CentralSystemRootCertificate",
                certificate=keys.ca_cert.decode(),
            )
            assert cp.calls("InstallCertificate")[-1]["certificateType"] == "CSMSRootCertificate"
            await ok(
                "delete-certificate",
                issuer_name_hash="aa" * 32,
                issuer_key_hash="bb" * 32,
                serial_number="0a1b",
            )
            assert (
                cp.calls("DeleteCertificate")[-1]["certificateHashData"]["serialNumber"] == "0a1b"
            )
            ids = await ok(
                "get-installed-certificate-ids", certificate_type="ManufacturerRootCertificate"
            )
            assert ids["details"]["certificates"] == [
                {
                    "hash_algorithm": "SHA256",
                    "issuer_name_hash": "aa" * 32,
                    "issuer_key_hash": "bb" * 32,
                    "serial_number": "0a1b",
                    "certificate_type": "ManufacturerRootCertificate",
                }
            ]
            assert cp.calls("GetInstalledCertificateIds")[-1] == {
                "certificateType": ["ManufacturerRootCertificate"]
            }
            transfer = await ok(
                "data-transfer", vendor_id="com.example", message_id="ping", data="x"
            )
            assert transfer["details"] == {"data": {"echo": True}}

            # Reset Soft is OnIdle: answered Scheduled, completed by the next boot.
            cp.answers["Reset"] = {"status": "Scheduled"}
            assert (await ok("reset", type="Soft"))["status"] == "Scheduled"
            assert cp.calls("Reset")[-1] == {"type": "OnIdle"}
            assert await charger_events(rt, "V201-CMD", "reset") == []
            await cp.call(boot_call(reason="RemoteReset"))
            (done,) = await until(lambda: charger_events(rt, "V201-CMD", "reset"))
            assert done.status == "completed"
            assert (done.data["type"], done.data["boot_reason"]) == ("Soft", "RemoteReset")
            (audited,) = await until(lambda: _audit(rt, "charger.reset_completed"))
            assert (
                audited.target == "V201-CMD" and audited.detail["requested_by"] == "bootstrap-admin"
            )

            # Every command was audited once, with the charger's answer.
            resets = await _audit(rt, "command.reset")
            assert [e.outcome for e in resets] == ["Accepted", "Accepted", "Scheduled"]
            # Nothing evota sent was refused by the station's schema check.
            assert all(a in DEFAULT_ANSWERS for a, _ in cp.received)

        # A 1.6 charger cannot express the 2.0.1-only commands, nor wait for idle.
        await provision(rt, "V16-CMD", KEY)
        ws = await connect(rt, "V16-CMD", KEY)
        await ws.send(
            json.dumps(
                [2, "b", "BootNotification", {"chargePointVendor": "A", "chargePointModel": "B"}]
            )
        )
        await ws.recv()
        r = await api.post(
            "/api/v1/chargers/V16-CMD/commands/get-variables",
            json={"variables": [{"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"}]},
        )
        assert r.status_code == 409 and "needs OCPP 2.0.1" in r.json()["detail"], r.text
        r = await api.post(
            "/api/v1/chargers/V16-CMD/commands/reset", json={"type": "OnIdle", "reason": "t"}
        )
        assert r.status_code == 409 and "Soft or Hard" in r.json()["detail"], r.text
        await ws.close()
    finally:
        await api.aclose()
        await rt.stop()


async def _settings(rt: Runtime, charger_id: str) -> dict[str, tuple[str | None, bool]]:
    async with rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ChargerSetting).where(ChargerSetting.charger_id == charger_id)
            )
        ).all()
    return {r.key: (r.value, r.readonly) for r in rows}


async def _audit(rt: Runtime, action: str) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
                )
            ).all()
        )


def test_every_catalog_command_has_a_201_form_or_says_why_not() -> None:
    """Each catalog command either encodes for 2.0.1 or is refused with a message (never a
    crash), so adding a command without a 2.0.1 mapping is caught here."""
    from evota.control import commands
    from evota.ocpp import v16, v201

    native = {"get-variables", "set-variables", "get-base-report"}
    for name, spec in catalog.COMMANDS.items():
        assert spec.params is not None
        if name in native:
            with pytest.raises(commands.CommandNotSupported):
                v16.encode_command(_sample_command(name))
        try:
            action, payload = v201.encode_command(_sample_command(name))
        except commands.CommandNotSupported as exc:
            assert name == "get-diagnostics" and "get-log" in exc.message
            continue
        from evota.ocpp import schemas

        schemas.v201().validate_request(action, payload, "t")  # raises if evota would send junk


def _sample_command(name: str) -> Any:
    from evota.control.catalog import Context

    samples: dict[str, dict[str, Any]] = {
        "remote-start": {"id_tag": "T"},
        "remote-stop": {"transaction_id": "TX"},
        "unlock-connector": {"connector_id": 1},
        "change-availability": {"type": "Inoperative"},
        "change-configuration": {"key": "HeartbeatInterval", "value": "5"},
        "send-local-list": {"version": 1},
        "set-charging-profile": {"profile": _profile("TxDefaultProfile")},
        "trigger-message": {"message": "Heartbeat"},
        "install-certificate": None,
        "delete-certificate": {
            "issuer_name_hash": "aa",
            "issuer_key_hash": "bb",
            "serial_number": "1",
        },
        "get-installed-certificate-ids": {"certificate_type": "CSMSRootCertificate"},
        "data-transfer": {"vendor_id": "v"},
        "get-variables": {"variables": [{"component": "C", "variable": "V"}]},
        "set-variables": {"variables": [{"component": "C", "variable": "V", "value": "1"}]},
    }
    spec = catalog.COMMANDS[name]
    ctx = Context("CP", upload_url=lambda cid, kind, rid=None: "https://evota.example/upload")
    if name == "install-certificate":
        from evota.control import commands

        return commands.InstallCertificate("CSMSRootCertificate", "-----BEGIN CERTIFICATE-----")
    return spec.params.model_validate(samples.get(name, {})).to_command(ctx)


def test_docs_show_the_configuration_key_table() -> None:
    """docs/ocpp.md lists exactly the keys evota maps (the code is the source of truth)."""
    text = (Path(__file__).parents[2] / "docs" / "ocpp.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)\.(\w+)(?:\[(\w+)\])?` \| (\w+) \|$", text, re.M)
    documented = {key: (comp, var, inst or None, mut) for key, comp, var, inst, mut in rows}
    expected = {
        key: (m.component, m.variable, m.variable_instance, m.mutability)
        for key, m in v201_variables.KEYS.items()
    }
    assert documented == expected
