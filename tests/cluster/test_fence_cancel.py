"""A runner cancelled in the middle of a statement on the fenced engine stops.

Seen in a busy run of test_routing: stopping a node cancelled the campaign runner while a
query ran; SQLAlchemy's cleanup of the cancelled connection called the fence's rollback
hook, which raised PendingRollbackError from the invalidated connection. That error replaced
the cancel, the runner's loop logged it and went on, and the node's stop hung for the test's
whole timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from evota.cluster.leader import PgLeader
from tests.cluster.harness import pg_database, start_node  # noqa: F401
from tests.support import until


async def test_a_statement_cancelled_on_the_fenced_engine_ends_its_task_as_cancelled(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    node = await start_node(tmp_path / "a", pg_database, "a", None, redis_url=redis_url)
    try:
        assert isinstance(node.leadership, PgLeader)
        await asyncio.wait_for(node.leadership.wait(True), 10)
        assert node.runner_engine is not node.engine  # the fenced one
        running = asyncio.Event()

        async def runner_read() -> None:  # what the campaign runner's loop does each tick
            async with node.runner_engine.connect() as conn:
                running.set()
                await conn.execute(text("SELECT pg_sleep(60)"))

        async def asleep() -> bool:
            async with node.engine.connect() as conn:
                found = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                        "AND query = 'SELECT pg_sleep(60)'"
                    )
                )
                return bool(found.scalar())

        task = asyncio.create_task(runner_read())
        await running.wait()
        await until(asleep)  # the statement is on the server
        task.cancel()
        await asyncio.wait([task], timeout=30)
        assert task.done() and task.cancelled(), task  # not PendingRollbackError
        async with node.runner_engine.begin() as conn:  # the pool is still usable
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await node.stop()


async def test_a_refused_runner_write_in_a_request_is_a_503_problem() -> None:
    """A request whose runner write the fence refused (this node lost the leadership
    meanwhile) answers 503 with a problem and Retry-After, never a 500."""
    import httpx
    from fastapi import FastAPI

    from evota.api import problems
    from evota.cluster.fence import Deposed

    app = FastAPI()
    problems.install(app)

    @app.get("/write")
    async def write() -> None:
        raise Deposed("runner write refused: this node does not lead")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://evota") as client:
        r = await client.get("/write")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "No runner leader"
