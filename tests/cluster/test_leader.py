"""Runner leadership (evota.cluster.leader): one leader among the nodes on PostgreSQL, a
takeover within the bound when it goes, runners started on gaining and stopped on losing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from evota.clock import SystemClock
from evota.cluster.leader import Follower, PgLeader, SoleLeader, Timing
from evota.store import db
from evota.store.models import ClusterLeader
from tests.cluster.harness import pg_database  # noqa: F401


@pytest.fixture
def pg_url(pg_database: str) -> str:  # noqa: F811
    """PostgreSQL only (a fresh database per test)."""
    return pg_database


async def _migrated(url: str) -> None:
    engine = db.create_engine(url)
    await db.migrate(engine)
    await engine.dispose()


class Runner:
    """A stand-in runner that records when it runs (the runtime's are tested in
    test_runners_on_leader.py)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.running = name, log, False

    async def start(self) -> None:
        self.running = True
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.running = False
        self.log.append(f"stop {self.name}")


async def test_sole_leader_starts_each_runner_as_it_is_added_and_stops_them_last_first() -> None:
    log: list[str] = []
    sole = SoleLeader()
    await sole.add(Runner("a", log).start, Runner("a", log).stop)
    log.append("between")  # what the runtime does between two runners stays in its place
    await sole.add(Runner("b", log).start, Runner("b", log).stop)
    assert sole.is_leader and sole.token == 1
    await sole.stop()
    assert log == ["start a", "between", "start b", "stop b", "stop a"]


async def test_a_follower_never_starts_its_runners() -> None:
    log: list[str] = []
    node = Follower()
    await node.add(Runner("a", log).start, Runner("a", log).stop)
    await node.start()
    await node.stop()
    assert not node.is_leader and node.token == 0 and log == []


async def test_one_leader_of_two_nodes_and_the_other_takes_over_within_the_bound(
    pg_url: str,
) -> None:
    """Two nodes stand: exactly one leads and runs its runners. The leader goes (its session
    ends, as when its process is killed): the other leads within the bound, with a higher
    fencing token, measured from the stop to the gain event."""
    await _migrated(pg_url)
    timing = Timing(retry=2.0)
    assert timing.takeover_bound() <= 15.0  # the bound, for a partition as well
    logs: dict[str, list[str]] = {"n1": [], "n2": []}
    nodes = {name: PgLeader(pg_url, f"{name}:x", SystemClock(), timing) for name in logs}
    runners = {name: Runner("jobs", logs[name]) for name in logs}
    for name, node in nodes.items():
        await node.add(runners[name].start, runners[name].stop)
    await nodes["n1"].start()
    await asyncio.wait_for(nodes["n1"].wait(True), 10)
    await nodes["n2"].start()
    engine = db.create_engine(pg_url)
    try:
        await asyncio.wait_for(nodes["n2"].tried(1), 10)  # n2 tried the lock n1 holds
        assert not nodes["n2"].is_leader
        first = nodes["n1"].token
        assert runners["n1"].running and not runners["n2"].running
        async with engine.connect() as conn:
            row = (await conn.execute(select(ClusterLeader))).one()
        assert (row.token, row.node) == (first, "n1:x")

        loop = asyncio.get_running_loop()
        gone = loop.time()
        await nodes["n1"].stop()
        assert logs["n1"] == ["start jobs", "stop jobs"]
        await asyncio.wait_for(nodes["n2"].wait(True), timing.takeover_bound())
        took = loop.time() - gone
        assert took <= timing.retry + 1.0  # the session's end freed the lock at once
        assert runners["n2"].running and nodes["n2"].token == first + 1
        async with engine.connect() as conn:
            row = (await conn.execute(select(ClusterLeader))).one()
        assert (row.token, row.node) == (first + 1, "n2:x")
    finally:
        for node in nodes.values():
            await node.stop()
        await engine.dispose()


async def test_a_leader_whose_session_is_cut_stops_its_runners_and_another_leads(
    pg_url: str,
) -> None:
    """The server ends the leader's session (pg_terminate_backend: a restarted database or a
    cut connection). The leader notices at its next check and stops its runners; then one
    node leads again (either may win the lock) under a new fencing token."""
    import asyncpg  # type: ignore[import-untyped]

    from evota.cluster.leader import asyncpg_dsn

    await _migrated(pg_url)
    timing = Timing(retry=0.2)
    logs: dict[str, list[str]] = {"n1": [], "n2": []}
    nodes = {name: PgLeader(pg_url, f"{name}:x", SystemClock(), timing) for name in logs}
    for name, node in nodes.items():
        runner = Runner("jobs", logs[name])
        await node.add(runner.start, runner.stop)
    await nodes["n1"].start()
    await asyncio.wait_for(nodes["n1"].wait(True), 10)
    await nodes["n2"].start()
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'evota-leader n1:x'"
        )
        assert killed == 1
        first = 1
        await asyncio.wait_for(nodes["n1"].wait(False), 10)
        assert logs["n1"] == ["start jobs", "stop jobs"]
        waits = [asyncio.ensure_future(node.wait(True)) for node in nodes.values()]
        done, pending = await asyncio.wait(waits, timeout=10, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        assert done
        leaders = [node for node in nodes.values() if node.is_leader]
        assert len(leaders) == 1 and leaders[0].token == first + 1
        running = [name for name, lines in logs.items() if lines[-1:] == ["start jobs"]]
        assert len(running) == 1
    finally:
        await admin.close()
        for node in nodes.values():
            await node.stop()
