"""Fenced runner writes (evota.cluster.fence): a leader deposed without knowing it yet (its
lock session cut, another node took over) has its runners' commits refused and rolled back;
the new leader's land. Single node: no fence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text

from evota.audit.log import Actor
from evota.clock import SystemClock
from evota.cluster.fence import Deposed, fenced, refusal
from evota.cluster.leader import PgLeader, SoleLeader, Timing, asyncpg_dsn
from evota.runtime import Runtime
from evota.store import db
from evota.store.models import ChargerEvent
from tests.cluster.harness import pg_database, start_node  # noqa: F401


@given(began=st.integers(-2, 5), term=st.integers(-2, 5), current=st.none() | st.integers(-2, 5))
def test_a_commit_lands_only_in_one_current_term(
    began: int, term: int, current: int | None
) -> None:
    """Lands iff the transaction began and ends in this node's term and that term is the
    cluster's; otherwise the reason says which."""
    why = refusal(began, term, current)
    assert (why is None) == (term > 0 and began == term and current == term)


def test_the_reasons_name_what_differs() -> None:
    assert refusal(0, 0, 3) == "this node does not lead"
    assert refusal(2, 3, 3) == "the transaction began in term 2, this node's term is now 3"
    assert refusal(3, 3, 4) == "this node's term is 3, the cluster's is 4"
    assert refusal(3, 3, None) == "this node's term is 3, the cluster's is None"


async def _old_events(rt: Runtime, n: int) -> int:
    """``n`` charger events past their retention (200 days, kept 180 by default)."""
    old = rt.clock.now() - timedelta(days=200)
    async with rt.engine.begin() as conn:
        await conn.execute(
            insert(ChargerEvent),
            [
                {"charger_id": "CP-1", "kind": "boot", "received_at": old, "data": {}}
                for _ in range(n)
            ],
        )
    return await _count(rt)


async def _count(rt: Runtime) -> int:
    async with rt.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(ChargerEvent))).scalar())


async def test_a_deposed_leaders_runner_write_is_refused_and_the_new_leaders_lands(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    """Node a leads; its lock session is terminated and b takes the lock before a notices
    (a's session check is an hour away). a still believes it leads, but its pruner's deletes
    are refused and roll back; b's pruner deletes the same rows. The refusal makes a check
    its session at once and step down."""
    import asyncpg  # type: ignore[import-untyped]

    a = await start_node(tmp_path / "a", pg_database, "a", None, redis_url=redis_url)
    b: Runtime | None = None
    admin = await asyncpg.connect(asyncpg_dsn(pg_database))
    try:
        lead_a = a.leadership
        assert isinstance(lead_a, PgLeader)
        await asyncio.wait_for(lead_a.wait(True), 10)
        lead_a.timing = Timing(retry=3600.0)  # a will not notice by itself
        checked = lead_a.attempts
        lead_a.poke()
        await asyncio.wait_for(lead_a.tried(checked + 1), 10)  # now waiting out the hour
        term_a = lead_a.token
        b = await start_node(tmp_path / "b", pg_database, "b", a, redis_url=redis_url)
        lead_b = b.leadership
        assert isinstance(lead_b, PgLeader)
        await asyncio.wait_for(lead_b.tried(1), 10)  # b stood and lost to a
        assert not lead_b.is_leader
        assert await _old_events(a, 3) == 3

        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"evota-leader {a.node.key}"[:63],
        )
        assert killed == 1
        lead_b.poke()
        await asyncio.wait_for(lead_b.wait(True), 10)
        assert lead_b.token == term_a + 1
        assert lead_a.is_leader and lead_a.token == term_a  # a has not noticed

        with pytest.raises(Deposed, match=f"term is {term_a}, the cluster's is {term_a + 1}"):
            await a.pruner.run_once()
        assert await _count(a) == 3  # nothing a's runner wrote landed
        await asyncio.wait_for(lead_a.wait(False), 10)  # the refusal deposed a at once

        await b.pruner.run_once()
        assert await _count(b) == 0  # the leader's writes land

        # The other leader-only writers are fenced alike: approval decisions (requests are
        # any node's), the alert rules, the playbook runner, the certificate inventory.
        assert a.alerts._rules_engine is a.runner_engine
        assert a.playbooks._engine is a.runner_engine
        assert a.certificates._runner_engine is a.runner_engine
        ann, ben = Actor("ann", ("admin",)), Actor("ben", ("admin",))
        asked = await a.approvals.request(ann, "campaign.start", "start", {}, "test")
        with pytest.raises(Deposed, match="this node does not lead"):
            await a.approvals.decide(asked, ben, approve=False)
        assert (await b.approvals.get(asked)).state == "pending"
        await b.approvals.decide(asked, ben, approve=False)
        assert (await b.approvals.get(asked)).state == "rejected"
    finally:
        await admin.close()
        if b is not None:
            await b.stop()
        await a.stop()


async def test_a_leader_whose_term_was_taken_under_a_live_session_steps_down(
    pg_database: str,  # noqa: F811
) -> None:
    """The token moved on while this leader's lock session still answers (the takeover SQL
    run by hand, or a lock lost and retaken between two checks): its fenced write is refused
    and the refusal's check compares the token, not only the session, and steps down."""
    engine = db.create_engine(pg_database)
    await db.migrate(engine)
    leader = PgLeader(pg_database, "a:x", SystemClock(), Timing(retry=3600.0))
    guarded = fenced(engine, lambda: leader.token, leader.deposed)
    try:
        await leader.start()
        await asyncio.wait_for(leader.wait(True), 10)
        async with guarded.begin() as conn:  # in its term: lands
            await conn.execute(insert(ChargerEvent).values(_event(leader.token)))
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE cluster_leader SET token = token + 1"))
        with pytest.raises(Deposed):
            async with guarded.begin() as conn:
                await conn.execute(insert(ChargerEvent).values(_event(leader.token)))
        await asyncio.wait_for(leader.wait(False), 10)  # not an hour: the refusal checked
        async with engine.connect() as conn:
            kinds = (await conn.execute(select(ChargerEvent.kind))).scalars().all()
        assert kinds == ["term 1"]
    finally:
        await leader.stop()
        await engine.dispose()


def _event(term: int) -> dict[str, object]:
    return {"charger_id": "CP-1", "kind": f"term {term}", "received_at": datetime.now(UTC)}


async def test_the_fence_bounds_how_long_a_stalled_leader_holds_the_takeover_off(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    """The check sets idle_in_transaction_session_timeout for its transaction only: a leader
    stalled between the check and COMMIT loses its session instead of blocking the takeover's
    UPDATE indefinitely; the pool's other transactions keep the server's default."""
    from evota.cluster.fence import CHECK, IDLE_TIMEOUT

    rt = await start_node(tmp_path / "a", pg_database, "a", None, redis_url=redis_url)
    try:
        assert isinstance(rt.leadership, PgLeader)
        await asyncio.wait_for(rt.leadership.wait(True), 10)
        async with rt.runner_engine.begin() as conn:
            token = (await conn.exec_driver_sql(CHECK)).scalar()
            assert token == rt.leadership.token
            setting = await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
            assert setting.scalar() == IDLE_TIMEOUT
        async with rt.engine.connect() as conn:
            setting = await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
            assert setting.scalar() == "0"
    finally:
        await rt.stop()


async def test_a_single_node_is_not_fenced(tmp_path: Path, sqlite_url: str) -> None:
    rt = await start_node(tmp_path / "solo", sqlite_url, "solo", None)
    try:
        assert isinstance(rt.leadership, SoleLeader)
        assert rt.runner_engine is rt.engine and rt.pruner.engine is rt.engine
    finally:
        await rt.stop()
