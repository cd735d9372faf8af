"""An independent OCPP 1.6J client in strict schema mode — the Node library ``ocpp-rpc`` — boots
against evota, exchanges the usual messages, accepts evota's Reset CALL, and gets the
CALLERROR code docs/ocpp.md promises for every bad payload.

The client script is ``tests/node/strict_client.js``; ``npm ci`` installs its one pinned
dependency into ``tests/node/node_modules`` the first time (this needs the npm registry).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from evota.control import commands
from tests.conftest import provision
from tests.node_clients import NODE_DIR, ensure_node_modules, same_worker

SCRIPT = NODE_DIR / "strict_client.js"
KEY = "ocpp-rpc-key-0123456789"
IDENTITY = "RPC-STRICT-1"
FRESH_IDENTITY = "RPC-FRESH-1"

# docs/ocpp.md, "Bad frames", in 1.6 spelling.
EXPECTED_CODES = {
    "missing-field": "OccurenceConstraintViolation",
    "wrong-type": "TypeConstraintViolation",
    "bad-enum": "PropertyConstraintViolation",
    "extra-property": "FormationViolation",
    "too-long-string": "PropertyConstraintViolation",
    "bad-date-time": "PropertyConstraintViolation",
    "unknown-action": "NotImplemented",
    "csms-only-action": "NotSupported",
    "call-before-boot": "SecurityError",
}


async def _run_client(runtime: Any, node: str) -> tuple[dict[str, Any], Any, str]:
    """Runs the script and sends the Reset when it asks; returns (summary, Reset result, log)."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        "--endpoint",
        f"ws://127.0.0.1:{runtime.ocpp_port}/ocpp",
        "--identity",
        IDENTITY,
        "--fresh-identity",
        FRESH_IDENTITY,
        "--key",
        KEY,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    reset_result: Any = None
    try:
        async with asyncio.timeout(20):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line.rstrip("\n"))
                if line.strip() == "READY_FOR_RESET":
                    try:
                        reset_result = await runtime.gateway.send(IDENTITY, commands.Reset("Soft"))
                    except Exception as exc:  # reported with the summary below
                        reset_result = exc
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log = (await stderr_task).decode(errors="replace")
        pytest.fail(f"strict_client.js took over 20 s; stdout: {lines}\nframes:\n{log}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await stderr_task).decode(errors="replace")
    assert lines, f"strict_client.js printed nothing (exit {proc.returncode}):\n{stderr}"
    try:
        summary = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"no JSON summary from strict_client.js:\n{lines}\n{stderr}")
    assert proc.returncode == 0 and summary["error"] is None, (summary["error"], stderr)
    return summary, reset_result, stderr


@same_worker
async def test_ocpp_rpc_strict_client(evota_sqlite):
    node = await ensure_node_modules()
    await provision(evota_sqlite, IDENTITY, KEY)
    await provision(evota_sqlite, FRESH_IDENTITY, KEY)

    summary, reset_result, log = await _run_client(evota_sqlite, node)
    context = f"\nsummary: {json.dumps(summary, indent=1)}\nframes:\n{log}"

    # Strict mode was on (an invalid CALL was refused before it left the client) and found
    # nothing wrong with anything evota sent; evota sent nothing unparseable.
    assert summary["strict_self_check"] == {
        "refused_locally": True,
        "rpcErrorCode": "OccurenceConstraintViolation",
        "events": 1,
    }, context
    assert summary["strict_validation_failures"] == [], context
    assert summary["bad_messages"] == [], context
    assert summary["protocol"] == {"strict": "ocpp1.6", "lenient": "ocpp1.6", "fresh": "ocpp1.6"}

    boot = summary["boot"]
    assert boot["status"] == "Accepted", context
    assert boot["interval"] == evota_sqlite.settings.heartbeat_interval
    session = summary["session"]
    assert "currentTime" in session["heartbeat"]
    assert session["status_available"] == {} and session["status_charging"] == {}
    assert session["authorize"]["idTagInfo"]["status"] == "Accepted"
    assert isinstance(session["start"]["transactionId"], int)
    assert session["start"]["idTagInfo"]["status"] == "Accepted"
    assert session["stop"]["idTagInfo"]["status"] == "Accepted"

    # evota's Reset reached the strict client, passed its schema check, and the answer came back.
    assert summary["reset"]["received"] == [{"type": "Soft"}], context
    assert summary["reset"]["answered"][::2] == [3, {"status": "Accepted"}], context
    assert getattr(reset_result, "status", None) == "Accepted", (reset_result, context)

    got = {
        name: (case["ok"], case.get("rpcErrorCode"), (case.get("frame") or [None] * 3)[2])
        for name, case in summary["bad_payloads"].items()
    }
    # ocpp-rpc's reported code and the code in evota's raw CALLERROR frame are both checked.
    expected = {name: (False, code, code) for name, code in EXPECTED_CODES.items()}
    assert got == expected, context
    for name, case in summary["bad_payloads"].items():
        assert case["frame"][0] == 4 and isinstance(case["frame"][3], str), (name, case)
        assert isinstance(case["frame"][4], dict), (name, case)

    # The connection survived every bad frame; the fresh charger works once it has booted.
    assert summary["after_bad_payloads"]["ok"], context
    assert "currentTime" in summary["after_bad_payloads"]["result"]
    assert summary["before_boot"]["boot"]["result"]["status"] == "Accepted", context
    assert summary["before_boot"]["after"] == {"ok": True, "result": {}}, context
