"""Runners with one leader (issue 15 item 3) and node components (``--components``): the
runtime's runners run on the elected node only, move when it goes, and a node runs only the
listeners its components name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evota.cluster.leader import Follower, PgLeader, SoleLeader
from evota.runtime import Runtime
from tests.cluster.harness import cluster_redis, pg_database, start_node  # noqa: F401
from tests.redis_fixtures import RedisServer
from tests.support import until


async def _node(
    tmp_path: Path, url: str, name: str, first: Runtime | None, **kw: object
) -> Runtime:
    """An in-process node on the shared PostgreSQL and Redis, with the first node's keys."""
    return await start_node(tmp_path / name, url, name, first, **kw)


def _runners_running(rt: Runtime) -> dict[str, bool]:
    """What the leader gate starts, seen from the runners' own tasks."""
    return {
        "campaigns": rt.campaigns._task is not None and not rt.campaigns._task.done(),
        "approvals": rt.approvals._task is not None and not rt.approvals._task.done(),
        "kpi_rollup": rt.kpi_rollup._periodic._task is not None,
        "configuration": bool(rt.configuration._tasks),
        "certificates": bool(rt.certificates._workers),
        "playbooks": rt.playbooks._task is not None,
        "alerts": rt.alerts._running,
    }


async def test_runners_run_on_the_leader_only_and_move_when_it_stops(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    a = await _node(tmp_path, pg_database, "a", None, redis_url=redis_url)
    b: Runtime | None = None
    try:
        assert isinstance(a.leadership, PgLeader)
        await asyncio.wait_for(a.leadership.wait(True), 10)
        b = await _node(tmp_path, pg_database, "b", a, redis_url=redis_url)
        assert isinstance(b.leadership, PgLeader)
        await asyncio.wait_for(b.leadership.tried(1), 10)  # b stood and lost to a
        assert all(_runners_running(a).values()), _runners_running(a)
        assert not any(_runners_running(b).values()), _runners_running(b)

        loop = asyncio.get_running_loop()
        gone = loop.time()
        await a.stop()
        await asyncio.wait_for(b.leadership.wait(True), b.leadership.timing.takeover_bound())
        assert loop.time() - gone <= b.leadership.timing.takeover_bound()
        assert all(_runners_running(b).values()), _runners_running(b)
    finally:
        if b is not None:
            await b.stop()
        if a.leadership.is_leader:
            await a.stop()


async def test_single_node_is_its_own_leader(tmp_path: Path, sqlite_url: str) -> None:
    rt = await _node(tmp_path, sqlite_url, "solo", None)
    try:
        assert isinstance(rt.leadership, SoleLeader)
        assert all(_runners_running(rt).values()), _runners_running(rt)
    finally:
        await rt.stop()


@pytest.mark.parametrize(
    "components",
    ["http,download,runners", "ocpp,download,runners", "ocpp,http,runners", "ocpp,http,download"],
)
async def test_a_node_runs_only_its_components(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
    components: str,
) -> None:
    """Without ``ocpp`` no OCPP listener, without ``http`` no API, without ``download`` no
    download listener, without ``runners`` no runner ever starts (it never leads)."""
    rt = await _node(tmp_path, pg_database, "n", None, components=components, redis_url=redis_url)
    try:
        wanted = set(components.split(","))
        assert (rt.ocpp_port != 0) == ("ocpp" in wanted)
        assert (rt.gateway._server is not None) == ("ocpp" in wanted)
        assert (rt._uvicorn is not None and rt.http_port != 0) == ("http" in wanted)
        assert (rt.download_port != 0) == ("download" in wanted)
        assert (rt.delivery._server is not None) == ("download" in wanted)
        if "runners" in wanted:  # alone in its cluster, it wins the election
            await until(lambda: all(_runners_running(rt).values()), timeout=20)
        else:
            assert isinstance(rt.leadership, Follower)
            assert not any(_runners_running(rt).values())
    finally:
        await rt.stop()


def test_a_single_node_without_runners_is_refused_in_one_line(tmp_path: Path) -> None:
    """Alone, a node without runners would take jobs and campaigns that nothing ever runs."""
    from typer.testing import CliRunner

    from evota.cli import app

    r = CliRunner().invoke(
        app, ["serve", "--components", "ocpp,http,download", "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 1
    assert "a single node must run the runners" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_serve_names_an_unknown_component_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evota.cli import app

    r = CliRunner().invoke(
        app, ["serve", "--components", "ocpp,gateway", "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 1
    assert "unknown component 'gateway'" in r.output and len(r.output.strip().splitlines()) == 1


async def test_an_api_call_into_a_runner_on_another_node_runs_on_the_leader(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    """Node b has no runners: its API's calls into them are answered by the leader a (the
    KPI rollup runs there, not on b), a domain error crosses as itself (404 for an unknown
    campaign), and with no leader left b answers 503 with a problem, promptly."""
    from tests.conftest import api_client

    a = await _node(tmp_path, pg_database, "a", None, redis_url=redis_url)
    b = await _node(
        tmp_path, pg_database, "b", a, redis_url=redis_url, components="ocpp,http,download"
    )
    a_stopped = False
    try:
        assert isinstance(b.leadership, Follower)
        await asyncio.wait_for(a.leadership.wait(True), 10)
        assert a.leader_calls.serving
        async with api_client(b) as api:
            r = await api.post("/api/v1/kpis/rollup")
            assert r.status_code == 200, r.text
            assert set(r.json()) >= {"chargers", "rows", "seconds"}
            assert a.kpi_rollup.last is not None and b.kpi_rollup.last is None
            assert a.leader_calls.served["kpi_rollup.run"] == 1

            unknown = "00000000-0000-4000-8000-000000000000"
            r = await api.post(f"/api/v1/campaigns/{unknown}/pause", json={"reason": "x"})
            assert r.status_code == 404 and r.json()["field"] == "campaign_id", r.text

            # a bulk operation created through b runs in a's operations runner; the runner's
            # own refusal (a stage below 1) still names the field
            r = await api.post("/api/v1/chargers", json={"id": "CP-1", "auth_key": "k" * 16})
            assert r.status_code == 201, r.text
            body = {"command": "reset", "params": {"type": "Soft"}, "reason": "test"}
            body["target"] = {"charger_ids": ["CP-1"]}
            r = await api.post("/api/v1/operations", json={**body, "stages": [0]})
            assert r.status_code == 422 and r.json()["field"] == "stages[0]", r.text
            r = await api.post("/api/v1/operations", json=body)
            assert r.status_code == 201, r.text
            operation = r.json()["id"]
            assert a.leader_calls.served["operations.create"] == 2  # the refused one, this one
            r = await api.post(f"/api/v1/operations/{operation}/cancel", json={"reason": "x"})
            # cancelled, or already stopped by its offline charger: the leader's runner says
            assert r.status_code in (200, 409), r.text
            assert a.leader_calls.served["operations.cancel"] == 1
            # a local-list sync runs on the leader, whose sync keeps the managed chargers
            r = await api.post("/api/v1/id-tokens/sync", json={"charger_ids": ["CP-1"]})
            assert r.status_code == 200, r.text
            assert [x["charger_id"] for x in r.json()["results"]] == ["CP-1"]
            assert a.leader_calls.served["local_lists.sync"] == 1
            assert not b.leader_calls.served

            await a.stop()
            a_stopped = True
            loop = asyncio.get_running_loop()
            asked = loop.time()
            r = await api.post("/api/v1/kpis/rollup")
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "leader" in r.json()["detail"]
            assert loop.time() - asked < b.leader_calls.timeout  # not a wait for the timeout
    finally:
        await b.stop()
        if not a_stopped:
            await a.stop()


async def test_a_job_and_a_revocation_through_another_node_reach_the_leaders_runner(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    """An update created through a node without runners is queued in the leader's job runner;
    revoking its image through that node cancels it there (the revocation used to stop the
    jobs of the node's own, idle job runner: none)."""
    from sqlalchemy import update

    from evota.store.models import Charger
    from tests.conftest import api_client
    from tests.test_firmware_update import MODEL, VENDOR, allow_unsigned, upload

    a = await _node(tmp_path, pg_database, "a", None, redis_url=redis_url)
    b = await _node(
        tmp_path, pg_database, "b", a, redis_url=redis_url, components="ocpp,http,download"
    )
    try:
        await asyncio.wait_for(a.leadership.wait(True), 10)
        async with api_client(b) as api:
            await allow_unsigned(api)
            fw = await upload(api, tmp_path, None, "2.0.0", size=1024)
            r = await api.post("/api/v1/chargers", json={"id": "OFF-1", "auth_key": "x" * 20})
            assert r.status_code == 201, r.text
            async with b.engine.begin() as conn:  # as if it had booted once
                await conn.execute(
                    update(Charger)
                    .where(Charger.id == "OFF-1")
                    .values(vendor=VENDOR, model=MODEL, firmware_version="1.0.0")
                )
            r = await api.post(
                "/api/v1/chargers/OFF-1/firmware-update", json={"firmware_id": fw["id"]}
            )
            assert r.status_code in (200, 201, 202), r.text
            job_id = r.json()["job_id"]
            assert "OFF-1" in a.jobs.active and "OFF-1" not in b.jobs.active

            r = await api.post(f"/api/v1/firmware/{fw['id']}/revoke", json={"reason": "bricks"})
            assert r.status_code == 200, r.text
            assert "OFF-1" not in a.jobs.active
            r = await api.get(f"/api/v1/jobs/{job_id}")
            assert r.json()["state"] == "cancelled", r.text
    finally:
        await b.stop()
        await a.stop()


async def test_forwarded_calls_answer_503_while_redis_is_down_and_work_when_it_is_back(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> None:
    """Redis restarts (empty): a node's call into the leader's runners is a prompt 503 while it
    is away; once it is back the leader advertises itself and listens again, and the call
    works without restarting anything."""
    from tests.conftest import api_client

    url = cluster_redis.url
    a = await _node(tmp_path, pg_database, "a", None, redis_url=url)
    b = await _node(tmp_path, pg_database, "b", a, redis_url=url, components="http")
    try:
        await asyncio.wait_for(a.leadership.wait(True), 10)
        async with api_client(b) as api:
            assert (await api.post("/api/v1/kpis/rollup")).status_code == 200
            cluster_redis.stop()
            r = await api.post("/api/v1/kpis/rollup")
            assert r.status_code == 503 and "leader" in r.json()["detail"], r.text
            assert a.leadership.is_leader  # the lock is in PostgreSQL: the runners go on
            cluster_redis.start()

            r = await until(
                lambda: api.post("/api/v1/kpis/rollup"),
                lambda r: r.status_code != 503,
                timeout=20,
                interval=0.2,
            )
            assert r.status_code == 200, r.text
    finally:
        await b.stop()
        await a.stop()


async def test_a_deposed_leader_stops_its_runners_and_starts_them_again_when_it_leads(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    """The leader's database session is cut (a PostgreSQL restart, a partition): the node
    stops every runner, alert monitor included, while it keeps serving; alone, it takes the
    lock again with a new fencing token and every runner runs again."""
    import asyncpg  # type: ignore[import-untyped]

    from evota.cluster.leader import asyncpg_dsn

    a = await _node(tmp_path, pg_database, "a", None, redis_url=redis_url)
    try:
        assert isinstance(a.leadership, PgLeader)
        await asyncio.wait_for(a.leadership.wait(True), 10)
        first = a.leadership.token
        assert all(_runners_running(a).values()), _runners_running(a)
        admin = await asyncpg.connect(asyncpg_dsn(pg_database))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'evota-leader a:%'"
            )
        finally:
            await admin.close()
        await asyncio.wait_for(a.leadership.wait(False), 10)
        assert not any(_runners_running(a).values()), _runners_running(a)
        a.leadership.poke()
        await asyncio.wait_for(a.leadership.wait(True), 10)
        assert a.leadership.token == first + 1
        assert all(_runners_running(a).values()), _runners_running(a)
    finally:
        await a.stop()
