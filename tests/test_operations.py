"""Bulk operations and configuration profiles end to end: evota on loopback, simulated
chargers as the charger side, the REST API as the operator.

Covers staged runs with per-charger results, the failure-threshold stop (offline chargers and
chargers that refuse), cancel, a restart that resumes without resending, four-eyes approval
of a 50-charger reset, drift found after boot and fixed by applying a profile, and drift
found again by the scheduled poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

from evota.control.operation import OperationState
from evota.ocpp import rpc
from evota.operators import permissions as perms
from evota.operators import users
from evota.operators.credentials import token_hash
from evota.runtime import Runtime
from evota.sim import HANDLERS, Fleet, Reply, fleet_from_flags
from evota.sim.charger import Handler, SimulatedCharger
from evota.store.models import ApiToken, AuditEntry, ChargerEvent, ChargerSetting, Grant

from .conftest import TOKEN, ShiftedClock, api_client, start_runtime
from .sim.conftest import fast
from .support import until

DROP = object()  # a key left out of a request body
FAST: dict[str, Any] = {
    "config_boot_delay_seconds": 0.5,  # after the write-behind has stored the boot
    "operation_min_sample": 2,
    "call_timeout": 3.0,
    "operation_resume_delay_seconds": 1.0,
}


# -- the simulated chargers' configuration ---------------------------------------------------

DEFAULT_CONFIG = {
    "HeartbeatInterval": ("300", False),
    "MeterValueSampleInterval": ("60", False),
    "LocalPreAuthorize": (None, False),
    "NumberOfConnectors": ("2", True),
}


def config_handlers(store: dict[str, tuple[str | None, bool]]) -> dict[str, Handler]:
    """GetConfiguration / ChangeConfiguration over ``store`` (key -> (value, readonly))."""

    async def get(_c: SimulatedCharger, call: rpc.Call) -> Reply:
        wanted = call.payload.get("key") or list(store)
        known = [k for k in wanted if k in store]
        items = []
        for k in known:
            value, readonly = store[k]
            item: dict[str, Any] = {"key": k, "readonly": readonly}
            if value is not None:
                item["value"] = value
            items.append(item)
        payload: dict[str, Any] = {"configurationKey": items}
        unknown = [k for k in wanted if k not in store]
        if unknown:
            payload["unknownKey"] = unknown
        return Reply(payload)

    async def change(_c: SimulatedCharger, call: rpc.Call) -> Reply:
        key, value = call.payload["key"], call.payload["value"]
        if key not in store:
            return Reply({"status": "NotSupported"})
        if store[key][1]:
            return Reply({"status": "Rejected"})
        store[key] = (value, False)
        return Reply({"status": "Accepted"})

    return {"GetConfiguration": get, "ChangeConfiguration": change}


async def refuse(_c: SimulatedCharger, _call: rpc.Call) -> Reply:
    return Reply({"status": "Rejected"})


async def never(_c: SimulatedCharger, _call: rpc.Call) -> Reply:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


# -- the bench -------------------------------------------------------------------------------


@dataclass
class Desk:
    rt: Runtime
    api: httpx.AsyncClient
    tmp_path: Path
    url: str
    overrides: dict[str, Any]
    fleets: list[Fleet] = field(default_factory=list)
    configs: dict[str, dict[str, tuple[str | None, bool]]] = field(default_factory=dict)
    resets: dict[str, int] = field(default_factory=dict)

    async def chargers(
        self,
        count: int,
        prefix: str,
        *,
        start: bool = True,
        site: str | None = None,
        handlers: dict[str, dict[str, Handler]] | None = None,
    ) -> list[str]:
        """Provision ``count`` simulated chargers (and start them unless told otherwise)."""
        spec = fleet_from_flags(count, prefix=prefix, seed="ops", site_id=site)
        fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp", config=fast())
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        for charger in fleet:
            cid = charger.identity
            self.configs[cid] = dict(DEFAULT_CONFIG)
            table = {**HANDLERS, **config_handlers(self.configs[cid])}
            table["Reset"] = self._counting(cid, table["Reset"])
            for action, handler in (handlers or {}).get(cid, {}).items():
                table[action] = self._counting(cid, handler) if action == "Reset" else handler
            charger.handlers = table
        self.fleets.append(fleet)
        if start:
            await fleet.start()
            await fleet.wait_for_all(lambda c: c.accepted, 15)
        return [c.identity for c in fleet]

    def _counting(self, cid: str, handler: Handler) -> Handler:
        async def counted(charger: SimulatedCharger, call: rpc.Call) -> Reply:
            self.resets[cid] = self.resets.get(cid, 0) + 1
            return await handler(charger, call)

        return counted

    async def create(self, client: httpx.AsyncClient | None = None, **body: Any) -> httpx.Response:
        body.setdefault("command", "reset")
        body.setdefault("params", {"type": "Soft"})
        body.setdefault("reason", "test")
        return await (client or self.api).post("/api/v1/operations", json=body)

    async def op(self, op_id: str, **params: Any) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/operations/{op_id}", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def ended(self, op_id: str, timeout: float = 20) -> dict[str, Any]:
        """The operation once it is over and no answer is outstanding."""
        return dict(
            await until(
                lambda: self.op(op_id),
                lambda o: (
                    o["state"] not in ("running", "awaiting_approval") and not o["progress"]["sent"]
                ),
                timeout=timeout,
            )
        )

    async def audit(self, action: str | None = None) -> list[Any]:
        async with self.rt.engine.connect() as conn:
            query = select(AuditEntry).order_by(AuditEntry.seq)
            if action:
                query = query.where(AuditEntry.action == action)
            return list((await conn.execute(query)).all())

    async def operator(
        self, name: str, scope: perms.Scope | None = None, roles: tuple[str, ...] = ("operator",)
    ) -> httpx.AsyncClient:
        """A second person: a user holding ``roles`` and an API token of theirs."""
        view = await users.create_user(
            self.rt.engine,
            self.rt.clock.now(),
            name,
            "correct horse battery staple 42",
            list(roles),
            scope or perms.Scope(),
        )
        token = "evota_" + secrets.token_urlsafe(24)
        async with self.rt.engine.begin() as conn:
            await conn.execute(
                insert(ApiToken).values(
                    name=f"{name}-token",
                    token_hash=token_hash(token),
                    role="user",
                    user_id=view.id,
                    roles=[],
                    sites=[],
                    created_at=self.rt.clock.now(),
                )
            )
        return api_client(self.rt, token)

    async def grant(self, name: str, role: str) -> None:
        user = await users.get_user(self.rt.engine, name)
        async with self.rt.engine.begin() as conn:
            await conn.execute(
                insert(Grant).values(user_id=user.id, role=role, sites=[], regions=[], tags=[])
            )

    async def restart(self) -> None:
        ports = {"ocpp_port": self.rt.ocpp_port, "http_port": self.rt.http_port}
        await self.api.aclose()
        await self.rt.stop()
        self.rt = await start_runtime(self.tmp_path, self.url, **{**self.overrides, **ports})
        self.api = api_client(self.rt)

    async def close(self) -> None:
        for fleet in self.fleets:
            await fleet.stop()
        await self.api.aclose()
        await self.rt.stop()


@contextlib.asynccontextmanager
async def desk(tmp_path: Path, url: str, **overrides: Any) -> AsyncIterator[Desk]:
    settings = {**FAST, **overrides}
    rt = await start_runtime(tmp_path, url, **settings)
    d = Desk(rt, api_client(rt), tmp_path, url, settings)
    try:
        yield d
    finally:
        await d.close()


# -- staged runs -----------------------------------------------------------------------------


async def test_a_staged_reset_of_twenty_chargers_completes_with_results(
    tmp_path: Path, database_url: str
) -> None:
    async with desk(tmp_path, database_url) as d:
        ids = await d.chargers(20, "ST-")
        r = await d.create(target={"charger_ids": ids}, stages=[2], rate_per_second=10)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["state"] == "running" and created["stage_sizes"] == [2, 18]
        assert r.headers["location"] == f"/api/v1/operations/{created['id']}"
        o = await d.ended(created["id"])
        assert o["state"] == "completed", o
        assert o["progress"] == {
            "pending": 0,
            "sent": 0,
            "succeeded": 20,
            "failed": 0,
            "skipped": 0,
        }
        assert [(s["size"], s["state"], s["results"]) for s in o["stages"]] == [
            (2, "done", {"succeeded": 2}),
            (18, "done", {"succeeded": 18}),
        ]
        assert {res["charger_id"] for res in o["results"]} == set(ids)
        assert all(res["status"] == "Accepted" and res["at"] for res in o["results"])
        assert d.resets == dict.fromkeys(ids, 1)  # each charger exactly once

        # one audited command per charger, tagged with the operation; stage 1 before stage 2
        commands = [
            e for e in await d.audit("command.reset") if e.request_id == f"operation:{o['id']}"
        ]
        assert sorted(e.target for e in commands) == sorted(ids)
        first = {res["charger_id"] for res in o["results"] if res["stage"] == 0}
        seq_first = [e.seq for e in commands if e.target in first]
        seq_rest = [e.seq for e in commands if e.target not in first]
        assert max(seq_first) < min(seq_rest)
        # never faster than 10 per second: any 11 commands span a second (their answers are
        # audited a few milliseconds after each send, hence the slack)
        times = sorted(e.at.timestamp() for e in commands)
        assert all(times[i + 10] - times[i] >= 0.75 for i in range(len(times) - 10))
        actions = [e.action for e in await d.audit() if e.target == o["id"]]
        assert actions[0] == "operation.created"
        assert "operation.stage" in actions and actions[-1] == "operation.completed"

        listed = (await d.api.get("/api/v1/operations", params={"state": "completed"})).json()
        assert [i["id"] for i in listed["items"]] == [o["id"]] and listed["total"] == 1


async def test_an_operation_stops_at_its_failure_threshold(tmp_path: Path, sqlite_url: str) -> None:
    # a stage is judged once 5 chargers have answered (the minimum sample)
    async with desk(tmp_path, sqlite_url, operation_min_sample=5) as d:
        online = await d.chargers(8, "ON-", handlers={"ON-0001": {"Reset": refuse}})
        offline = await d.chargers(2, "OFF-", start=False)
        # stage 1: one offline, one refusing, three fine -> 40 % failed > 20 %
        order = [offline[0], online[0], *online[1:4], offline[1], *online[4:]]
        r = await d.create(target={"charger_ids": order}, stages=[5], max_failure_rate=0.2)
        assert r.status_code == 201, r.text
        o = await d.ended(r.json()["id"])
        assert o["state"] == "stopped", o
        assert "stage 1: 2 of 5" in o["state_reason"]
        assert o["progress"] == {"pending": 0, "sent": 0, "succeeded": 3, "failed": 2, "skipped": 5}
        by_id = {res["charger_id"]: res for res in o["results"]}
        assert by_id[offline[0]]["detail"]["reason"] == "offline"
        assert by_id["ON-0001"]["status"] == "Rejected" and by_id["ON-0001"]["state"] == "failed"
        assert {c for c, res in by_id.items() if res["state"] == "skipped"} == set(order[5:])
        assert not any(d.resets.get(c) for c in order[5:])  # stage 2 never started
        failed = (await d.op(o["id"], results="failed"))["results"]
        assert sorted(res["charger_id"] for res in failed) == sorted([offline[0], "ON-0001"])
        stopped = await d.audit("operation.stopped")
        assert len(stopped) == 1 and stopped[0].target == o["id"]


async def test_cancel_skips_the_rest_and_sends_nothing_more(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with desk(tmp_path, sqlite_url) as d:
        ids = await d.chargers(8, "CX-")
        r = await d.create(target={"charger_ids": ids}, stages=[1], rate_per_second=1)
        op_id = r.json()["id"]
        await until(lambda: d.op(op_id), lambda o: o["progress"]["succeeded"] >= 2)
        r = await d.api.post(f"/api/v1/operations/{op_id}/cancel", json={"reason": "wrong site"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled"
        o = await d.ended(op_id)
        sent = sum(d.resets.values())
        assert 2 <= sent < 8 and o["progress"]["skipped"] == 8 - sent
        # its driver is gone (the only place that sends): nothing more can go out
        await until(lambda: op_id not in d.rt.operations._live)
        assert sum(d.resets.values()) == sent
        entry = (await d.audit("operation.cancelled"))[0]
        assert entry.reason == "wrong site" and entry.actor == "bootstrap-admin"
        r = await d.api.post(f"/api/v1/operations/{op_id}/cancel", json={})
        assert r.status_code == 409 and r.json()["field"] == "state"


async def test_a_restart_resumes_without_resending(tmp_path: Path, sqlite_url: str) -> None:
    async with desk(tmp_path, sqlite_url, call_timeout=30.0) as d:
        ids = await d.chargers(4, "RS-", handlers={"RS-0001": {"Reset": never}})
        r = await d.create(target={"charger_ids": ids}, stages=[1], max_failure_rate=1.0)
        op_id = r.json()["id"]
        await until(lambda: d.op(op_id), lambda o: o["progress"]["sent"] == 1)
        assert d.resets == {"RS-0001": 1}
        await d.restart()  # evota goes away while RS-0001's answer is outstanding
        o = await d.ended(op_id)
        assert o["state"] == "completed", o
        by_id = {res["charger_id"]: res for res in o["results"]}
        assert by_id["RS-0001"]["state"] == "failed"
        assert by_id["RS-0001"]["detail"]["reason"] == "interrupted"
        assert all(by_id[c]["state"] == "succeeded" for c in ids[1:])
        assert d.resets == dict.fromkeys(ids, 1)  # the interrupted one was not sent again
        assert len(await d.audit("operation.resumed")) == 1


# -- approval --------------------------------------------------------------------------------


async def test_a_reset_of_fifty_chargers_waits_for_a_second_operator(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with desk(
        tmp_path, sqlite_url, approval_actions=["operation.start"], approval_charger_threshold=10
    ) as d:
        ids = await d.chargers(50, "AP-")
        olga = await d.operator("olga")
        try:
            r = await d.create(target={"charger_ids": ids}, stages=[5], rate_per_second=100)
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["state"] == "awaiting_approval" and body["approval_id"]
            await asyncio.sleep(0.3)
            assert not d.resets  # nothing goes out before the decision
            r = await d.api.post(f"/api/v1/approvals/{body['approval_id']}/approve", json={})
            assert r.status_code == 403  # not by the one who asked
            r = await olga.post(f"/api/v1/approvals/{body['approval_id']}/approve", json={})
            assert r.status_code == 200, r.text
            o = await d.ended(body["id"], timeout=30)
            assert o["state"] == "completed", o
            assert [(s["size"], s["results"]) for s in o["stages"]] == [
                (5, {"succeeded": 5}),
                (45, {"succeeded": 45}),
            ]
            assert d.resets == dict.fromkeys(ids, 1)
            started = await d.audit("operation.started")
            assert [(e.target, e.actor) for e in started] == [(body["id"], "olga")]

            # a rejected request ends the operation without sending anything
            r = await d.create(target={"charger_ids": ids[:11]})
            second = r.json()
            r = await olga.post(f"/api/v1/approvals/{second['approval_id']}/reject", json={})
            assert r.status_code == 200, r.text
            o = await d.op(second["id"])
            assert o["state"] == "rejected" and o["progress"]["skipped"] == 11
            assert d.resets == dict.fromkeys(ids, 1)
            # at or under the threshold no approval is needed
            r = await d.create(target={"charger_ids": ids[:10]})
            assert r.status_code == 201 and r.json()["state"] == "running"
            await d.ended(r.json()["id"])
            # cancelling while it waits withdraws the request: nobody can approve it later
            third = (await d.create(target={"charger_ids": ids[:12]})).json()
            r = await d.api.post(f"/api/v1/operations/{third['id']}/cancel", json={})
            assert r.status_code == 200, r.text
            r = await olga.get(f"/api/v1/approvals/{third['approval_id']}")
            assert r.json()["state"] == "withdrawn"
            r = await olga.post(f"/api/v1/approvals/{third['approval_id']}/approve", json={})
            assert r.status_code == 409 and r.json()["reason"] == "withdrawn"
        finally:
            await olga.aclose()


async def test_an_approval_that_runs_out_ends_the_operation_as_expired(
    tmp_path: Path, sqlite_url: str
) -> None:
    clock = ShiftedClock()
    async with desk(
        tmp_path,
        sqlite_url,
        clock=clock,
        approval_actions=["operation.start"],
        approval_charger_threshold=10,
        approval_ttl_hours=1,
    ) as d:
        ids = await d.chargers(11, "EX-", start=False)
        body = (await d.create(target={"charger_ids": ids})).json()
        assert body["state"] == "awaiting_approval", body
        clock.advance(hours=1, seconds=1)
        await d.rt.approvals.sweep()  # (the runtime's own sweep may get there first)
        o = await until(lambda: d.op(body["id"]), lambda o: o["state"] != "awaiting_approval")
        assert o["state"] == "expired" and o["state_reason"] == "approval expired", o
        assert o["progress"]["skipped"] == 11 and not d.resets
        assert [e.outcome for e in await d.audit("operation.expired")] == ["expired"]


# -- refusals --------------------------------------------------------------------------------


async def test_bad_requests_name_the_field(tmp_path: Path, sqlite_url: str) -> None:
    async with desk(tmp_path, sqlite_url) as d:
        ids = await d.chargers(2, "BAD-", start=False)
        base = {"command": "reset", "params": {}, "target": {"charger_ids": ids}, "reason": "x"}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"reason": DROP}, "reason"),
            ({"reason": "   "}, "reason"),
            ({"target": DROP}, "target"),
            ({"command": "warp"}, "command"),
            ({"params": {"type": "Warm"}}, "params.type"),
            ({"params": {"colour": 1}}, "params.colour"),
            ({"target": {}}, "target"),
            ({"target": {"colour": ["red"]}}, "target.colour"),
            ({"target": {"charger_ids": ["NOPE-1"]}}, "target.charger_ids"),
            ({"target": {"sites": ["nowhere"]}}, "target"),
            ({"stages": [0]}, "stages[0]"),
            ({"max_failure_rate": 2}, "max_failure_rate"),
            ({"rate_per_second": 0}, "rate_per_second"),
        ]
        for change, field_name in cases:
            body = {k: v for k, v in {**base, **change}.items() if v is not DROP}
            r = await d.api.post("/api/v1/operations", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["field"] == field_name, (body, r.json())
        r = await d.api.get("/api/v1/operations/nope")
        assert r.status_code == 404 and r.json()["field"] == "operation_id"
        r = await d.api.post("/api/v1/operations/nope/cancel", json={})
        assert r.status_code == 404
        r = await d.api.get("/api/v1/operations", params={"state": "bogus"})
        assert r.status_code == 422 and r.json()["field"] == "state"
        for state in OperationState:  # every state of the vocabulary is a valid filter
            r = await d.api.get("/api/v1/operations", params={"state": state.value})
            assert r.status_code == 200 and r.json()["total"] == 0, (state, r.text)
        assert not await d.audit("operation.created")  # refusals leave no operation behind


async def test_every_targeted_charger_needs_the_permissions(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with desk(tmp_path, sqlite_url) as d:
        north = await d.chargers(2, "NO-", start=False, site="north")
        south = await d.chargers(2, "SO-", start=False, site="south")
        # nora operates only in the north but reads the whole fleet
        nora = await d.operator("nora", scope=perms.Scope(sites=frozenset({"north"})))
        await d.grant("nora", "viewer")
        try:
            r = await d.create(nora, target={"charger_ids": north + south})
            assert r.status_code == 403, r.text
            assert sorted(r.json()["chargers"]) == sorted(south)
            assert r.json()["permission"] == "operation.write"
            r = await d.create(nora, target={"charger_ids": north})
            assert r.status_code == 201, r.text
            r = await nora.get("/api/v1/operations")
            assert r.status_code == 200 and r.json()["total"] == 1
        finally:
            await nora.aclose()


# -- configuration profiles ------------------------------------------------------------------


async def stored(d: Desk, cid: str) -> dict[str, str | None]:
    async with d.rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ChargerSetting.key, ChargerSetting.value).where(
                    ChargerSetting.charger_id == cid
                )
            )
        ).all()
    return {r.key: r.value for r in rows}


async def config_events(d: Desk, cid: str) -> list[Any]:
    async with d.rt.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(ChargerEvent)
                    .where(ChargerEvent.charger_id == cid, ChargerEvent.kind == "configuration")
                    .order_by(ChargerEvent.id)
                )
            ).all()
        )


async def test_drift_found_after_boot_is_fixed_by_applying_the_profile(
    tmp_path: Path, database_url: str
) -> None:
    async with desk(tmp_path, database_url, config_poll_hours=0.0005) as d:
        profile = {
            "name": "metering",
            "target": {"vendors": ["Evota"]},
            "settings": {
                "MeterValueSampleInterval": "30",  # differs: fixable
                "LocalPreAuthorize": "true",  # known without a value: fixable
                "NumberOfConnectors": "4",  # read-only: cannot fix
                "VendorTurbo": "on",  # unknown to the charger: cannot fix
                "HeartbeatInterval": "300",  # already as desired
            },
        }
        r = await d.api.post("/api/v1/config-profiles", json=profile)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        ids = await d.chargers(4, "CF-")
        # every accepted boot reads the configuration and compares it with the profile
        for cid in ids:
            await until(lambda c=cid: config_events(d, c), lambda ev: bool(ev))
        events = await config_events(d, ids[0])
        assert events[0].status == "drift"
        assert {x["key"] for x in events[0].data["drift"]} == {
            "MeterValueSampleInterval",
            "LocalPreAuthorize",
            "NumberOfConnectors",
            "VendorTurbo",
        }
        r = await d.api.get(f"/api/v1/config-profiles/{pid}/drift")
        assert r.status_code == 200, r.text
        drift = r.json()
        assert (drift["chargers"], drift["drifted"], drift["fixable"]) == (4, 4, 4)
        assert drift["by_kind"] == {"differs": 4, "missing": 4, "unknown_key": 4, "readonly": 4}
        one = {x["key"]: x for x in drift["rows"] if x["charger_id"] == ids[0]}
        assert one["MeterValueSampleInterval"]["actual"] == "60"
        assert not one["NumberOfConnectors"]["fixable"]

        r = await d.api.post(f"/api/v1/config-profiles/{pid}/apply", json={"reason": "metering"})
        assert r.status_code == 201, r.text
        applied = r.json()
        assert applied["command"] == "apply-config-profile" and applied["profile_id"] == pid
        o = await d.ended(applied["id"])
        assert o["state"] == "completed", o
        assert all(res["status"] == "Accepted" for res in o["results"])
        assert o["results"][0]["detail"]["changed"] == {
            "MeterValueSampleInterval": "Accepted",
            "LocalPreAuthorize": "Accepted",
        }
        for cid in ids:
            assert d.configs[cid]["MeterValueSampleInterval"] == ("30", False)
            assert (await stored(d, cid))["LocalPreAuthorize"] == "true"  # refreshed after
        drift = (await d.api.get(f"/api/v1/config-profiles/{pid}/drift")).json()
        assert drift["fixable"] == 0
        assert drift["by_kind"] == {"differs": 0, "missing": 0, "unknown_key": 4, "readonly": 4}
        changes = await d.audit("command.change-configuration")
        assert len(changes) == 8 and {e.request_id for e in changes} == {f"operation:{o['id']}"}
        r = await d.api.post(f"/api/v1/config-profiles/{pid}/apply", json={"reason": "again"})
        assert r.status_code == 409  # nothing left that can be fixed

        # someone changes a charger locally: the scheduled poll notices
        d.configs[ids[1]]["MeterValueSampleInterval"] = ("15", False)
        await until(
            lambda: d.api.get(f"/api/v1/config-profiles/{pid}/drift"),
            lambda resp: resp.json()["fixable"] == 1,
            timeout=15,
        )


async def test_profile_crud_and_refusals(tmp_path: Path, sqlite_url: str) -> None:
    async with desk(tmp_path, sqlite_url) as d:
        ids = await d.chargers(1, "PF-", start=False)
        base = {"name": "p", "target": {"charger_ids": ids}, "settings": {"A": "1"}}
        for body, field_name in [
            ({**base, "settings": {}}, "settings"),
            ({**base, "settings": {"A": 1}}, "settings.A"),
            ({**base, "settings": {"AuthorizationKey": "x"}}, "settings.AuthorizationKey"),
            ({**base, "target": {}}, "target"),
            ({**base, "target": {"model": ["x"]}}, "target.model"),
            ({k: v for k, v in base.items() if k != "settings"}, "settings"),
        ]:
            r = await d.api.post("/api/v1/config-profiles", json=body)
            assert r.status_code == 422 and r.json()["field"] == field_name, (body, r.text)
        r = await d.api.post("/api/v1/config-profiles", json=base)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        assert (await d.api.post("/api/v1/config-profiles", json=base)).status_code == 409
        r = await d.api.patch(f"/api/v1/config-profiles/{pid}", json={"settings": {"B": "2"}})
        assert r.status_code == 200 and r.json()["settings"] == {"B": "2"}
        r = await d.api.get(f"/api/v1/config-profiles/{pid}/drift")
        assert r.json()["not_fetched"] == 1 and r.json()["rows"] == []
        r = await d.api.post(f"/api/v1/config-profiles/{pid}/apply", json={})
        assert r.status_code == 422 and r.json()["field"] == "reason"
        r = await d.api.post(f"/api/v1/config-profiles/{pid}/apply", json={"reason": "x"})
        assert r.status_code == 409  # never fetched: nothing known to fix
        assert (await d.api.get("/api/v1/config-profiles")).json()["total"] == 1
        assert (await d.api.delete(f"/api/v1/config-profiles/{pid}")).status_code == 204
        assert (await d.api.get(f"/api/v1/config-profiles/{pid}")).status_code == 404
        actions = [e.action for e in await d.audit() if e.action.startswith("config_profile.")]
        assert actions == [
            "config_profile.created",
            "config_profile.updated",
            "config_profile.deleted",
        ]


# -- the CLI ---------------------------------------------------------------------------------


async def test_cli_operations_and_profiles(tmp_path: Path, sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from evota.cli import app

    cli = CliRunner()
    async with desk(tmp_path, sqlite_url) as d:
        env = {"EVOTA_URL": f"http://127.0.0.1:{d.rt.http_port}", "EVOTA_TOKEN": TOKEN}

        async def run(*args: str) -> Any:
            return await asyncio.to_thread(cli.invoke, app, list(args), env=env)

        ids = await d.chargers(3, "CLI-")
        r = await run(
            "operation", "create", "reset", "--param", "type=Hard", "--reason", "stuck",
            *[x for cid in ids for x in ("--charger", cid)], "--stage", "1", "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        created = json.loads(r.stdout)
        assert created["params"] == {"type": "Hard"} and created["stage_sizes"] == [1, 2]
        await d.ended(created["id"])
        r = await run("operation", "watch", created["id"], "--interval", "0.2")
        assert r.exit_code == 0 and '"completed"' in r.stdout, r.output
        r = await run("operation", "list")
        assert r.exit_code == 0 and created["id"] in r.stdout
        r = await run("operation", "show", created["id"], "--results", "succeeded")
        assert r.exit_code == 0 and all(cid in r.stdout for cid in ids), r.output
        r = await run("operation", "cancel", created["id"])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "409" in r.output
        r = await run("operation", "create", "reset", "--charger", ids[0])
        assert r.exit_code == 1 and "--reason" in r.output
        r = await run(
            "operation", "create", "reset", "--param", "type:=3", "--charger", ids[0],
            "--reason", "x",
        )  # fmt: skip
        assert r.exit_code == 1 and "params.type" in r.output, r.output

        r = await run(
            "profile", "create", "hb", "--set", "HeartbeatInterval=120", "--vendor", "Evota"
        )
        assert r.exit_code == 0, r.output
        r = await run("profile", "list")
        assert r.exit_code == 0 and "hb" in r.stdout
        r = await run("profile", "show", "hb")
        assert r.exit_code == 0 and "HeartbeatInterval" in r.stdout
        await until(lambda: stored(d, ids[0]), lambda cfg: bool(cfg))
        r = await run("profile", "drift", "hb", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["fixable"] >= 1, r.output
        r = await run("profile", "apply", "hb", "--reason", "tune", "--json")
        assert r.exit_code == 0, r.output
        await d.ended(json.loads(r.stdout)["id"])
        r = await run("profile", "drift", "hb")
        assert r.exit_code == 0 and "0 fixable" in r.stdout, r.output
        r = await run("profile", "show", "nope")
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
