"""The playbook engine end to end: simulated chargers with connector faults, a real evota,
playbooks stored as operators store them, time moved by the injected clock (a fault's ten
minutes take none), and every guard rail shown to hold — each test fails if its guard goes.

``faulted_connectors`` report Faulted until the charger reboots (a Reset heals them);
``stuck_connectors`` stay Faulted whatever is done remotely (a hardware fault)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from sqlalchemy import select

from evota.playbooks import spec, store
from evota.playbooks.runner import QUEUE_MAX
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import FaultProfile
from evota.store.models import Alert, AuditEntry, ConnectorStatus, PlaybookRun
from evota.store.models import Playbook as PlaybookRow
from tests.conftest import TOKEN, Keys, ShiftedClock, api_client, session_for, start_runtime
from tests.sim.conftest import fast
from tests.support import free_port, until
from tests.test_firmware_update import Bench, trust, upload

STEPS: list[dict[str, Any]] = [
    {
        "command": "reset",
        "params": {"type": "Soft"},
        "wait": {"until": "connector_available", "minutes": 5},
    },
    {
        "command": "reset",
        "params": {"type": "Hard"},
        "wait": {"until": "connector_available", "minutes": 5},
    },
    {"escalate": {"alert": True, "message": "connector still Faulted after two resets"}},
]


@dataclass
class World:
    rt: Runtime
    clock: ShiftedClock
    fleets: list[Fleet] = field(default_factory=list)

    async def chargers(
        self, prefix: str, count: int = 1, *, faults: list[str], site_id: str | None = None
    ) -> list[SimulatedCharger]:
        fleet_spec = fleet_from_flags(
            count, prefix=prefix, seed="pb", faults=faults, site_id=site_id
        )
        fleet = Fleet.from_spec(
            fleet_spec, f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp", config=fast(speed=600.0)
        )
        await fleet.provision(f"http://127.0.0.1:{self.rt.http_port}", TOKEN)
        self.fleets.append(fleet)
        await fleet.start()
        await fleet.wait_until(lambda f: all(c.accepted for c in f), 15)
        return list(fleet)

    async def playbook(self, name: str = "stuck", **extra: Any) -> spec.Playbook:
        doc: dict[str, Any] = {
            "name": name,
            "enabled": True,
            "trigger": {
                "kind": "connector_faulted",
                "error_codes": ["InternalError"],
                "for_minutes": 10,
            },
            "steps": STEPS,
        }
        doc.update(extra)
        parsed = spec.parse(doc, allow_http_webhooks=True)  # the test's receiver is http
        _, stored = await store.put(self.rt.engine, parsed, actor="test", now=self.clock.now())
        await self.rt.playbooks.reload()
        return stored.playbook

    async def faulted(self, *chargers: SimulatedCharger, connector: int = 1) -> None:
        """Until the engine has heard the connectors' faults (then time may move)."""
        for c in chargers:
            await until(
                lambda c=c: self.rt.playbooks.facts(c.identity),
                lambda f: (
                    f is not None
                    and connector in f.connectors
                    and f.connectors[connector].status == "Faulted"
                ),
            )

    async def reported(self, *chargers: SimulatedCharger) -> None:
        """Until the engine has heard every connector's status after the boot: a status a
        test sends before that can be overtaken by the simulator's own post-boot one."""
        for c in chargers:
            await until(
                lambda c=c: self.rt.playbooks.facts(c.identity),
                lambda f, c=c: f is not None and set(c.connector_status) <= set(f.connectors),
            )

    async def ticks(self, n: int = 2) -> None:
        """Until the engine has looked ``n`` more times (to show it did nothing)."""
        first = self.rt.playbooks.ticks
        await until(lambda: self.rt.playbooks.ticks, lambda t: t >= first + n)

    async def runs(self, **where: Any) -> list[Any]:
        query = select(PlaybookRun).order_by(PlaybookRun.started_at, PlaybookRun.id)
        for k, v in where.items():
            query = query.where(getattr(PlaybookRun, k) == v)
        async with self.rt.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def commands(self, action: str = "command.reset") -> list[Any]:
        async with self.rt.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(AuditEntry)
                        .where(AuditEntry.action == action)
                        .order_by(AuditEntry.id)
                    )
                ).all()
            )

    async def stored_status(self, charger_id: str, connector: int) -> str | None:
        """The latest status the writer stored (what the daily rollup reads)."""
        async with self.rt.engine.connect() as conn:
            return (
                await conn.execute(
                    select(ConnectorStatus.status)
                    .where(
                        ConnectorStatus.charger_id == charger_id,
                        ConnectorStatus.connector_id == connector,
                    )
                    .order_by(ConnectorStatus.id.desc())
                    .limit(1)
                )
            ).scalar()

    async def alerts(self, rule: str) -> list[Any]:
        async with self.rt.engine.connect() as conn:
            return list((await conn.execute(select(Alert).where(Alert.rule == rule))).all())


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> AsyncIterator[World]:
    """evota with a fast engine tick; settings overridden by an indirect parameter."""
    clock = ShiftedClock()
    overrides = getattr(request, "param", {})
    rt = await start_runtime(
        tmp_path, database_url, clock=clock, playbook_tick_seconds=0.05, **overrides
    )
    w = World(rt, clock)
    try:
        yield w
    finally:
        for fleet in w.fleets:
            await fleet.stop()
        await rt.stop()


async def test_a_stuck_connector_is_healed_by_a_soft_reset(world: World) -> None:
    w = world
    await w.playbook()
    [charger] = await w.chargers("HEAL-", faults=["faulted_connectors=1"])
    await w.faulted(charger)

    w.clock.advance(minutes=9)  # not yet ten minutes Faulted: nothing happens
    await w.ticks()
    assert await w.runs() == []

    w.clock.advance(minutes=2)
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "resolved")
    assert (run.playbook, run.playbook_version, run.outcome) == ("stuck", 1, "resolved")
    assert (run.charger_id, run.connector_id, run.fault_key) == (
        charger.identity,
        1,
        "connector_faulted:1",
    )
    assert charger.connector_status[1] == "Available"
    [reset] = await w.commands()
    assert reset.actor == "playbook:stuck@1" and reset.outcome == "Accepted"
    assert reset.request_id == f"playbook-run:{run.id}"
    assert "connector 1 Faulted (InternalError)" in reset.reason
    assert reset.detail["params"] == {"type": "Soft"}
    events = [e["event"] for e in run.log]
    assert events == ["triggered", "sending", "sent", "met"], events
    [ended] = await w.commands("playbook.run")
    assert ended.actor == "playbook:stuck@1" and ended.outcome == "resolved"

    # The remote-resolution analytics count the reset under the playbook's name.
    async with api_client(w.rt) as api:
        body = (await api.get("/api/v1/analytics/resolution", params={"group_by": "source"})).json()
    assert [(r["key"], r["actions"]) for r in body["rows"]] == [("playbook:stuck@1", 1)]


async def test_a_charger_that_stays_faulted_escalates_after_the_hard_reset(world: World) -> None:
    w = world
    await w.playbook()
    [charger] = await w.chargers("STUCK-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1 and rs[0].step_index == 0)
    w.clock.advance(minutes=6)  # the soft reset did not help: the hard one follows
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1 and rs[0].step_index == 1)
    assert await w.alerts("playbook_escalation") == []
    w.clock.advance(minutes=6)
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
    assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft", "Hard"]
    [alert] = await w.alerts("playbook_escalation")
    assert alert.subject == charger.identity
    assert alert.message == "connector still Faulted after two resets"
    assert alert.detail["run_id"] == run.id and alert.detail["playbook"] == "stuck"
    assert charger.connector_status[1] == "Faulted"


async def test_a_fleet_wide_fault_trips_the_circuit_breaker(world: World) -> None:
    """Six chargers fault at once; the playbook allows 3 triggers an hour: three resets go
    out, the fourth trigger suspends the playbook, and no reset follows, ever."""
    w = world
    await w.playbook(guards={"breaker_triggers_per_hour": 3, "max_concurrent": 10})
    chargers = await w.chargers("STORM-", 6, faults=["faulted_connectors=1"])
    await w.faulted(*chargers)
    w.clock.advance(minutes=11)
    await until(lambda: w.alerts("playbook_suspended"), lambda a: len(a) == 1)
    async with w.rt.engine.connect() as conn:
        row = (await conn.execute(select(PlaybookRow).where(PlaybookRow.name == "stuck"))).one()
    assert row.suspended_reason and "circuit breaker" in row.suspended_reason
    assert "stuck" not in w.rt.playbooks.playbooks
    await until(lambda: w.runs(), lambda rs: len(rs) == 3 and all(r.state != "running" for r in rs))
    w.clock.advance(minutes=30)
    await w.ticks(3)
    assert len(await w.commands()) == 3
    assert len(await w.runs()) == 3
    faulted = [c for c in chargers if c.connector_status[1] == "Faulted"]
    assert len(faulted) == 3  # left for people: the alert says why


async def test_a_charger_in_a_session_is_never_touched(world: World) -> None:
    w = world
    await w.playbook()
    [charger] = await w.chargers("BUSY-", faults=["faulted_connectors=1"])
    await w.faulted(charger)
    session = charger.begin_session(2, "TAG-1", duration=24 * 3600.0)
    await until(
        lambda: w.rt.playbooks.facts(charger.identity),
        lambda f: f is not None and 2 in f.connectors and f.connectors[2].status == "Charging",
    )
    w.clock.advance(minutes=30)
    await w.ticks(3)
    assert await w.runs() == [] and await w.commands() == []
    # The driver ends the session: then the fault gets its reset.
    txn = charger.transactions[2]
    txn.stop_requested = "Local"
    txn.wake.set()
    assert await session
    await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "resolved")


async def test_dry_run_sends_nothing_and_records_what_it_would_have_done(world: World) -> None:
    w = world
    await w.playbook(dry_run=True)
    [charger] = await w.chargers("DRY-", faults=["faulted_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "dry_run")
    assert run.dry_run and run.outcome == "dry_run"
    would = [e["detail"] for e in run.log if e["event"] == "would"]
    assert would == [
        'step 0: would send reset {"type": "Soft"}',
        "step 0: would wait up to 5 min for connector_available",
        'step 1: would send reset {"type": "Hard"}',
        "step 1: would wait up to 5 min for connector_available",
        "step 2: would escalate (alert)",
    ]
    await w.ticks(3)
    assert await w.commands() == [] and await w.alerts("playbook_escalation") == []
    assert charger.connector_status[1] == "Faulted"
    assert len(await w.runs()) == 1  # one record per fault episode, not one per tick


async def test_a_fault_that_outlasts_a_reconnect_is_still_one_episode(world: World) -> None:
    """The charger is away while the engine looks (a reboot, a network drop) and comes back
    with the same fault: one run, not a second one once the first has ended (found on a busy
    CI run: the playbook's own reset made the charger reboot across a tick)."""
    w = world
    steps = [
        {
            "command": "unlock-connector",
            "params": {"connector_id": "{connector}"},
            "wait": {"until": "connector_available", "minutes": 30},
        },
        {"escalate": {"alert": True}},
    ]
    await w.playbook(steps=steps)
    [charger] = await w.chargers("AWAY-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
    await charger.stop()  # away while the engine looks
    await until(lambda: w.rt.playbooks.facts(charger.identity), lambda f: not f.connected)
    await w.ticks(2)
    charger.start()  # back, and still Faulted
    await until(lambda: w.rt.playbooks.facts(charger.identity), lambda f: f.connected)
    await w.faulted(charger)
    await w.ticks(2)
    w.clock.advance(minutes=31)  # the run escalates; the fault goes on
    await until(lambda: w.runs(), lambda rs: rs[0].state == "escalated")
    await w.ticks(3)
    assert len(await w.runs()) == 1
    assert len(await w.commands("command.unlock-connector")) == 1


async def test_per_site_concurrency_and_the_daily_cap(world: World) -> None:
    """Two stuck chargers at one site, one run at a time there: the second waits for the
    first to end. Then a fault that comes back the same day is refused (1 run a day)."""
    w = world
    async with api_client(w.rt) as api:
        site = {"id": "depot", "name": "Depot", "timezone": "Europe/Berlin"}
        assert (await api.post("/api/v1/sites", json=site)).status_code == 201
    one_step = [
        {
            "command": "reset",
            "params": {"type": "Soft"},
            "wait": {"until": "connector_available", "minutes": 30},
        },
        {"escalate": {"alert": True}},
    ]
    await w.playbook(
        steps=one_step, guards={"max_concurrent_per_site": 1, "max_runs_per_charger_per_day": 1}
    )
    a, b = await w.chargers("SITE-", 2, faults=["stuck_connectors=1"], site_id="depot")
    await w.faulted(a, b)
    w.clock.advance(minutes=11)
    [first] = await until(lambda: w.runs(), lambda rs: len(rs) == 1 and rs[0].state == "waiting")
    await w.ticks(3)
    assert len(await w.runs()) == 1 and len(await w.commands()) == 1
    w.clock.advance(minutes=31)  # the first run escalates; the second charger's turn
    runs = await until(lambda: w.runs(), lambda rs: len(rs) == 2 and rs[1].state == "waiting")
    assert runs[0].id == first.id and runs[0].state == "escalated"
    assert {r.charger_id for r in runs} == {a.identity, b.identity}

    # The first charger's fault clears and comes back: a second run today is refused.
    await a.send_status(1, "Available")
    await a.send_status(1, "Faulted", "InternalError")
    await until(
        lambda: w.rt.playbooks.facts(a.identity),
        lambda f: f is not None and f.connectors[1].since > first.started_at,
    )
    w.clock.advance(minutes=11)
    refused = await until(lambda: w.runs(state="refused"), lambda rs: len(rs) == 1)
    assert refused[0].charger_id == a.identity and refused[0].reason == "daily_cap"
    assert len(await w.commands()) == 2


async def test_the_kill_switch_stops_everything(world: World) -> None:
    w = world
    await w.playbook()
    [charger] = await w.chargers("KILL-", faults=["faulted_connectors=1"])
    await w.faulted(charger)
    w.rt.playbooks.kill_switch = True
    w.clock.advance(minutes=11)
    await w.ticks(3)
    assert await w.runs() == [] and await w.commands() == []
    w.rt.playbooks.kill_switch = False
    await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "resolved")


APPROVALS = pytest.mark.parametrize(
    "world", [{"approval_actions": ["playbook.step"]}], indirect=True
)


@APPROVALS
async def test_a_hard_reset_waits_for_a_second_operator(world: World) -> None:
    """With playbook.step guarded, the soft reset goes out by itself (it is what playbooks
    are for) and the hard reset waits for an approval, then goes out as the playbook."""
    w = world
    await w.playbook()
    [charger] = await w.chargers("APPR-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
    w.clock.advance(minutes=6)
    [run] = await until(lambda: w.runs(state="awaiting_approval"), lambda rs: len(rs) == 1)
    assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft"]
    async with api_client(w.rt) as api:
        request = (await api.get(f"/api/v1/approvals/{run.approval_id}")).json()
        assert (
            request["action"] == "playbook.step" and request["requested_by"] == "playbook:stuck@1"
        )
        assert request["payload"]["command"] == "reset"
    # An operator whose scope does not cover the charger neither sees nor decides it.
    outsider = await session_for(w.rt, "elsewhere-op", ["operator"], sites=["elsewhere"])
    async with api_client(w.rt, outsider) as other:
        assert (await other.get(f"/api/v1/approvals/{run.approval_id}")).status_code == 404
        refused = await other.post(f"/api/v1/approvals/{run.approval_id}/approve", json={})
        assert refused.status_code in (403, 404), refused.text
    async with api_client(w.rt) as api:
        approved = await api.post(f"/api/v1/approvals/{run.approval_id}/approve", json={})
        assert approved.status_code == 200, approved.text
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1 and rs[0].step_index == 1)
    hard = (await w.commands())[-1]
    assert hard.detail["params"] == {"type": "Hard"} and hard.actor == "playbook:stuck@1"
    assert "approved by" in hard.reason


@APPROVALS
async def test_a_playbook_that_refuses_guarded_steps_ends_refused(world: World) -> None:
    w = world
    await w.playbook(guards={"approval": "refuse"})
    [charger] = await w.chargers("REFU-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
    w.clock.advance(minutes=6)
    [run] = await until(lambda: w.runs(state="refused"), lambda rs: len(rs) == 1)
    assert "needs approval" in run.reason
    assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft"]


async def test_only_inside_the_sites_allowed_hours(world: World) -> None:
    """A site's allowed hours (the site API, checked naming the field) keep playbooks off
    its chargers outside them; clearing them lets the waiting fault get its reset."""
    w = world
    closed_day = (w.clock.now().weekday() + 3) % 7  # a window on another day only
    hours = [{"days": [closed_day], "start": "00:00", "end": "00:00"}]
    async with api_client(w.rt) as api:
        bad = await api.post(
            "/api/v1/sites",
            json={
                "id": "night",
                "name": "N",
                "allowed_hours": [{"days": ["mon"], "start": "25:00", "end": "05:00"}],
            },
        )
        assert bad.status_code == 422 and "allowed_hours[0].start" in bad.text, bad.text
        made = await api.post(
            "/api/v1/sites", json={"id": "night", "name": "Night", "allowed_hours": hours}
        )
        assert made.status_code == 201, made.text
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[closed_day]
        assert made.json()["allowed_hours"] == [{"days": [day], "start": "00:00", "end": "00:00"}]
    await w.playbook()
    [charger] = await w.chargers("HOURS-", faults=["faulted_connectors=1"], site_id="night")
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await w.ticks(3)
    assert await w.runs() == [] and await w.commands() == []
    async with api_client(w.rt) as api:
        cleared = await api.patch("/api/v1/sites/night", json={"allowed_hours": None})
        assert cleared.status_code == 200 and cleared.json()["allowed_hours"] is None
    await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "resolved")


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """A ticketing system's webhook on loopback: it records each POST and answers with a
    redirect (which evota must not follow)."""
    got: list[tuple[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append((self.path, json.loads(body)))
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


_LOOPBACK_HOOKS = {
    "playbook_webhook_allow_http": True,
    "playbook_webhook_allow_networks": ["127.0.0.0/8"],
}


@pytest.mark.parametrize("world", [_LOOPBACK_HOOKS], indirect=True)
async def test_an_escalation_calls_the_webhook_once_without_following_redirects(
    world: World, receiver: tuple[str, list[tuple[str, Any]]]
) -> None:
    w = world
    url, got = receiver
    await w.playbook(steps=[{"escalate": {"alert": False, "webhook_url": url, "message": "truck"}}])
    [charger] = await w.chargers("HOOK-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
    await until(lambda: list(got), lambda g: len(g) == 1)
    await w.ticks(3)
    [(path, body)] = got  # the 307 was not followed to /elsewhere
    assert path == "/hook"
    assert body["run_id"] == run.id and body["charger_id"] == charger.identity
    assert body["message"] == "truck" and body["playbook"] == "stuck"
    assert await w.alerts("playbook_escalation") == []  # alert: false


@pytest.mark.parametrize("world", [{"playbook_webhook_allow_http": True}], indirect=True)
async def test_a_webhook_to_a_loopback_address_is_not_sent_without_the_allowance(
    world: World, receiver: tuple[str, list[tuple[str, Any]]]
) -> None:
    """An operator who may write playbooks must not make evota call services on its own
    network: the webhook's host is resolved once and a loopback, private or link-local
    address is refused (EVOTA_PLAYBOOK_WEBHOOK_ALLOW_NETWORKS opens one); the alert stays."""
    w = world
    url, got = receiver
    await w.playbook(steps=[{"escalate": {"webhook_url": url, "message": "truck"}}])
    [charger] = await w.chargers("SSRF-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    with structlog.testing.capture_logs() as logs:
        w.clock.advance(minutes=11)
        await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
        await until(lambda: w.alerts("playbook_escalation"), lambda a: len(a) == 1)
        [refused] = await until(
            lambda: _events(logs, "escalation webhook not sent"), lambda e: len(e) == 1
        )
    assert refused["problem"] == "address" and got == []


async def _events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == event]


async def test_bad_input_never_kills_the_engine(world: World) -> None:
    """Observations the engine cannot use and a flood beyond its queue are dropped, counted
    and bounded; the engine goes on healing."""
    w = world
    engine = w.rt.playbooks
    engine.charger_event("NOBODY", "status", 1, "Faulted", "InternalError")  # unknown charger
    engine.charger_event("NOBODY", "no-such-kind", 7, None, None)
    engine.charger_event("X" * 10_000, "status", 2**31, "\u0000" * 100, "\ud800")
    for i in range(QUEUE_MAX + 500):
        engine.charger_event(f"FLOOD-{i % 50}", "heartbeat", 0, None, None)  # not observed
        engine.charger_event(f"FLOOD-{i % 50}", "status", 1, "Available", "NoError")
    assert engine.dropped >= 500 and engine._queue.qsize() <= QUEUE_MAX
    await w.playbook()
    [charger] = await w.chargers("ALIVE-", faults=["faulted_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "resolved", timeout=30)
    assert w.rt.playbooks._task is not None and not w.rt.playbooks._task.done()


async def test_a_waiting_run_survives_a_restart(tmp_path: Path, database_url: str) -> None:
    clock = ShiftedClock()
    settings = {"playbook_tick_seconds": 0.05, "ocpp_port": free_port()}
    w = World(await start_runtime(tmp_path, database_url, clock=clock, **settings), clock)
    try:
        await w.playbook()
        [charger] = await w.chargers("RST-", faults=["stuck_connectors=1"])
        await w.faulted(charger)
        clock.advance(minutes=11)
        [run] = await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
        await w.rt.stop()
        w.rt = await start_runtime(tmp_path, database_url, clock=clock, **settings)
        assert w.rt.playbooks.runs[run.id].wait_until == run.wait_until  # resumed, not lost
        await until(lambda: charger.accepted and w.rt.playbooks.facts(charger.identity))
        clock.advance(minutes=6)  # its deadline passes after the restart: the next step
        await until(
            lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1 and rs[0].step_index == 1
        )
        assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft", "Hard"]
    finally:
        for fleet in w.fleets:
            await fleet.stop()
        await w.rt.stop()


async def test_a_stuck_firmware_job_is_escalated_once(
    tmp_path: Path, database_url: str, keys: Keys
) -> None:
    """job_stuck: a charger that accepted an update and then went silent; ten minutes in
    one state raise the alert, once for that job and state."""
    clock = ShiftedClock()
    rt = await start_runtime(tmp_path, database_url, clock=clock, playbook_tick_seconds=0.05)
    b, w = Bench(rt, api_client(rt), keys, tmp_path), World(rt, clock)
    try:
        await trust(b.api, keys)
        fw = await upload(b.api, tmp_path, keys, "2.0.0")
        silent = await b.charger("SIL-0001", faults=FaultProfile(silent=1.0))
        await w.playbook(
            "job-stuck",
            trigger={"kind": "job_stuck", "for_minutes": 10},
            steps=[{"escalate": {"message": "firmware job stuck"}}],
        )
        job_id = (await b.update(silent.identity, fw["id"])).json()["job_id"]
        await until(lambda: b.job(job_id), lambda j: j["state"] == "accepted")
        await w.ticks(3)
        assert await w.runs() == []
        clock.advance(minutes=11)
        [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
        assert (run.charger_id, run.fault_key) == (silent.identity, f"job_stuck:{job_id}")
        assert run.trigger["reason"].startswith(f"firmware job {job_id} accepted since")
        [alert] = await w.alerts("playbook_escalation")
        assert alert.message == "firmware job stuck" and alert.subject == silent.identity
        await w.ticks(3)
        assert len(await w.runs()) == 1
    finally:
        await b.close()
        await b.api.aclose()
        await rt.stop()


async def test_a_kpi_over_its_threshold_yesterday_is_escalated_once(world: World) -> None:
    """kpi_threshold: after the daily rollup, a charger whose connector faulted yesterday
    (faults above 0) gets its run, one that did not gets none; another rollup of the same
    day adds nothing."""
    w = world
    await w.playbook(
        "faulty-yesterday",
        trigger={"kind": "kpi_threshold", "kpi": "faults", "above": 0},
        steps=[{"escalate": {"message": "faults yesterday"}}],
    )
    bad, good = await w.chargers("KPI-", 2, faults=[])
    await w.reported(bad, good)  # the post-boot Available of connector 1 cannot come after
    await bad.send_status(1, "Faulted", "GroundFailure")  # a fault today, none on the other
    await w.faulted(bad)
    await until(lambda: w.stored_status(bad.identity, 1), lambda s: s == "Faulted")
    now = w.clock.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    w.clock.advance(seconds=(midnight - now).total_seconds() + 11 * 60)  # today is complete
    await w.rt.kpi_rollup.run()
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
    assert run.charger_id == bad.identity and run.fault_key.startswith("kpi_threshold:faults:")
    assert run.trigger["reason"] == f"faults 1 above 0 on {now.date()}"
    await w.rt.kpi_rollup.run()
    await w.ticks(3)
    assert [r.charger_id for r in await w.runs()] == [bad.identity]


async def test_the_kill_switch_during_a_run_stops_its_next_command(world: World) -> None:
    """A run waits after its soft reset when the kill switch goes on: at its deadline it
    ends suspended instead of sending the hard reset."""
    w = world
    await w.playbook()
    [charger] = await w.chargers("MID-", faults=["stuck_connectors=1"])
    await w.faulted(charger)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
    w.rt.playbooks.kill_switch = True
    w.clock.advance(minutes=6)
    [run] = await until(lambda: w.runs(state="suspended"), lambda rs: len(rs) == 1)
    assert run.reason == "kill_switch"
    assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft"]


async def test_a_session_that_starts_during_a_run_refuses_its_next_command(world: World) -> None:
    w = world
    await w.playbook()
    [busy] = await w.chargers("SES-", faults=["stuck_connectors=1"])
    await w.faulted(busy)
    connects = busy.stats.connects
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 1)
    # the run's soft reset reboots the charger: a session begins once it is back (before,
    # a busy run began it while the charger was reconnecting: NotConnected)
    await until(lambda: busy.stats.connects > connects and busy.accepted, timeout=15)
    busy.begin_session(2, "TAG-1", duration=24 * 3600.0)
    await until(
        lambda: w.rt.playbooks.facts(busy.identity),
        lambda f: f is not None and 2 in f.connectors and f.connectors[2].status == "Charging",
    )
    w.clock.advance(minutes=6)
    [run] = await until(lambda: w.runs(state="refused"), lambda rs: len(rs) == 1)
    assert run.reason == "in_session"
    assert [c.detail["params"]["type"] for c in await w.commands()] == ["Soft"]


async def test_a_playbook_whose_runs_keep_failing_is_suspended(world: World) -> None:
    """Failure-rate breaker: two runs in a row do not resolve their fault (escalated); the
    next fault finds the playbook suspended and gets no reset."""
    w = world
    one_step = [
        {
            "command": "reset",
            "params": {"type": "Soft"},
            "wait": {"until": "connector_available", "minutes": 5},
        }
    ]
    await w.playbook(steps=one_step, guards={"breaker_min_runs": 2, "breaker_failure_rate": 0.5})
    first = await w.chargers("FAIL-", 2, faults=["stuck_connectors=1"])
    await w.faulted(*first)
    w.clock.advance(minutes=11)
    await until(lambda: w.runs(state="waiting"), lambda rs: len(rs) == 2)
    w.clock.advance(minutes=6)
    await until(lambda: w.runs(state="escalated"), lambda rs: len(rs) == 2)
    [late] = await w.chargers("LATE-", faults=["faulted_connectors=1"])
    await w.faulted(late)
    w.clock.advance(minutes=11)
    [alert] = await until(lambda: w.alerts("playbook_suspended"), lambda a: len(a) == 1)
    assert "did not resolve" in alert.message
    await w.ticks(3)
    assert len(await w.commands()) == 2 and len(await w.runs()) == 2


async def test_a_boot_loop_raises_one_alert(world: World) -> None:
    """repeated_boots (the shipped default's trigger): the third boot within the hour
    escalates; a fourth one in the same storm does not start another run."""
    w = world
    await w.playbook(
        "boot-loop",
        trigger={"kind": "repeated_boots", "count": 3, "within_minutes": 60},
        steps=[{"escalate": {"message": "boot loop"}}],
    )
    [charger] = await w.chargers("LOOP-", faults=[])
    for _ in range(3):  # the first boot was the one the fleet started with
        boots = charger.stats.boots_accepted
        await charger.reboot(hard=True, reason="PowerUp")
        await until(lambda b=boots: charger.stats.boots_accepted > b and charger.accepted)
    [run] = await until(lambda: w.runs(), lambda rs: rs and rs[0].state == "escalated")
    assert run.fault_key == "repeated_boots" and run.trigger["kind"] == "repeated_boots"
    [alert] = await w.alerts("playbook_escalation")
    assert alert.message == "boot loop"
    await w.ticks(3)
    assert len(await w.runs()) == 1
