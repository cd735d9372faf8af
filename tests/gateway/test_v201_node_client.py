"""The Node ocpp-rpc client in strict 2.0.1 mode against evota."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from evota.runtime import Runtime
from tests.conftest import Keys, api_client, provision
from tests.gateway.v201_station import KEY, SUBPROTOCOL, _profile
from tests.node_clients import NODE_DIR, ensure_node_modules, same_worker

# -- the Node ocpp-rpc client in strict 2.0.1 mode -------------------------------------------

NODE_SCRIPT = NODE_DIR / "strict_client_201.js"

#: The 2.0.1 CALLERROR codes docs/ocpp.md promises, as ocpp-rpc reports them.
NODE_EXPECTED_CODES = {
    "missing-field": "OccurrenceConstraintViolation",
    "wrong-type": "TypeConstraintViolation",
    "bad-enum": "PropertyConstraintViolation",
    "extra-property": "FormatViolation",
    "too-long-string": "PropertyConstraintViolation",
    "bad-date-time": "PropertyConstraintViolation",
    "unknown-action": "NotImplemented",
    "csms-only-action": "NotSupported",
    "call-before-boot": "SecurityError",
}
NODE_RAW_FRAMES = {
    "invalid-json": ("-1", "RpcFrameworkError"),
    "id-not-string": ("-1", "RpcFrameworkError"),
    "unknown-message-type": ("r2", "MessageTypeNotSupported"),
    "payload-not-object": ("r3", "FormatViolation"),
}


async def _commands_for_the_node_station(rt: Runtime, keys: Keys, identity: str) -> list[Any]:
    """Every command, through the API (and a signed UpdateFirmware through the gateway)."""
    from evota.control import commands

    plan: list[tuple[str, dict[str, Any]]] = [
        ("reset", {"type": "Hard"}),
        ("remote-start", {"id_tag": "RPC-TOKEN", "connector_id": 1}),
        ("remote-stop", {"transaction_id": "RPC-TX-1"}),
        ("unlock-connector", {"connector_id": 1}),
        ("change-availability", {"connector_id": 1, "type": "Inoperative"}),
        ("get-configuration", {"keys": ["HeartbeatInterval"]}),
        ("change-configuration", {"key": "HeartbeatInterval", "value": "90"}),
        (
            "get-variables",
            {"variables": [{"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"}]},
        ),
        (
            "set-variables",
            {
                "variables": [
                    {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval", "value": "30"}
                ]
            },
        ),
        ("get-base-report", {"report_base": "SummaryInventory"}),
        ("clear-cache", {}),
        (
            "send-local-list",
            {"version": 1, "update_type": "Differential", "entries": [{"id_tag": "X"}]},
        ),
        ("get-local-list-version", {}),
        (
            "set-charging-profile",
            {
                "connector_id": 1,
                "profile": _profile("TxDefaultProfile", kind="Recurring", recurrency="Daily"),
            },
        ),
        ("clear-charging-profile", {"profile_id": 5}),
        ("trigger-message", {"message": "MeterValues", "connector_id": 1}),
        ("get-log", {"log_type": "DiagnosticsLog"}),
        (
            "install-certificate",
            {
                "certificate_type": "ManufacturerRootCertificate",
                "certificate": keys.ca_cert.decode(),
            },
        ),
        (
            "delete-certificate",
            {"issuer_name_hash": "aa", "issuer_key_hash": "bb", "serial_number": "01"},
        ),
        ("get-installed-certificate-ids", {"certificate_type": "CSMSRootCertificate"}),
    ]
    answers: list[Any] = []
    async with api_client(rt) as api:
        for name, params in plan:
            r = await api.post(
                f"/api/v1/chargers/{identity}/commands/{name}", json={**params, "reason": "node"}
            )
            answers.append((name, r.status_code, r.json()))
        from evota.firmware import signing

        image = NODE_SCRIPT.parent / "package.json"  # any file: the station does not download
        signature = signing.sign_file(image, keys.key)
        cert = keys.cert.decode()
        result = await rt.gateway.send(
            identity,
            commands.SignedUpdateFirmware(
                request_id=9,
                location="https://evota.example/fw.bin",
                retrieve_at=datetime.now(UTC),
                signing_certificate=cert,
                signature=signature,
            ),
        )
        answers.append(("update-firmware", 200, {"status": result.status}))
        r = await api.post(
            f"/api/v1/chargers/{identity}/commands/data-transfer",
            json={"vendor_id": "evota.test", "message_id": "done"},
        )
        answers.append(("data-transfer", r.status_code, r.json()))
    return answers


@same_worker
async def test_ocpp_rpc_strict_201_client(evota_sqlite: Runtime, keys: Keys) -> None:
    rt = evota_sqlite
    node = await ensure_node_modules()
    await provision(rt, "RPC201-STRICT", KEY)
    await provision(rt, "RPC201-FRESH", KEY)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_SCRIPT),
        "--endpoint",
        f"ws://127.0.0.1:{rt.ocpp_port}/ocpp",
        "--identity",
        "RPC201-STRICT",
        "--fresh-identity",
        "RPC201-FRESH",
        "--key",
        KEY,
        cwd=NODE_SCRIPT.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    answers: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line.rstrip("\n"))
                if line.strip() == "READY_FOR_COMMANDS":
                    answers = await _commands_for_the_node_station(rt, keys, "RPC201-STRICT")
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (await stderr_task).decode(errors="replace")
    summary = json.loads(lines[-1])
    context = f"\nsummary: {json.dumps(summary, indent=1)[:20000]}\nframes:\n{log[-20000:]}"
    assert proc.returncode == 0 and summary["error"] is None, context

    # Strict mode was on and found nothing wrong with anything evota sent or answered.
    assert summary["strict_self_check"] == {
        "refused_locally": True,
        "rpcErrorCode": "OccurenceConstraintViolation",  # ocpp-rpc's own (1.6) spelling
        "events": 1,
    }, context
    assert summary["strict_validation_failures"] == [], context
    assert summary["bad_messages"] == [], context
    assert summary["protocol"] == {
        "strict": SUBPROTOCOL,
        "lenient": SUBPROTOCOL,
        "fresh": SUBPROTOCOL,
    }
    assert summary["boot"]["status"] == "Accepted"
    session = summary["session"]
    assert session["authorize"]["idTokenInfo"]["status"] == "Accepted"
    assert session["started"] == {"idTokenInfo": {"status": "Accepted"}}
    assert session["updated"] == {} and session["meter_values"] == {}
    assert session["ended"] == {"idTokenInfo": {"status": "Accepted"}}
    assert session["data_transfer"]["status"] == "UnknownVendorId"
    assert session["sign_certificate"]["status"] == "Rejected"

    # Every command reached the station as a valid CALL and its answer came back.
    assert [(name, code) for name, code, _ in answers] == [(name, 200) for name, _, _ in answers], (
        answers
    )
    received = [c["action"] for c in summary["commands"]]
    for action in (
        "Reset",
        "RequestStartTransaction",
        "RequestStopTransaction",
        "UnlockConnector",
        "ChangeAvailability",
        "GetVariables",
        "SetVariables",
        "GetBaseReport",
        "ClearCache",
        "SendLocalList",
        "GetLocalListVersion",
        "SetChargingProfile",
        "ClearChargingProfile",
        "TriggerMessage",
        "GetLog",
        "InstallCertificate",
        "DeleteCertificate",
        "GetInstalledCertificateIds",
        "UpdateFirmware",
        "DataTransfer",
    ):
        assert action in received, (action, received)

    got = {
        name: (case["ok"], case.get("rpcErrorCode"), (case.get("frame") or [None] * 3)[2])
        for name, case in summary["bad_payloads"].items()
    }
    assert got == {name: (False, code, code) for name, code in NODE_EXPECTED_CODES.items()}, context
    raw = {name: (frame[1], frame[2]) for name, frame in summary["raw_frames"].items() if frame}
    assert raw == NODE_RAW_FRAMES, context
    assert summary["after_bad_payloads"]["ok"], context
    assert summary["before_boot"]["after"] == {"ok": True, "result": {}}, context
