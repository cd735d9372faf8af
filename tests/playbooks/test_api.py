"""The playbook API: documents in JSON and YAML, versions, switches, problems naming the
field, scope confinement, runs narrowed to the caller's chargers, and the audit trail."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from evota.playbooks import spec, store
from evota.runtime import Runtime
from evota.store.models import Playbook as PlaybookRow
from evota.store.models import PlaybookRun
from tests.conftest import api_client, session_for, start_runtime

YAML = {"Content-Type": "application/yaml"}

STUCK_YAML = """
name: stuck-connector
description: unlock, then a soft reset
trigger: {kind: connector_faulted, error_codes: [ConnectorLockFailure], for_minutes: 10}
target: {sites: [s-north]}
steps:
  - command: unlock-connector
    params: {connector_id: "{connector}"}
    wait: {until: connector_available, minutes: 5}
  - command: reset
    params: {type: Soft}
  - escalate: {message: still faulted}
"""


def doc(name: str = "boots", **changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "trigger": {"kind": "repeated_boots", "count": 3, "within_minutes": 60},
        "target": {"sites": ["s-north"]},
        "steps": [{"escalate": {"message": "boot loop"}}],
    }
    d.update(changes)
    return d


async def _fleet(admin: httpx.AsyncClient) -> None:
    for site, region in (("s-north", "north"), ("s-south", "south")):
        res = await admin.post(
            "/api/v1/sites", json={"id": site, "name": site, "timezone": "UTC", "region": region}
        )
        assert res.status_code == 201, res.text
    for cid, site in (("N-1", "s-north"), ("S-1", "s-south")):
        res = await admin.post(
            "/api/v1/chargers",
            json={"id": cid, "auth_key": "key-0123456789abcdef", "site_id": site},
        )
        assert res.status_code == 201, res.text


async def _audit(rt: Runtime, action: str) -> dict[str, Any]:
    async with api_client(rt) as api:
        page = (await api.get("/api/v1/audit", params={"action": action, "limit": 1})).json()
    assert page["items"], action
    return dict(page["items"][0])


async def _run(rt: Runtime, playbook: str, charger: str, outcome: str | None, **extra: Any) -> str:
    """A run as the runner stores it (the engine's own tests drive real runs)."""
    run_id = str(uuid.uuid4())
    now = rt.clock.now()
    async with rt.engine.begin() as conn:
        await conn.execute(
            insert(PlaybookRun).values(
                id=run_id,
                playbook=playbook,
                playbook_version=1,
                charger_id=charger,
                connector_id=1,
                fault_key="connector:1:ConnectorLockFailure",
                trigger={"kind": "connector_faulted"},
                state=outcome or "waiting",
                step_index=0,
                outcome=outcome,
                dry_run=False,
                started_at=now - timedelta(minutes=len(extra)),
                updated_at=now,
                log=[{"at": now.isoformat(), "event": "sent", "command": "reset"}],
                **extra,
            )
        )
    return run_id


async def test_create_change_switch_and_delete(tmp_path: Path, database_url: str) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as api:
            await _fleet(api)
            res = await api.post("/api/v1/playbooks", content=STUCK_YAML, headers=YAML)
            assert res.status_code == 201, res.text
            created = res.json()
            assert created["version"] == 1 and created["enabled"] is False
            assert created["steps"][0]["params"] == {"connector_id": "{connector}"}
            assert created["outcomes"]["resolved"] == 0
            assert (
                await api.post("/api/v1/playbooks", content=STUCK_YAML, headers=YAML)
            ).status_code == 409

            # enabling: the next version, and the audit entry names the spec hash switched on
            res = await api.post("/api/v1/playbooks/stuck-connector/enable")
            assert res.status_code == 200, res.text
            assert res.json()["enabled"] is True and res.json()["version"] == 2
            entry = await _audit(rt, "api.enable_playbook")
            assert entry["target"] == "stuck-connector"
            assert entry["detail"]["spec_hash"] == created["spec_hash"]
            assert entry["detail"]["version"] == 2
            assert entry["detail"]["changes"]["enabled"] == {"before": False, "after": True}

            # apply a changed document: a new version, still enabled (the document is silent)
            changed = STUCK_YAML.replace("for_minutes: 10", "for_minutes: 15")
            res = await api.put("/api/v1/playbooks/stuck-connector", content=changed, headers=YAML)
            assert res.status_code == 200, res.text
            body = res.json()
            assert body["version"] == 3 and body["enabled"] is True
            assert (
                body["trigger"]["for_minutes"] == 15 and body["spec_hash"] != created["spec_hash"]
            )
            # the same document again changes nothing
            res = await api.put("/api/v1/playbooks/stuck-connector", content=changed, headers=YAML)
            assert res.json()["version"] == 3
            # JSON works the same; a stale version is a conflict
            stale = spec.to_dict(spec.parse_text(changed)) | {"version": 2}
            res = await api.put("/api/v1/playbooks/stuck-connector", json=stale)
            assert res.status_code == 409 and res.json()["field"] == "version", res.text

            res = await api.put("/api/v1/playbooks/stuck-connector/dry-run", json={"dry_run": True})
            assert res.json()["dry_run"] is True and res.json()["version"] == 4
            res = await api.post("/api/v1/playbooks/stuck-connector/disable")
            assert res.json()["enabled"] is False and res.json()["version"] == 5

            res = await api.put("/api/v1/playbooks/boots", json=doc())  # PUT creates too
            assert res.status_code == 201, res.text
            listed = (await api.get("/api/v1/playbooks")).json()
            assert [p["name"] for p in listed["items"]] == ["boots", "stuck-connector"]
            assert listed["kill_switch"] is False

            assert (await api.delete("/api/v1/playbooks/boots")).status_code == 204
            assert (await api.get("/api/v1/playbooks/boots")).status_code == 404
            deleted = await _audit(rt, "api.delete_playbook")
            assert deleted["target"] == "boots"
    finally:
        await rt.stop()


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (STUCK_YAML.replace("type: Soft", "type: Sideways"), YAML, 422, "steps[1].params.type"),
        (STUCK_YAML.replace("for_minutes: 10", "for_minutes: 0"), YAML, 422, "trigger.for_minutes"),
        (
            STUCK_YAML.replace("until: connector_available", "until: sunrise"),
            YAML,
            422,
            "steps[0].wait.until",
        ),
        (STUCK_YAML + "colour: red\n", YAML, 422, "colour"),
        ("name: [unclosed", YAML, 422, "(body)"),
        ("a: &x [1]\nb: *x\n", YAML, 422, "(body)"),
        (STUCK_YAML, {"Content-Type": "text/html"}, 415, "(body)"),
        ("x: " + "y" * spec.MAX_TEXT_BYTES, YAML, 413, None),
        (
            '{"name": "p", "trigger": {"kind": "job_stuck"}}',
            {"Content-Type": "application/json"},
            422,
            "trigger.for_minutes",
        ),
        (
            STUCK_YAML.replace("{message: still faulted}", "{webhook_url: 'http://tickets.example/x'}"),
            YAML,
            422,
            "steps[2].escalate.webhook_url",
        ),
    ],
)  # fmt: skip
async def test_bad_documents_are_problems_naming_the_field(
    evota_sqlite: Runtime, body: str, headers: dict[str, str], status: int, field: str | None
) -> None:
    async with api_client(evota_sqlite) as api:
        res = await api.post("/api/v1/playbooks", content=body, headers=headers)
        assert res.status_code == status, res.text
        assert res.headers["content-type"].startswith("application/problem+json")
        if field is not None:
            assert res.json()["field"] == field, res.text
        assert (await api.get("/api/v1/playbooks")).json()["total"] == 0


async def test_put_refuses_a_document_naming_another_playbook(evota_sqlite: Runtime) -> None:
    async with api_client(evota_sqlite) as api:
        res = await api.put("/api/v1/playbooks/other", json=doc("boots"))
        assert res.status_code == 422 and res.json()["field"] == "name", res.text


async def test_scoped_operator_cannot_widen_its_reach(tmp_path: Path, database_url: str) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            await _fleet(admin)
            # the fleet-wide admin's playbooks: one for the south, one for a whole vendor
            for d in (
                doc("south", target={"sites": ["s-south"]}),
                doc("acme", target={"vendors": ["Acme"]}),
            ):
                assert (await admin.post("/api/v1/playbooks", json=d)).status_code == 201
        token = await session_for(rt, "north-op", ["operator"], sites=["s-north"])
        async with api_client(rt, token) as api:
            res = await api.post("/api/v1/playbooks", json=doc("mine"))
            assert res.status_code == 201, res.text
            for target in (
                {"sites": ["s-south"]},
                {"vendors": ["Acme"]},
                {},
                {"charger_ids": ["S-1"]},
            ):
                res = await api.post("/api/v1/playbooks", json=doc("wide", target=target))
                assert res.status_code == 403 and res.json()["field"] == "target", (
                    target,
                    res.text,
                )
            # nor by changing its own playbook's target
            res = await api.put(
                "/api/v1/playbooks/mine", json=doc("mine", target={"regions": ["south"]})
            )
            assert res.status_code == 403, res.text
            assert (await api.get("/api/v1/playbooks/mine")).json()["target"] == {
                "sites": ["s-north"]
            }
            # others' playbooks reaching outside its scope do not exist for it
            assert [p["name"] for p in (await api.get("/api/v1/playbooks")).json()["items"]] == [
                "mine"
            ]
            for name in ("south", "acme"):
                assert (await api.get(f"/api/v1/playbooks/{name}")).status_code == 404
                assert (await api.post(f"/api/v1/playbooks/{name}/enable")).status_code == 404
                assert (await api.delete(f"/api/v1/playbooks/{name}")).status_code == 404
                res = await api.put(f"/api/v1/playbooks/{name}", json=doc(name))
                assert res.status_code == 404, res.text
            # the kill switch is fleet-wide
            assert (
                await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": True})
            ).status_code == 403
        viewer = await session_for(rt, "viewer", ["viewer"])
        async with api_client(rt, viewer) as api:
            assert (await api.get("/api/v1/playbooks")).json()["total"] == 3
            assert (await api.post("/api/v1/playbooks/mine/enable")).status_code == 403
            assert (await api.post("/api/v1/playbooks", json=doc("v"))).status_code == 403
        async with api_client(rt) as admin:
            assert (await admin.get("/api/v1/playbooks/south")).json()["enabled"] is False
    finally:
        await rt.stop()


async def test_runs_and_outcomes_are_narrowed_to_the_callers_chargers(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            await _fleet(admin)
            res = await admin.post("/api/v1/playbooks", json=doc("fleet", target={}))
            assert res.status_code == 201, res.text
        north_ok = await _run(rt, "fleet", "N-1", "resolved")
        await _run(rt, "fleet", "N-1", "escalated", reason="still faulted")
        await _run(rt, "fleet", "N-1", None)
        await _run(rt, "fleet", "S-1", "resolved")
        await _run(rt, "fleet", "S-1", "failed")

        async with api_client(rt) as admin:
            counts = (await admin.get("/api/v1/playbooks/fleet")).json()["outcomes"]
            assert counts == {
                **{o: 0 for o in store.OUTCOMES},
                "resolved": 2,
                "escalated": 1,
                "failed": 1,
                "in_progress": 1,
            }
            runs = (await admin.get("/api/v1/playbooks/runs", params={"playbook": "fleet"})).json()
            assert runs["total"] == 5
            only = await admin.get(
                "/api/v1/playbooks/runs", params={"charger_id": "N-1", "outcome": "resolved"}
            )
            assert [r["id"] for r in only.json()["items"]] == [north_ok]
            assert only.json()["items"][0]["log"][0]["command"] == "reset"
            going = await admin.get("/api/v1/playbooks/runs", params={"outcome": "in_progress"})
            assert going.json()["total"] == 1
            bad = await admin.get("/api/v1/playbooks/runs", params={"outcome": "happy"})
            assert bad.status_code == 422 and bad.json()["field"] == "outcome"

        # a north viewer sees the north's runs only (the playbook itself reaches further)
        token = await session_for(rt, "north-viewer", ["viewer"], sites=["s-north"])
        async with api_client(rt, token) as api:
            runs = (await api.get("/api/v1/playbooks/runs")).json()
            assert {r["charger_id"] for r in runs["items"]} == {"N-1"} and runs["total"] == 3
            south = await api.get("/api/v1/playbooks/runs", params={"charger_id": "S-1"})
            assert south.json()["total"] == 0
            assert (await api.get("/api/v1/playbooks/fleet")).status_code == 404
    finally:
        await rt.stop()


async def test_kill_switch_is_flipped_audited_and_shown(evota_sqlite: Runtime) -> None:
    rt = evota_sqlite
    async with api_client(rt) as api:
        assert (await api.get("/api/v1/playbooks/kill-switch")).json() == {"kill_switch": False}
        res = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": True})
        assert res.status_code == 200 and res.json() == {"kill_switch": True}, res.text
        assert rt.playbooks.kill_switch is True  # the runner's own switch
        assert (await api.get("/api/v1/playbooks")).json()["kill_switch"] is True
        entry = await _audit(rt, "api.put_kill_switch")
        assert entry["detail"]["changes"] == {"kill_switch": {"before": False, "after": True}}
        res = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": "maybe"})
        assert res.status_code == 422 and res.json()["field"].endswith("kill_switch"), res.text
        res = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": False})
        assert res.json() == {"kill_switch": False} and rt.playbooks.kill_switch is False


async def test_the_kill_switch_outlives_a_restart(tmp_path: Path, sqlite_url: str) -> None:
    """Kept in the runner's memory, a restart let every playbook run again."""
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        async with api_client(rt) as api:
            res = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": True})
            assert res.json() == {"kill_switch": True}
    finally:
        await rt.stop()
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        assert rt.playbooks.kill_switch is True
        async with api_client(rt) as api:
            assert (await api.get("/api/v1/playbooks/kill-switch")).json() == {"kill_switch": True}
    finally:
        await rt.stop()


async def test_playbooks_disabled_at_start_engage_the_switch_an_operator_may_lift(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, playbooks_enabled=False)
    try:
        assert rt.playbooks.kill_switch is True
        async with api_client(rt) as api:
            assert (await api.get("/api/v1/playbooks/kill-switch")).json() == {"kill_switch": True}
            res = await api.put("/api/v1/playbooks/kill-switch", json={"kill_switch": False})
            assert res.json() == {"kill_switch": False}
        assert rt.playbooks.kill_switch is False
    finally:
        await rt.stop()


async def test_enabling_a_suspended_playbook_resumes_it(evota_sqlite: Runtime) -> None:
    rt = evota_sqlite
    async with api_client(rt) as api:
        res = await api.post("/api/v1/playbooks", json=doc(target={}, enabled=True))
        assert res.status_code == 201, res.text
        assert "boots" in rt.playbooks.playbooks  # the runner loaded it
        await rt.playbooks.suspend("boots", "3 of 5 runs failed")
        shown = (await api.get("/api/v1/playbooks/boots")).json()
        assert shown["suspended_reason"] == "3 of 5 runs failed" and shown["enabled"] is True
        assert "boots" not in rt.playbooks.playbooks

        res = await api.post("/api/v1/playbooks/boots/enable")
        assert res.status_code == 200, res.text
        assert res.json()["suspended_reason"] is None and res.json()["version"] == 2
        assert "boots" in rt.playbooks.playbooks
        entry = await _audit(rt, "api.enable_playbook")
        assert entry["detail"]["resumed"] is True


async def test_a_stored_playbook_the_rules_now_refuse_does_not_stop_loading(
    evota_sqlite: Runtime,
) -> None:
    rt = evota_sqlite
    async with api_client(rt) as api:
        res = await api.post("/api/v1/playbooks", json=doc("good", target={}, enabled=True))
        assert res.status_code == 201, res.text
    now = rt.clock.now()
    old = {"trigger": {"kind": "meteor_shower"}, "steps": []}  # valid once, say
    async with rt.engine.begin() as conn:
        await conn.execute(
            insert(PlaybookRow).values(
                name="legacy", version=1, enabled=True, dry_run=False, spec=old,
                spec_hash="0" * 64, created_by="x", created_at=now, updated_by="x", updated_at=now,
            )
        )  # fmt: skip
    assert [p.name for p in await store.load_enabled(rt.engine)] == ["good"]
