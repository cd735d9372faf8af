"""Anomaly alerts end to end: real runtime, simulated charger, API, metrics, audit log, CLI."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from evota.audit.alerts import AlertMonitor
from evota.audit.log import Actor
from evota.cli import app as cli_app
from evota.config import Settings
from evota.runtime import Runtime

from .conftest import TOKEN, Keys, ShiftedClock, api_client, start_runtime
from .support import until
from .test_firmware_update import Bench, running

QUIET_HOURS: dict[str, Any] = {"alert_restricted_roles": []}  # no off-hours alerts by wall time


async def monitor(rt: Runtime) -> AlertMonitor:
    """The runtime's monitor once it is wired in; until then one started here, on the real
    engine, clock and audit log."""
    wired: AlertMonitor | None = getattr(rt, "alerts", None)
    if wired is not None:
        return wired
    m = AlertMonitor(rt.engine, rt.clock, rt.audit, rt.settings.alert_thresholds())
    await m.start()
    return m


async def alerts(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await api.get("/api/v1/alerts", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def alert_metric(api: httpx.AsyncClient, rule: str) -> float:
    text = (await api.get("/metrics")).text
    match = re.search(rf'^evota_alerts_total{{rule="{rule}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def audit_entries(rt: Runtime, action: str) -> list[Any]:
    return [e async for e in rt.audit.entries() if e.action == action]


async def test_four_resets_of_one_charger_raise_one_alert(
    tmp_path: Path, database_url: str, keys: Keys
) -> None:
    async with running(Bench, tmp_path, database_url, keys, **QUIET_HOURS) as bench:
        api, rt = bench.api, bench.rt
        await monitor(rt)
        cid = "ALR-0001"
        charger = await bench.charger(cid)

        async def boots() -> int:  # the reset reboots the charger: wait until it is back
            return charger.stats.boots_accepted

        before = await alert_metric(api, "repeated_resets")
        for n in range(1, 6):
            booted = charger.stats.boots_accepted
            r = await api.post(
                f"/api/v1/chargers/{cid}/commands/reset",
                json={"type": "Soft", "reason": f"stuck session #{n}"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "Accepted"
            page = await alerts(api, rule="repeated_resets")
            # 3 resets in 24 h are allowed; the 4th raises the alert, the 5th not again.
            assert page["total"] == (0 if n <= 3 else 1), (n, page)
            await until(boots, lambda b, booted=booted: b > booted and rt._ready(cid))
        [alert] = page["items"]
        assert alert["subject"] == "ALR-0001" and alert["open"]
        assert alert["detail"]["count"] == 4 and alert["detail"]["threshold"] == 3
        assert await alert_metric(api, "repeated_resets") == before + 1
        [raised] = await audit_entries(rt, "alert.raised")
        assert raised.actor == "system" and raised.outcome == "repeated_resets"
        assert raised.detail["subject"] == "ALR-0001" and raised.detail["alert_id"] == alert["id"]
        assert (await api.get("/api/v1/alerts/summary")).json()["open"]["repeated_resets"] == 1

        # Acknowledge: once, with a note; again is 409; an unknown id 404.
        r = await api.post(
            f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "connector replaced"}
        )
        assert r.status_code == 200, r.text
        acked = r.json()
        assert not acked["open"] and acked["acknowledged_by"] == "bootstrap-admin"
        assert acked["detail"]["ack_note"] == "connector replaced"
        r = await api.post(f"/api/v1/alerts/{alert['id']}/acknowledge")
        assert r.status_code == 409 and r.json()["field"] == "alert_id"
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await api.post("/api/v1/alerts/999999/acknowledge")
        assert r.status_code == 404 and r.json()["field"] == "alert_id"
        summary = (await api.get("/api/v1/alerts/summary")).json()
        assert summary["total_open"] == 0 and summary["open"]["repeated_resets"] == 0
        assert (await alerts(api, open="true"))["total"] == 0
        assert (await alerts(api, open="false", subject="ALR-0001"))["total"] == 1
        [ack_entry] = await audit_entries(rt, "alert.acknowledged")
        assert ack_entry.actor == "bootstrap-admin" and ack_entry.reason == "connector replaced"
        assert len(await audit_entries(rt, "alert.raised")) == 1  # acknowledging raised nothing
        assert (await rt.audit.verify())[1] is None


async def test_failed_logins_and_resets_survive_a_restart(tmp_path: Path, sqlite_url: str) -> None:
    settings: dict[str, Any] = {**QUIET_HOURS, "alert_failed_logins": 3}
    ann = Actor("ann", ("firmware_manager",))

    async def attempts(rt: Runtime, n: int) -> None:
        for _ in range(n):
            await rt.audit.record(
                Actor("mallory"), "auth.login", "failed", detail={"client": "10.9.9.9"}
            )

    async def resets(rt: Runtime, n: int) -> None:
        for _ in range(n):
            await rt.audit.record(ann, "command.reset", "Accepted", chargers=["GHOST-1"])

    rt = await start_runtime(tmp_path, sqlite_url, **settings)
    try:
        await monitor(rt)
        await attempts(rt, 2)
        await resets(rt, 2)
        await rt.audit.record(ann, "command.reset", "Rejected", chargers=["GHOST-1"])
    finally:
        await rt.stop()
    rt = await start_runtime(tmp_path, sqlite_url, **settings)
    try:
        await monitor(rt)
        async with api_client(rt) as api:
            await attempts(rt, 1)
            await resets(rt, 1)
            assert (await alerts(api))["total"] == 0  # 3 of each: at the thresholds, not past
            await attempts(rt, 1)
            await resets(rt, 1)
            page = await alerts(api)
            got = sorted((a["rule"], a["subject"]) for a in page["items"])
            assert got == [
                ("failed_logins", "client:10.9.9.9"),
                ("failed_logins", "user:mallory"),
                ("repeated_resets", "GHOST-1"),
            ]
    finally:
        await rt.stop()
    rt = await start_runtime(tmp_path, sqlite_url, **settings)
    try:
        await monitor(rt)
        await attempts(rt, 2)  # the quiet period came back from the alerts table too
        await resets(rt, 1)
        async with api_client(rt) as api:
            assert (await alerts(api))["total"] == 3
            summary = (await api.get("/api/v1/alerts/summary")).json()
            opened = summary["open"]
            assert {rule: n for rule, n in opened.items() if n} == {
                "repeated_resets": 1,
                "failed_logins": 2,
            }
            assert {"command_volume", "off_hours", "security_event"} <= set(opened)  # all rules
            assert (await api.get("/api/v1/alerts", params={"rule": "nope"})).json()[
                "field"
            ] == "rule"
    finally:
        await rt.stop()


async def test_restricted_role_out_of_hours(tmp_path: Path, sqlite_url: str) -> None:
    clock = ShiftedClock()
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        clock=clock,
        alert_allowed_hours="07:00-20:00",
        alert_timezone="Europe/Berlin",
    )
    olga = Actor("olga", ("operator", "viewer"))
    fred = Actor("fred", ("firmware_manager",))
    try:
        await monitor(rt)
        async with api_client(rt) as api:

            async def unlock(who: Actor) -> None:
                await rt.audit.record(who, "command.unlock-connector", "Unlocked", chargers=["C1"])

            clock.move_to(datetime(2026, 1, 15, 22, 30, tzinfo=UTC))  # 23:30 in Berlin
            await unlock(olga)
            await unlock(olga)  # the same night: no second alert
            await unlock(fred)  # not a restricted role
            await rt.audit.record(olga, "auth.login", "ok")  # not a command
            assert (await alerts(api, rule="off_hours"))["total"] == 1
            clock.move_to(datetime(2026, 1, 16, 9, 0, tzinfo=UTC))  # 10:00: allowed
            await unlock(olga)
            assert (await alerts(api, rule="off_hours"))["total"] == 1
            clock.move_to(datetime(2026, 1, 16, 19, 30, tzinfo=UTC))  # 20:30: closed again
            await unlock(olga)
            page = await alerts(api, rule="off_hours", subject="olga")
            assert page["total"] == 2
            assert "20:30 Europe/Berlin" in page["items"][0]["message"]
            assert page["items"][0]["detail"]["roles"] == ["operator"]
            since = datetime(2026, 1, 16, tzinfo=UTC).isoformat()
            assert (await alerts(api, since=since))["total"] == 1
    finally:
        await rt.stop()


def test_bad_alert_settings_fail_with_one_clear_message() -> None:
    for field, value, words in (
        ("alert_allowed_hours", "7pm-9am", "HH:MM-HH:MM"),
        ("alert_allowed_hours", "07:00-25:00", "00:00 to 23:59"),
        ("alert_timezone", "Mars/Olympus", "unknown time zone"),
        ("alert_restricted_roles", ["operater"], "unknown role(s) operater"),
        ("alert_failed_logins", -1, "greater than or equal to 0"),
    ):
        with pytest.raises(ValidationError) as info:
            Settings(**{field: value})  # type: ignore[arg-type]
        [error] = info.value.errors()
        assert error["loc"] == (field,) and words in error["msg"], error
    night = Settings(alert_allowed_hours="22:00 - 6:00", alert_restricted_roles=[])
    t = night.alert_thresholds()
    assert str(t.allowed_hours) == "22:00-06:00" and not t.restricted_roles


runner = CliRunner()


async def test_cli_lists_and_acknowledges(tmp_path: Path, sqlite_url: str) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, **QUIET_HOURS, alert_failed_logins=1)
    env = {"EVOTA_URL": f"http://127.0.0.1:{rt.http_port}", "EVOTA_TOKEN": TOKEN}

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=env)

    try:
        await monitor(rt)
        for _ in range(2):
            await rt.audit.record(Actor("eve"), "auth.login", "locked")
        r = await cli("alert", "list", "--open", "--json")
        assert r.exit_code == 0, r.output
        [item] = json.loads(r.stdout)["items"]
        assert item["subject"] == "user:eve"
        r = await cli("alert", "list")
        assert r.exit_code == 0 and "user:eve" in r.stdout
        r = await cli("alert", "ack", str(item["id"]), "--note", "pen test", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["acknowledged_by"] == "bootstrap-admin"
        r = await cli("alert", "ack", str(item["id"]))
        assert r.exit_code == 1 and "409" in r.output and len(r.output.strip().splitlines()) == 1
        r = await cli("alert", "list", "--since", "yesterday")
        assert r.exit_code == 1 and "--since: not an ISO 8601 time" in r.output
    finally:
        await rt.stop()


async def test_security_events_raise_bounded_alerts_naming_the_charger(
    tmp_path: Path, database_url: str, keys: Keys
) -> None:
    """A charger's SecurityEventNotification reaches the operators: at once for a bad
    firmware signature (sent by the simulator when the check fails), on repetition for a
    cleared security log, and never more than a few per charger, however many it sends."""
    from evota.sim.fleet import FaultProfile

    from .test_firmware_update import upload

    async with running(Bench, tmp_path, database_url, keys, **QUIET_HOURS) as bench:
        api, rt = bench.api, bench.rt
        fw = await upload(api, tmp_path, keys, "2.0.0")
        before = await alert_metric(api, "security_event")
        charger = await bench.charger("SEC-0001", faults=FaultProfile(invalid_signature=1.0))
        cid = charger.identity
        r = await bench.update(cid, fw["id"])
        job = await bench.finished(r.json()["job_id"])
        assert job["failure"] == "invalid_signature"

        async def security() -> dict[str, Any]:
            return await alerts(api, rule="security_event", subject=cid)

        page = await until(security, lambda p: p["total"] >= 1)
        [alert] = page["items"]
        assert alert["subject"] == cid and "InvalidFirmwareSignature" in alert["message"]
        assert alert["detail"]["event"] == "InvalidFirmwareSignature"
        assert alert["detail"]["chargers"] == [cid] and alert["detail"]["tech_info"]
        assert await alert_metric(api, "security_event") == before + 1
        await rt.alerts.drain()  # the row is visible before its audit entry is appended
        [raised] = await audit_entries(rt, "alert.raised")
        assert raised.outcome == "security_event"

        async def report(kind: str) -> None:
            message = charger.wire.security_event(charger, kind, f"{kind} (test)")
            assert message is not None
            await charger.call(*message)

        for _ in range(20):  # the same event again and again: quiet for an hour
            await report("InvalidFirmwareSignature")
        await report("StartupOfTheDevice")  # informational: stored, not alerted
        await report("SecurityLogWasCleared")  # once is maintenance
        await rt.alerts.drain()
        assert (await security())["total"] == 1
        await report("SecurityLogWasCleared")  # twice within 24 h is not
        for kind in (
            "TamperDetectionActivated",
            "InvalidCentralSystemCertificate",
            "InvalidChargePointCertificate",
            "AttemptedReplayAttacks",  # the 6th type within the hour: over the cap
        ):
            await report(kind)
        await rt.alerts.drain()
        page = await security()
        events = sorted(a["detail"]["event"] for a in page["items"])
        assert events == [
            "InvalidCentralSystemCertificate",
            "InvalidChargePointCertificate",
            "InvalidFirmwareSignature",
            "SecurityLogWasCleared",
            "TamperDetectionActivated",
        ]
        cleared = next(a for a in page["items"] if a["detail"]["event"] == "SecurityLogWasCleared")
        assert "2 times within 24 h" in cleared["message"]


async def test_security_alert_limits_survive_a_restart(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    """After a restart the same event stays quiet (the alert is in the table) and a log
    cleared once before the restart and once after is a repeat (the event is stored)."""
    async with running(Bench, tmp_path, sqlite_url, keys, **QUIET_HOURS) as bench:
        ports = {"ocpp_port": bench.rt.ocpp_port, "http_port": bench.rt.http_port}
        charger = await bench.charger("SEC-0001")
        cid = charger.identity

        async def report(kind: str) -> None:
            message = charger.wire.security_event(charger, kind, "test")
            assert message is not None
            await charger.call(*message)

        async def security() -> dict[str, Any]:
            return await alerts(bench.api, rule="security_event", subject=cid)

        await report("TamperDetectionActivated")
        await report("SecurityLogWasCleared")
        await until(security, lambda p: p["total"] == 1)
        await bench.api.aclose()
        await bench.rt.stop()  # flushes the stored events
        bench.rt = await start_runtime(tmp_path, sqlite_url, **QUIET_HOURS, **ports)
        bench.api = api_client(bench.rt)
        reconnected = bench.rt._ready
        await until(lambda: reconnected(cid) and charger.accepted)
        await report("TamperDetectionActivated")  # still quiet
        await report("SecurityLogWasCleared")  # the second within 24 h
        await bench.rt.alerts.drain()
        page = await security()
        assert sorted(a["detail"]["event"] for a in page["items"]) == [
            "SecurityLogWasCleared",
            "TamperDetectionActivated",
        ]
