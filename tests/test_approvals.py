"""Four eyes: requests, self-approval refused, a second operator's approval runs the action,
rejection and expiry leave it undone, and every step is in the audit log."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from evota.operators import four_eyes
from evota.store.models import AuditEntry, Charger
from tests.conftest import ShiftedClock, api_client, session_for, start_runtime

ALL = list(four_eyes.ACTIONS)


def test_approvals_are_on_by_default() -> None:
    from evota.config import Settings

    s = Settings()
    assert set(s.approval_actions) == set(four_eyes.ACTIONS)
    policy = four_eyes.Policy.of(s.approval_actions, s.approval_charger_threshold)
    assert four_eyes.required(policy, "operation.start", 50)
    assert not four_eyes.required(policy, "operation.start", 1)
    assert four_eyes.required(policy, "campaign.start")


async def _registration(rt, charger_id: str) -> str:  # type: ignore[no-untyped-def]
    async with rt.engine.connect() as conn:
        return str(
            (
                await conn.execute(select(Charger.registration).where(Charger.id == charger_id))
            ).scalar()
        )


async def test_disabling_a_charger_waits_for_a_second_operator(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            res = await admin.post(
                "/api/v1/chargers", json={"id": "CP-9", "auth_key": "key-0123456789abcdef"}
            )
            assert res.status_code == 201
        alice = await session_for(rt, "alice", ["security_admin"])
        bob = await session_for(rt, "bob", ["security_admin"])
        viewer = await session_for(rt, "vic", ["viewer"])
        async with (
            api_client(rt, alice) as a,
            api_client(rt, bob) as b,
            api_client(rt, viewer) as v,
        ):
            res = await a.patch("/api/v1/chargers/CP-9", json={"registration": "Rejected"})
            assert res.status_code == 422 and res.json()["field"] == "reason"
            res = await a.patch(
                "/api/v1/chargers/CP-9",
                json={"registration": "Rejected", "reason": "stolen unit"},
            )
            assert res.status_code == 202, res.text
            approval_id = res.json()["approval_id"]
            assert res.json()["state"] == "awaiting_approval"
            assert await _registration(rt, "CP-9") == "Accepted"  # nothing changed yet

            inbox = (await v.get("/api/v1/approvals", params={"state": "pending"})).json()
            assert [i["id"] for i in inbox["items"]] == [approval_id]
            assert inbox["items"][0]["reason"] == "stolen unit"
            assert (await v.post(f"/api/v1/approvals/{approval_id}/approve")).status_code == 403

            res = await a.post(f"/api/v1/approvals/{approval_id}/approve")
            assert res.status_code == 403 and res.json()["reason"] == "self_approval"
            res = await a.post(f"/api/v1/approvals/{approval_id}/reject")
            assert res.status_code == 403  # nor reject it

            res = await b.post(f"/api/v1/approvals/{approval_id}/approve", json={"note": "ok"})
            assert res.status_code == 200, res.text
            assert res.json()["state"] == "executed"
            assert res.json()["decided_by"] == "bob"
            assert await _registration(rt, "CP-9") == "Rejected"

            again = await b.post(f"/api/v1/approvals/{approval_id}/approve")
            assert again.status_code == 409
        async with rt.engine.connect() as conn:
            actions = [
                (r.actor, r.action, r.outcome)
                for r in await conn.execute(
                    select(AuditEntry).where(AuditEntry.target == approval_id)
                )
            ]
        assert ("alice", "approval.requested", "pending") in actions
        assert ("bob", "approval.approved", "approved") in actions
        assert ("system", "approval.executed", "executed") in actions
    finally:
        await rt.stop()


async def test_key_rotation_rejected_and_never_stored_in_clear(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            await admin.post(
                "/api/v1/chargers", json={"id": "CP-1", "auth_key": "key-0123456789abcdef"}
            )
        alice = await session_for(rt, "alice", ["security_admin"])
        bob = await session_for(rt, "bob", ["security_admin"])
        async with api_client(rt, alice) as a, api_client(rt, bob) as b:
            res = await a.patch(
                "/api/v1/chargers/CP-1",
                json={"auth_key": "new-key-0123456789abc", "reason": "rotation"},
            )
            assert res.status_code == 202
            approval_id = res.json()["approval_id"]
            shown = (await b.get(f"/api/v1/approvals/{approval_id}")).json()
            assert "new-key-0123456789abc" not in str(shown)
            assert shown["payload"]["changes"]["auth_hash"] == "[redacted]"
            async with rt.engine.connect() as conn:
                before = (
                    await conn.execute(select(Charger.auth_hash).where(Charger.id == "CP-1"))
                ).scalar()
            res = await b.post(f"/api/v1/approvals/{approval_id}/reject", json={"note": "no"})
            assert res.status_code == 200 and res.json()["state"] == "rejected"
            async with rt.engine.connect() as conn:
                after = (
                    await conn.execute(select(Charger.auth_hash).where(Charger.id == "CP-1"))
                ).scalar()
            assert after == before
    finally:
        await rt.stop()


async def test_requests_expire(tmp_path: Path, sqlite_url: str) -> None:
    clock = ShiftedClock()
    rt = await start_runtime(
        tmp_path, sqlite_url, clock=clock, approval_actions=ALL, approval_ttl_hours=1
    )
    try:
        async with api_client(rt) as admin:
            await admin.post(
                "/api/v1/chargers", json={"id": "CP-2", "auth_key": "key-0123456789abcdef"}
            )
        alice = await session_for(rt, "alice", ["security_admin"])
        bob = await session_for(rt, "bob", ["security_admin"])
        async with api_client(rt, alice) as a:
            res = await a.patch(
                "/api/v1/chargers/CP-2", json={"registration": "Rejected", "reason": "test"}
            )
            approval_id = res.json()["approval_id"]
        clock.advance(hours=1, seconds=1)
        bob = await session_for(rt, "bob", ["security_admin"])  # a fresh login after the hour
        async with api_client(rt, bob) as b:
            shown = (await b.get(f"/api/v1/approvals/{approval_id}")).json()
            assert shown["state"] == "expired"
            res = await b.post(f"/api/v1/approvals/{approval_id}/approve")
            assert res.status_code == 409 and res.json()["reason"] == "expired"
        assert await _registration(rt, "CP-2") == "Accepted"
        assert await rt.approvals.sweep() == 0  # already marked expired by the refusal
    finally:
        await rt.stop()


async def test_without_approval_configured_changes_apply_at_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=[])
    try:
        async with api_client(rt) as admin:
            await admin.post(
                "/api/v1/chargers", json={"id": "CP-3", "auth_key": "key-0123456789abcdef"}
            )
            res = await admin.patch("/api/v1/chargers/CP-3", json={"registration": "Rejected"})
            assert res.status_code == 200
        assert await _registration(rt, "CP-3") == "Rejected"
    finally:
        await rt.stop()
