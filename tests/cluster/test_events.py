"""Charger events and live updates across nodes (evota.cluster.events, evota.cluster.live).

Two in-process nodes (two Runtimes on one PostgreSQL and one Redis, each with its own copy of
the data directory's keys): node A leads (it runs the runners), a charger is connected to
node B. What the charger says on B must reach A's job runner, playbook engine and alert
monitor; what A's campaign runner keeps in memory must reach B's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection

from evota.audit import security_events
from evota.audit.log import Actor
from evota.cluster.envelope import Seal
from evota.cluster.events import GROUP, STREAM, EventRelay, Limits, decode, encode, take
from evota.cluster.leader import PgLeader
from evota.cluster.live import LiveBus
from evota.cluster.node import Node
from evota.fleet.security_profiles import Channel
from evota.gateway.server import Gateway
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.store.models import Alert, PlaybookRun

from ..cluster.harness import pg_database  # noqa: F401
from ..conftest import TOKEN, api_client, connect, provision, start_runtime
from ..sim.conftest import fast
from ..support import until
from ..test_firmware_update import FAST_JOBS, MODEL, VENDOR, allow_unsigned, upload

KEY = "cluster-events-key-0001"


@pytest.fixture
def pg_url(pg_database: str) -> str:  # noqa: F811
    """Several nodes share PostgreSQL (a fresh database per test)."""
    return pg_database


class RawCharger:
    """An OCPP 1.6 charger speaking raw frames over a real socket: it says exactly what a
    test needs, when it needs it, and answers any CALL from evota with an empty result."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    async def call(self, action: str, payload: dict[str, Any]) -> Any:
        uid = str(next(self._ids))
        answer = asyncio.get_running_loop().create_future()
        self._waiting[uid] = answer
        await self.ws.send(json.dumps([2, uid, action, payload]))
        return await asyncio.wait_for(answer, 10)

    async def boot(self, version: str = "1.0.0") -> None:
        reply = await self.call(
            "BootNotification",
            {"chargePointVendor": VENDOR, "chargePointModel": MODEL, "firmwareVersion": version},
        )
        assert reply["status"] == "Accepted", reply

    async def status(self, status: str, error: str = "NoError") -> None:
        await self.call(
            "StatusNotification", {"connectorId": 1, "errorCode": error, "status": status}
        )

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                message = json.loads(raw)
                if message[0] == 2:
                    await self.ws.send(json.dumps([3, message[1], {}]))
                elif message[0] in (3, 4) and message[1] in self._waiting:
                    self._waiting.pop(message[1]).set_result(message[2])

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass
class Cluster:
    a: Runtime
    b: Runtime
    tmp_path: Path
    running: list[Runtime]

    async def stop(self, rt: Runtime) -> None:
        self.running.remove(rt)
        await rt.stop()

    async def charger(self, charger_id: str, node: Runtime | None = None) -> RawCharger:
        ws = await connect(node or self.b, charger_id, KEY)
        return RawCharger(ws)


def leader(rt: Runtime) -> PgLeader:
    assert isinstance(rt.leadership, PgLeader)
    return rt.leadership


async def node(tmp_path: Path, name: str, pg_url: str, redis_url: str, **extra: Any) -> Runtime:
    return await start_runtime(
        tmp_path / name,
        pg_url,
        redis_url=redis_url,
        node_id=name,
        alert_restricted_roles=[],  # no off-hours alerts by wall time
        **FAST_JOBS,
        **extra,
    )


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    a = await node(tmp_path, "a", pg_url, redis_url, alert_failed_logins=3)
    await asyncio.wait_for(leader(a).wait(True), 20)
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")  # the same keys
    b = await node(tmp_path, "b", pg_url, redis_url, alert_failed_logins=3)
    c = Cluster(a, b, tmp_path, [b, a])
    try:
        yield c
    finally:
        for rt in list(c.running):
            await c.stop(rt)


async def _job_history(rt: Runtime, job_id: int) -> list[dict[str, Any]]:
    async with api_client(rt) as api:
        r = await api.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return list(r.json()["history"])


async def _firmware_job(c: Cluster, charger_id: str) -> int:
    """A firmware job for ``charger_id`` created on the leader (A)."""
    async with api_client(c.a) as api:
        await allow_unsigned(api)
        fw = await upload(api, c.tmp_path, None, "2.0.0", size=4096)
        r = await api.post(
            f"/api/v1/chargers/{charger_id}/firmware-update", json={"firmware_id": fw["id"]}
        )
        assert r.status_code in (201, 202), r.text
        return int(r.json()["job_id"])


async def _alerts(rt: Runtime) -> list[tuple[str, str]]:
    async with rt.engine.connect() as conn:
        rows = (await conn.execute(select(Alert.rule, Alert.subject))).all()
    return sorted((r.rule, r.subject) for r in rows)


async def test_a_charger_on_node_b_reaches_the_leaders_runners_and_alert_monitor(
    cluster: Cluster,
) -> None:
    """Firmware status and boots from B reach A's job runner (the job's history), three boots
    fire A's repeated-boots playbook, a security event and B's failed logins raise A's alerts.
    Without the relay B's fleet service would call B's own services, which do not run on a
    node that does not lead, and A would hear nothing."""
    c = cluster
    assert c.a.leadership.is_leader and not c.b.leadership.is_leader
    await provision(c.a, "EV-B1", KEY)
    async with api_client(c.a) as api:
        boot_loop = {
            "name": "boot-loop",
            "enabled": True,
            "trigger": {"kind": "repeated_boots", "count": 3, "within_minutes": 60},
            "steps": [{"escalate": {"message": "boot loop"}}],
        }
        r = await api.post("/api/v1/playbooks", json=boot_loop)
        assert r.status_code == 201, r.text
    charger = await c.charger("EV-B1")
    try:
        await charger.boot()
        async with api_client(c.a) as api:
            await until(
                lambda: api.get("/api/v1/chargers/EV-B1"), lambda r: r.json()["vendor"] == VENDOR
            )
        job_id = await _firmware_job(c, "EV-B1")
        await charger.call("FirmwareStatusNotification", {"status": "Downloading"})
        history = await until(
            lambda: _job_history(c.a, job_id),
            lambda h: any(e["event"] == "firmware_status" for e in h),
        )
        reported = [e["detail"]["status"] for e in history if e["event"] == "firmware_status"]
        assert reported == ["Downloading"]

        await charger.boot()
        await charger.boot()  # the third boot within the hour
        await until(
            lambda: _job_history(c.a, job_id), lambda h: any(e["event"] == "boot" for e in h)
        )

        async def runs() -> list[str]:
            async with c.a.engine.connect() as conn:
                rows = await conn.execute(
                    select(PlaybookRun.fault_key).where(PlaybookRun.charger_id == "EV-B1")
                )
                return [str(r) for r in rows.scalars()]

        assert await until(runs) == ["repeated_boots"]

        await charger.call(
            "SecurityEventNotification",
            {"type": "TamperDetectionActivated", "timestamp": datetime.now(UTC).isoformat()},
        )
        for _ in range(4):  # past the threshold of 3, on the node that does not lead
            await c.b.audit.record(
                Actor("mallory"), "auth.login", "failed", detail={"client": "10.9.9.9"}
            )
        got = await until(lambda: _alerts(c.a), lambda a: len(a) >= 4)
        assert (security_events.RULE, "EV-B1") in got
        assert ("failed_logins", "user:mallory") in got
        assert ("failed_logins", "client:10.9.9.9") in got
    finally:
        await charger.close()


async def test_a_simulated_charger_on_node_b_is_updated_by_the_leaders_job_runner(
    cluster: Cluster,
) -> None:
    """End to end with the simulator: the job runs on A, the charger is on B. A's UpdateFirmware
    reaches the charger through B (evota.cluster.routing); every report the job needs after
    that (download and install statuses, the boot on the new version) comes back through B
    and the relay to A's runner, and the job succeeds."""
    c = cluster
    spec = fleet_from_flags(1, prefix="EV-S", seed="events", firmware_version="1.0.0")
    fleet = Fleet.from_spec(
        spec,
        f"ws://127.0.0.1:{c.b.ocpp_port}/ocpp",
        config=fast(speed=600.0, install_duration=1.0, download_retry_interval=0.2),
    )
    await fleet.provision(f"http://127.0.0.1:{c.a.http_port}", TOKEN)
    await fleet.start()
    try:
        [charger] = fleet.chargers
        await fleet.wait_until(lambda f: charger.accepted, 10)
        async with api_client(c.a) as api:
            await until(
                lambda: api.get(f"/api/v1/chargers/{charger.identity}"),
                lambda r: r.json()["vendor"] == charger.spec.vendor,
            )
            r = await api.put(
                f"/api/v1/firmware/vendors/{charger.spec.vendor}", json={"allow_unsigned": True}
            )
            assert r.status_code in (200, 201), r.text
            fw = await upload(
                api,
                c.tmp_path,
                None,
                "2.0.0",
                size=16 * 1024,
                vendor=charger.spec.vendor,
                models=(charger.spec.model,),
            )
            r = await api.post(
                f"/api/v1/chargers/{charger.identity}/firmware-update",
                json={"firmware_id": fw["id"]},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
        history = await until(
            lambda: _job_history(c.a, job_id),
            lambda h: h[-1]["state"] in ("succeeded", "failed", "cancelled"),
            timeout=30,
        )
        assert history[-1]["state"] == "succeeded", history
        assert charger.firmware_version == "2.0.0"
        assert c.b.gateway.is_connected(charger.identity)
        assert not c.a.gateway.connections  # every report came through B
    finally:
        await fleet.stop()


async def test_sse_on_a_node_that_does_not_lead_shows_the_leaders_campaign_notes(
    cluster: Cluster,
) -> None:
    """The campaign runner (on A) keeps "why chargers wait" in memory; B's SSE stream shows
    the same notes, and B holds a copy of them (evota.cluster.live), so reading them costs
    no call to the leader. Without the fan-out B's copy stays empty."""
    c = cluster
    await provision(c.a, "EV-N1", KEY)
    charger = await c.charger("EV-N1")
    try:
        await charger.boot()
        async with api_client(c.a) as api:
            await until(
                lambda: api.get("/api/v1/chargers/EV-N1"), lambda r: r.json()["vendor"] == VENDOR
            )
            await allow_unsigned(api)
            fw = await upload(api, c.tmp_path, None, "2.0.0", size=4096)
            opens = (datetime.now(UTC) + timedelta(hours=3)).strftime("%H:00")
            closes = (datetime.now(UTC) + timedelta(hours=4)).strftime("%H:00")
            r = await api.post(
                "/api/v1/campaigns",
                json={
                    "name": "closed window",
                    "firmware_id": fw["id"],
                    "waves": [{"percent": 100}],
                    "policy": {"windows": [{"start": opens, "end": closes}]},
                },
            )
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            r = await api.post(f"/api/v1/campaigns/{cid}/start", json={})
            assert r.status_code == 200, r.text
        notes = await until(lambda: list(c.a.campaigns.notes.get(cid, ())))
        async with (
            asyncio.timeout(15),
            api_client(c.b) as api,
            api.stream("GET", f"/api/v1/campaigns/{cid}/events") as stream,
        ):
            seen: list[str] = []
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    seen = json.loads(line.removeprefix("data: "))["notes"]
                    if seen:
                        break
        assert notes and seen == list(c.a.campaigns.notes[cid])[:50], (seen, notes)
        # every node keeps a copy of the leader's notes: read in memory, no call to the leader
        await until(lambda: list(c.b.campaigns.notes.get(cid, ())) == seen)
    finally:
        await charger.close()


async def test_a_profile_upgrade_on_the_leader_admits_the_new_way_in_on_every_node(
    cluster: Cluster,
) -> None:
    """While the leader's profile upgrade waits for the charger on its new profile
    (``FleetService.upgrading``), the node the charger reconnects to must admit a profile-3
    connection without a password, as the leader would; once the upgrade ends, no longer.
    Without the fan-out B refuses it and the upgrade fails on a charger that did switch."""
    c = cluster
    await provision(c.a, "EV-U1", KEY)
    mtls = Channel(tls=True, certificate=True)
    refused = await c.b.fleet.authenticate("EV-U1", None, mtls)
    assert refused.state is None and "profile 3" in refused.reason
    c.a.fleet.upgrading["EV-U1"] = 3  # what ProfileUpgrades does on the leader
    await until(lambda: c.b.fleet.upgrading.get("EV-U1") == 3)
    admitted = await c.b.fleet.authenticate("EV-U1", None, mtls)
    assert admitted.state is not None
    c.a.fleet.upgrading.pop("EV-U1", None)  # the upgrade ended
    await until(lambda: "EV-U1" not in c.b.fleet.upgrading)
    assert (await c.b.fleet.authenticate("EV-U1", None, mtls)).state is None


async def test_a_node_that_starts_later_reads_the_replicated_state(redis_url: str) -> None:
    """Pub/sub reaches only who listens: a node that starts (or reconnects) later loads the
    current values from the state hash, and a removal removes them there too."""
    first = LiveBus(Redis.from_url(redis_url), Node.start("first"))
    first.start()
    later = LiveBus(Redis.from_url(redis_url), Node.start("later"))
    try:
        mine = first.replicated("upgrading")
        await asyncio.wait_for(first.subscribed.wait(), 10)
        mine["C-1"], mine["C-2"] = 3, 2
        del mine["C-2"]
        await until(lambda: dict(mine) == {"C-1": 3} and not first._outbox)
        theirs = later.replicated("upgrading")
        later.start()
        await asyncio.wait_for(later.subscribed.wait(), 10)
        assert dict(theirs) == {"C-1": 3}
        sub = later.subscribe("upgrading:C-1")
        mine["C-1"] = 2
        assert await sub.get(10) == {"mapping": "upgrading", "key": "C-1", "value": 2}
        assert theirs["C-1"] == 2
    finally:
        for bus in (first, later):
            await bus.stop()
            await bus.redis.aclose()


async def test_events_left_pending_when_the_leader_goes_are_handled_by_the_next(
    cluster: Cluster, redis_url: str
) -> None:
    """A leaves; the charger on B reports while no node leads; a dead leader's consumer had
    read part of it and never acknowledged. B takes over and handles every entry: the job
    (created while A led) records each status, none twice."""
    c = cluster
    await provision(c.a, "EV-F1", KEY)
    charger = await c.charger("EV-F1")
    client = Redis.from_url(redis_url)
    try:
        await charger.boot()
        async with api_client(c.a) as api:
            await until(
                lambda: api.get("/api/v1/chargers/EV-F1"), lambda r: r.json()["vendor"] == VENDOR
            )
        job_id = await _firmware_job(c, "EV-F1")
        await c.stop(c.a)  # the leader goes: nobody reads the stream now
        assert c.b.events is not None
        for status in ("Downloading", "Downloaded", "Installing"):
            await charger.call("FirmwareStatusNotification", {"status": status})
            await c.b.events.flushed()  # one entry each
        # a leader that read two entries and died before acknowledging them
        read: Any = await client.xreadgroup(GROUP, "dead-leader:0", {STREAM: ">"}, count=2)
        assert sum(len(entries) for _, entries in read) == 2
        assert (await client.xpending(STREAM, GROUP))["pending"] == 2

        leader(c.b).poke()
        await asyncio.wait_for(leader(c.b).wait(True), 20)
        history = await until(
            lambda: _job_history(c.b, job_id),
            lambda h: sum(e["event"] == "firmware_status" for e in h) >= 3,
        )
        reported = [e["detail"]["status"] for e in history if e["event"] == "firmware_status"]
        assert reported == ["Downloading", "Downloaded", "Installing"]
        await until(lambda: client.xpending(STREAM, GROUP), lambda p: p["pending"] == 0)
        consumers = await client.xinfo_consumers(STREAM, GROUP)
        assert b"dead-leader:0" not in [x["name"] for x in consumers]  # no growth per death
    finally:
        await charger.close()
        await client.aclose()


async def test_audit_entries_waiting_in_the_stream_count_once_for_the_next_leader(
    cluster: Cluster,
) -> None:
    """Two failed logins on B while no node leads wait in the stream; B takes over, rebuilds
    its windows from the audit log (which has them) and then reads the stream: they must
    count once, not twice (4 > 3 would raise a false alert). Two more do raise it."""
    c = cluster
    await c.stop(c.a)
    assert c.b.events is not None

    async def failed_login() -> None:
        await c.b.audit.record(Actor("eve"), "auth.login", "failed", detail={"client": "10.7.7.7"})

    for _ in range(2):
        await failed_login()
    await c.b.events.flushed()
    leader(c.b).poke()
    await asyncio.wait_for(leader(c.b).wait(True), 20)
    relay = c.b.events
    await until(lambda: relay.handled, lambda n: n >= 2)  # the two entries were read
    assert await _alerts(c.b) == []
    for _ in range(2):
        await failed_login()
    got = await until(lambda: _alerts(c.b), lambda a: len(a) >= 2)
    assert ("failed_logins", "user:eve") in got


async def test_a_flooding_charger_is_cut_at_its_node(cluster: Cluster) -> None:
    """A charger flapping its connector 400 times as fast as it can: its node relays at
    most the burst plus the refill for the time it took; the rest is counted and dropped,
    so neither Redis nor the leader's queues grow with it. Other chargers are unaffected."""
    c = cluster
    assert c.b.events is not None
    relay = c.b.events
    await provision(c.a, "EV-FLOOD", KEY)
    await provision(c.a, "EV-CALM", KEY)
    flood = await c.charger("EV-FLOOD")
    calm = await c.charger("EV-CALM")
    try:
        await flood.boot()
        await relay.flushed()
        assert c.a.events is not None
        before = c.a.events.handled
        start = asyncio.get_running_loop().time()
        dropped = relay.dropped_flood
        for i in range(400):
            await flood.status(
                "Faulted" if i % 2 else "Available", "OtherError" if i % 2 else "NoError"
            )
        elapsed = asyncio.get_running_loop().time() - start
        await relay.flushed()
        limits = relay.limits
        assert relay.dropped_flood - dropped > 0
        # status events of the flood that got through: each is one entry on the leader
        allowed = limits.burst + limits.rate * elapsed
        await calm.boot()
        await calm.status("Faulted", "OtherError")
        await relay.flushed()
        leading = c.a.events
        await until(lambda: leading.handled, lambda n: n > before)
        handled = leading.handled - before
        assert handled <= allowed + 10, (handled, allowed)
        stream_len = await relay.redis.xlen(STREAM)
        assert stream_len <= limits.maxlen
    finally:
        await flood.close()
        await calm.close()


# -- the relay's parts without a cluster ----------------------------------------------------------
def test_a_bucket_lets_a_burst_through_then_the_rate() -> None:
    limits = Limits(burst=3, rate=1.0)
    bucket, results = None, []
    for _ in range(5):  # all at t=0: three, then none
        bucket, ok = take(bucket, 0.0, limits)
        results.append(ok)
    assert results == [True, True, True, False, False]
    bucket, ok = take(bucket, 1.0, limits)  # one second: one more
    assert ok
    bucket, ok = take(bucket, 1.0, limits)
    assert not ok


def test_entries_round_trip_and_unreadable_ones_are_refused() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    calls = [("security", ("C-1", "Tamper", None, at)), ("ready", ("C-2",))]
    assert decode(encode(calls, "n:1")) == [
        ("security", ["C-1", "Tamper", None, at.isoformat()]),
        ("ready", ["C-2"]),
    ]
    with pytest.raises(ValueError, match="unreadable"):
        decode({b"c": b"{not json", b"n": b"n:1"})
    with pytest.raises(ValueError, match="unreadable"):
        decode({b"n": b"n:1"})
    with pytest.raises(ValueError, match="unreadable"):
        decode({b"c": b'[["ready"]]'})


async def test_the_outbox_is_bounded_while_redis_is_away() -> None:
    """Nothing listens on the port: entries wait in order, at most ``outbox`` of them."""
    from tests.redis_fixtures import free_port

    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    relay = EventRelay(client, Node.start("lonely"), limits=Limits(outbox=100, burst=1e9))
    relay.start()
    try:
        for i in range(1000):
            relay.publish("ready", f"C-{i}")
        assert relay.queued == 100 and relay.dropped_full == 900
    finally:
        await relay.stop(flush=False)
        await client.aclose()


async def test_single_node_mode_has_no_relay(tmp_path: Path, sqlite_url: str) -> None:
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        assert rt.events is None and rt.live is None
        assert rt.fleet.jobs is rt.jobs  # the fleet calls its services directly, as before
        assert rt.alerts.local_audit
    finally:
        await rt.stop()


async def test_a_listener_bound_before_the_relay_admits_no_charger_until_served(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A cluster node binds its OCPP ports early (the TLS port goes into the profile
    upgrade's URL) but accepts only after the relay is installed: a charger that connected
    before would have its events handed to this node's own services, which run only on the
    leader. Refused connections are retried by chargers (and the load balancer)."""
    rt = await start_runtime(tmp_path, sqlite_url)
    gateway = Gateway(rt.fleet)
    try:
        port = await gateway.start("127.0.0.1", 0, serving=False)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await gateway.serve()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    finally:
        await gateway.stop()
        await rt.stop()


async def test_losing_the_leadership_stops_the_reader_while_it_waits_on_the_stream(
    redis_url: str,
) -> None:
    """redis-py can take a cancel in while XREADGROUP blocks and return normally; the reader
    then blocked again, forever, and a node losing the leadership (or stopping) hung."""
    key = secrets.token_bytes(32)  # the cluster key both nodes share
    publisher = EventRelay(Redis.from_url(redis_url), Node.start("gateway"), seal=Seal(key))
    leader_relay = EventRelay(Redis.from_url(redis_url), Node.start("leader"), seal=Seal(key))
    heard: list[str] = []
    all_heard = asyncio.Event()

    def ready(charger_id: str) -> None:
        heard.append(charger_id)
        if len(heard) == 2000:
            all_heard.set()

    leader_relay.handlers.ready.append(ready)
    publisher.start()
    await leader_relay.lead()
    try:
        for i in range(2000):
            publisher.publish("ready", f"C-{i}")
        await asyncio.wait_for(all_heard.wait(), 10)
        await publisher.stop()  # as a node stopping: its own publisher first
        stopping = asyncio.create_task(leader_relay.unlead())
        done, _ = await asyncio.wait({stopping}, timeout=3)  # a read blocks for 1 s at most
        assert done, "the stream reader did not stop"
    finally:
        for relay in (publisher, leader_relay):
            relay._consumer = None  # the stuck reader (without the fix) is abandoned
            await relay.stop()
            await relay.redis.aclose()


async def test_an_image_revoked_through_one_node_is_refused_by_every_nodes_downloads(
    cluster: Cluster,
) -> None:
    """Each node's download server holds its own set of revoked images: a revocation on
    node a reaches node b's at once (a notice on the live bus), well before b's periodic
    reload (REVOKED_RELOAD, 30 s), so a charger holding a download link cannot fetch the
    image from b."""
    c = cluster
    async with api_client(c.a) as api:
        await allow_unsigned(api)
        fw = await upload(api, c.tmp_path, None, "9.9.9", size=4096)
        assert fw["sha256"] not in c.b._revoked_sha256
        r = await api.post(f"/api/v1/firmware/{fw['id']}/revoke", json={"reason": "bricks"})
        assert r.status_code == 200, r.text
    await until(lambda: fw["sha256"] in c.b._revoked_sha256, timeout=10)
