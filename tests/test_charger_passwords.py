"""Charger password changes without lock-outs (issue 16 §8, evota.control.passwords).

Through the simulator on 1.6 (ChangeConfiguration AuthorizationKey) and 2.0.1 (SetVariables
SecurityCtrlr.BasicAuthPassword): evota switches to the new key only when the charger accepted
it and connected with it; a charger that rejects it, or accepts it and never connects with it
by the deadline, keeps its old key, and the new one is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.fleet import key_changes
from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec, FaultProfile
from evota.store.models import AuditEntry, ChargerKeyChange
from tests.conftest import api_client, connect, provision, session_for, start_runtime
from tests.gateway.test_tls import status_of
from tests.sim.conftest import fast
from tests.support import until
from tests.test_cli import invoke

CHARGER = "PW-CP-1"
OLD = "old-password-0123456789"
NEW = "ab" * 20  # what evota generates: 40 hex characters


@pytest.fixture
def known_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The new key evota makes, known to the test (it is never shown anywhere)."""
    monkeypatch.setattr(key_changes, "new_key", lambda: NEW)
    return NEW


async def _runtime(tmp_path: Path, url: str, **overrides: Any) -> Runtime:
    return await start_runtime(tmp_path, url, **overrides)


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    runtime = await _runtime(tmp_path, sqlite_url)
    yield runtime
    await runtime.stop()


def sim(rt: Runtime, protocol: str, **faults: float) -> SimulatedCharger:
    spec = ChargerSpec(CHARGER, OLD, protocol=protocol, faults=FaultProfile(**faults))
    return SimulatedCharger(spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", fast())


async def change(rt: Runtime) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.post(f"/api/v1/chargers/{CHARGER}/password", json={"reason": "rotate"})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def states(rt: Runtime) -> list[str]:
    async with rt.engine.connect() as conn:
        rows = await conn.execute(select(ChargerKeyChange.state).order_by(ChargerKeyChange.id))
        return [r.state for r in rows]


async def refused(rt: Runtime, key: str) -> bool:
    return await status_of(connect(rt, CHARGER, key)) == 401


def test_the_rules() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = now + timedelta(minutes=1)
    assert key_changes.usable("sending", later, now) and key_changes.usable("accepted", later, now)
    assert not key_changes.usable("accepted", now, now)  # the deadline is exclusive
    for final in key_changes.FINAL:
        assert not key_changes.usable(final, later, now)
    assert key_changes.after_answer("Accepted") == "accepted"
    others = ("Rejected", "RebootRequired", "NotSupported")
    assert {key_changes.after_answer(s) for s in others} == {"rejected"}
    key = key_changes.new_key()
    assert len(key) == 40 and int(key, 16) >= 0 and key != key_changes.new_key()


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_accepted_and_reconnected_the_new_key_replaces_the_old(
    rt: Runtime, protocol: str, known_key: str
) -> None:
    await provision(rt, CHARGER, OLD)
    charger = sim(rt, protocol)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        connects = charger.stats.connects
        answer = await change(rt)
        assert answer["state"] in ("accepted", "active")
        await until(lambda: charger.stats.connects > connects and charger.accepted)
        assert charger.auth_key == known_key
        assert await until(lambda: states(rt)) == ["active"]
        await rt.passwords.settled()
        assert await refused(rt, OLD)  # the old key is refused from now on
        async with rt.engine.connect() as conn:
            outcomes = [
                r.outcome
                for r in await conn.execute(
                    select(AuditEntry.outcome).where(AuditEntry.action == "charger.password")
                )
            ]
            logged = [
                str(r.detail)
                for r in await conn.execute(
                    select(AuditEntry.detail).where(AuditEntry.target == CHARGER)
                )
            ]
        assert outcomes == ["active"]
        assert not any(known_key in text for text in logged)  # never in the audit log
    finally:
        await charger.stop()


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_rejected_the_old_key_stays_and_the_new_one_is_refused(
    rt: Runtime, protocol: str, known_key: str
) -> None:
    await provision(rt, CHARGER, OLD)
    charger = sim(rt, protocol, reject_password=1)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        assert (await change(rt))["state"] == "rejected"
        assert await states(rt) == ["rejected"]
        assert charger.auth_key == OLD and charger.accepted
        assert await refused(rt, known_key)
        await charger.stop()
        ws = await connect(rt, CHARGER, OLD)  # the old key still admits it
        await ws.close()
    finally:
        await charger.stop()


async def test_never_reconnecting_with_it_keeps_the_old_key_after_the_deadline(
    tmp_path: Path, sqlite_url: str, known_key: str
) -> None:
    rt = await _runtime(tmp_path, sqlite_url, charger_password_grace_minutes=0.01)
    charger = sim(rt, "ocpp1.6", keep_old_password=1)
    try:
        await provision(rt, CHARGER, OLD)
        charger.start()
        await until(lambda: charger.accepted)
        connects = charger.stats.connects
        assert (await change(rt))["state"] == "accepted"
        # It reconnects, with the old key: still admitted during the grace period.
        await until(lambda: charger.stats.connects > connects and charger.accepted)
        assert await until(lambda: states(rt), lambda s: s == ["expired"]) == ["expired"]
        await rt.passwords.settled()
        assert await refused(rt, known_key)
        await charger.stop()
        ws = await connect(rt, CHARGER, OLD)
        await ws.close()
        async with api_client(rt) as api:
            alerts = (await api.get("/api/v1/alerts")).json()
        assert any(a["rule"] == "charger_password_not_taken" for a in alerts["items"]), alerts
    finally:
        await charger.stop()
        await rt.stop()


async def test_both_keys_work_while_pending_and_the_first_use_of_the_new_one_switches(
    rt: Runtime, known_key: str
) -> None:
    await provision(rt, CHARGER, OLD)
    charger = sim(rt, "ocpp1.6", keep_old_password=1)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        assert (await change(rt))["state"] == "accepted"
        await charger.stop()
        ws = await connect(rt, CHARGER, OLD)  # pending: the old key still works
        await ws.close()
        ws = await connect(rt, CHARGER, known_key)  # the new one too, and now it is the key
        await ws.close()
        assert await states(rt) == ["active"]
        assert await refused(rt, OLD)
    finally:
        await charger.stop()


async def test_an_offline_charger_fails_cleanly_and_keeps_its_key(
    rt: Runtime, known_key: str
) -> None:
    await provision(rt, CHARGER, OLD)
    async with api_client(rt) as api:
        r = await api.post(f"/api/v1/chargers/{CHARGER}/password", json={})
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await states(rt) == ["failed"]
    r = await invoke(rt, "charger-security", "password", CHARGER)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert await refused(rt, known_key)
    ws = await connect(rt, CHARGER, OLD)
    await ws.close()


async def test_with_four_eyes_the_change_runs_when_a_second_operator_approves(
    tmp_path: Path, sqlite_url: str, known_key: str
) -> None:
    rt = await _runtime(tmp_path, sqlite_url, approval_actions=["charger.credentials"])
    charger = sim(rt, "ocpp1.6")
    try:
        await provision(rt, CHARGER, OLD)
        charger.start()
        await until(lambda: charger.accepted)
        alice = await session_for(rt, "alice", ["security_admin"])
        bob = await session_for(rt, "bob", ["security_admin"])
        async with api_client(rt, alice) as a, api_client(rt, bob) as b:
            path = f"/api/v1/chargers/{CHARGER}/password"
            res = await a.post(path, json={})
            assert res.status_code == 422 and res.json()["field"] == "reason"
            res = await a.post(path, json={"reason": "yearly rotation"})
            assert res.status_code == 202, res.text
            assert await states(rt) == [] and charger.auth_key == OLD  # nothing sent yet
            res = await b.post(f"/api/v1/approvals/{res.json()['approval_id']}/approve")
            assert res.status_code == 200 and res.json()["state"] == "executed", res.text
        assert await until(lambda: states(rt)) == ["active"]
        assert charger.auth_key == known_key and await refused(rt, OLD)
    finally:
        await charger.stop()
        await rt.stop()
