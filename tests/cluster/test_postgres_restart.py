"""PostgreSQL restarts under a charger (issue 15 item 7): what chargers send is queued in a
bounded backlog while the database is away, ``/healthz`` says degraded, and everything queued
is written, in order, when it is back.

The PostgreSQL here is the test's own (initdb in a temporary directory, its own port): the
shared test server on 55432 is never stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from evota.clock import SystemClock
from evota.fleet.writer import FleetWriter
from evota.runtime import Runtime
from evota.sim.charger import SimConfig, SimulatedCharger, Transaction
from evota.sim.fleet import ChargerSpec
from evota.store import db
from evota.store.models import ChargingSession, ConnectorStatus
from tests.conftest import provision, start_runtime
from tests.redis_fixtures import free_port
from tests.support import until

BIN = Path("/usr/lib/postgresql/15/bin")
KEY = "correct-horse-battery"
SIM = SimConfig(
    speed=1.0,
    call_timeout=5.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    ping_interval=None,
    close_timeout=0.5,
)


class Postgres:
    """A PostgreSQL server of one test's own, stopped and started at will (same port)."""

    def __init__(self) -> None:
        if not (BIN / "pg_ctl").exists():
            pytest.skip("PostgreSQL 15 binaries not installed (scripts/postgres.sh)")
        # Not under pytest's tmp_path: as root the server runs as ``postgres``, which must be
        # able to reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="evota-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.run_as, str(BIN / "initdb"), "-D", str(self.data), "-U", "evota",
             "--auth=trust", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://evota@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        subprocess.run(
            [*self.run_as, str(BIN / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.root / "server.log"), "-w", "-o", options, "start"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*self.run_as, str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def evota_pg(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Runtime]:
    rt = await start_runtime(tmp_path, postgres.url, write_interval=0.05)
    yield rt
    if not _running(postgres):
        postgres.start()
    await rt.stop()


def _running(pg: Postgres) -> bool:
    status = subprocess.run(
        [*pg.run_as, str(BIN / "pg_ctl"), "-D", str(pg.data), "status"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return status.returncode == 0


async def _health(rt: Runtime) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.http_port}", timeout=15) as api:
        r = await api.get("/healthz")
        assert r.status_code == 200, r.text  # degraded is still up: the node serves chargers
        body: dict[str, object] = r.json()
        return body


async def test_charger_writes_queue_across_a_postgres_restart_and_are_all_written(
    evota_pg: Runtime, postgres: Postgres
) -> None:
    rt = evota_pg
    await provision(rt, "CP-pg", KEY)
    sim = SimulatedCharger(ChargerSpec("CP-pg", KEY), f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", SIM)
    sim.start()
    try:
        await until(lambda: sim.accepted, timeout=15)
        txn = Transaction(1, "CARD-1", int(sim.meter_wh[1]))
        assert await sim.wire.start(sim, txn)  # StartTransaction needs the database: before
        sim.transactions[1] = txn
        await rt.fleet.writer.flush()
        assert (await _health(rt))["status"] == "ok"

        postgres.stop()
        sent = ["Charging", "SuspendedEV", "Charging", "SuspendedEVSE", "Charging"]
        for i, status in enumerate(sent):  # answered at once: the writes are queued
            await sim.send_status(1, status)
            sim.meter_wh[1] = txn.meter_start + 1000 * (i + 1)
            await sim.wire.meter(sim, txn)
        await until(lambda: rt.fleet.writer.database_error is not None, timeout=15)
        assert rt.fleet.writer.backlog >= len(sent)
        health = await _health(rt)
        assert health["status"] == "degraded"
        assert "database unreachable" in str(health["reason"])
        # /healthz answers anyone: the driver's text (host, port, user) stays in the log
        assert str(postgres.port) not in str(health) and "127.0.0.1" not in str(health)
        assert sim.accepted  # the charger stayed connected throughout

        postgres.start()
        await until(lambda: rt.fleet.writer.backlog == 0, timeout=30)
        await until(lambda: rt.fleet.writer.database_error is None, timeout=30)
        assert (await _health(rt))["status"] == "ok"
        async with rt.engine.connect() as conn:
            history = (
                await conn.execute(
                    select(ConnectorStatus.status)
                    .where(ConnectorStatus.charger_id == "CP-pg", ConnectorStatus.connector_id == 1)
                    .order_by(ConnectorStatus.id)
                )
            ).scalars()
            session = (
                await conn.execute(
                    select(ChargingSession.meter_last_wh).where(
                        ChargingSession.charger_id == "CP-pg"
                    )
                )
            ).scalar_one()
        assert list(history)[-len(sent) :] == sent  # every change, in order
        assert session == txn.meter_start + 1000 * len(sent)  # the last meter value
        assert rt.fleet.writer.shed == 0 and rt.fleet.writer.dropped == 0
    finally:
        await sim.stop()


async def test_a_full_backlog_sheds_the_oldest_history_first_and_keeps_the_latest(
    sqlite_url: str,
) -> None:
    engine = db.create_engine(sqlite_url)  # nothing is written: the bound is in memory
    writer = FleetWriter(engine, SystemClock(), interval=0.05, max_backlog=100)
    now = datetime.now(UTC)
    try:
        boot = {"charger_id": "CP-1", "kind": "boot", "status": "Accepted", "data": {}}
        writer.event({**boot, "request_id": None, "charger_timestamp": None, "received_at": now})
        for i in range(150):
            writer.status(("CP-1", 1, f"S{i}", "NoError", None, None, None, now))
        assert 90 <= writer.backlog <= 100  # shed in steps of a hundredth of the bound
        assert writer.shed == 151 - writer.backlog
        kept = [row[2] for row in writer._history]
        assert kept == [f"S{i}" for i in range(150 - len(kept), 150)]  # the newest stayed
        assert len(writer._events) == 1  # events are shed only after all history
    finally:
        await engine.dispose()
