"""Backup and restore as docs/operations-guide.md describes them, on a running evota.

Chargers (the fleet simulator), a campaign and its jobs are made through the API; ``evota
backup`` runs as its own process while evota keeps serving (SQLite's online backup API, or
pg_dump); the backup is restored into a new data directory and a new database with the
documented commands; evota started on the restore finds every charger, job and campaign,
``evota audit verify`` passes with the head checked, and the chargers connect again with
their keys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from evota.sim import Fleet

from .conftest import PG_URL, Keys, api_client, start_runtime
from .sim.conftest import fast
from .test_campaigns import World, fleet_spec
from .test_firmware_update import FAST_JOBS, running, upload

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Files every restore must carry over byte for byte (docs/operations-guide.md's table).
KEY_FILES = (
    "audit-head.key",
    "download-token.key",
    "upload-token.key",
    "charger-ca/ca.pem",
    "charger-ca/ca-key.pem",
)


async def evota_cli(*args: str) -> tuple[int, str]:
    """``evota ARGS`` as its own process: exit code and everything it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evota",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    return await proc.wait(), output.decode()


async def run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert await proc.wait() == 0, f"{argv[0]}: {output.decode()}"


def libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def new_database(database_url: str) -> AsyncIterator[str | None]:
    """An empty PostgreSQL database to restore into (None on SQLite)."""
    if not database_url.startswith("postgresql"):
        yield None
        return
    assert PG_URL
    name = "evota_restore_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(libpq(PG_URL))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(libpq(PG_URL))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def inventory(api: httpx.AsyncClient) -> dict[str, Any]:
    """What a restore must bring back, as the API shows it."""

    async def items(path: str) -> list[dict[str, Any]]:
        r = await api.get(path, params={"limit": 1000})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    return {
        "chargers": sorted(
            (c["id"], c["site_id"], c["vendor"], c["model"], c["firmware_version"])
            for c in await items("/api/v1/chargers")
        ),
        "jobs": sorted(
            (j["id"], j["charger_id"], j["state"], j["target_version"], j["campaign_id"])
            for j in await items("/api/v1/jobs")
        ),
        "campaigns": sorted(
            (c["id"], c["name"], c["state"]) for c in await items("/api/v1/campaigns")
        ),
    }


@pytest.mark.slow
async def test_backup_of_a_running_evota_restores_everything(
    tmp_path: Path, database_url: str, new_database: str | None, keys: Keys
) -> None:
    postgres = new_database is not None
    async with running(World, tmp_path, database_url, keys, campaign_tick_seconds=0.2) as world:
        fw = await upload(world.api, world.tmp_path, keys, "2.0.0", size=16 * 1024)
        spec = fleet_spec(6, keys, prefix="BAK-")
        await world.fleet(spec, session_rate=0.0)
        done = await world.campaign(fw["id"], waves=[{"count": 2}, {"percent": 100}])
        r = await world.api.post(f"/api/v1/campaigns/{done['id']}/start", json={"reason": "t"})
        assert r.status_code == 200, r.text
        done = await world.until(done["id"], lambda c: c["state"] in ("completed", "aborted"))
        assert done["state"] == "completed", done
        draft = await world.campaign(fw["id"], name="not started")
        before = await inventory(world.api)
        assert len(before["chargers"]) == 6 and len(before["jobs"]) == 6
        assert {c[0] for c in before["campaigns"]} == {done["id"], draft["id"]}
        entries = (await world.api.get("/api/v1/audit/verify")).json()["entries"]

        # The backup, taken while evota serves the connected fleet.
        backup = tmp_path / "backup"
        data_dir = str(world.rt.settings.data_dir)
        args = ["backup", str(backup), "--data-dir", data_dir, "--database-url", database_url]
        if postgres:
            args += ["--pg-dump", str(PG_BIN / "pg_dump")]
        code, output = await evota_cli(*args)
        assert code == 0, output
        assert "backup in" in output and "Traceback" not in output
        database_file = backup / ("evota.dump" if postgres else "evota.db")
        assert database_file.stat().st_mode & 0o777 == 0o600
        original = world.rt.settings.data_dir

    # Restore (evota stopped), as documented: the backup directory is a data directory.
    restored = tmp_path / "restored" / "data"
    shutil.copytree(backup, restored, ignore=shutil.ignore_patterns("evota.dump"))
    if postgres:
        assert new_database is not None
        await run(
            str(PG_BIN / "pg_restore"),
            "--no-owner",
            f"--dbname={libpq(new_database)}",
            str(backup / "evota.dump"),
        )
    for name in KEY_FILES:
        assert (restored / name).read_bytes() == (original / name).read_bytes(), name
    firmware = (restored / "firmware" / "sha256").rglob("*")
    assert any(p.is_file() for p in firmware), "firmware images are in the backup"

    verify = ["audit", "verify", "--data-dir", str(restored)]
    if postgres:
        assert new_database is not None
        verify += ["--database-url", new_database]
    code, output = await evota_cli(*verify)
    assert code == 0 and "audit log intact" in output, output
    assert "head not checked" not in output, output

    url = new_database or f"sqlite+aiosqlite:///{restored / 'evota.db'}"
    rt = await start_runtime(tmp_path / "restored", url, **FAST_JOBS)
    fleet: Fleet | None = None
    try:
        async with api_client(rt) as api:
            assert await inventory(api) == before
            checked = (await api.get("/api/v1/audit/verify")).json()
            assert checked["ok"] and checked["entries"] >= entries, checked
            # The chargers' keys came back too: the same fleet connects and is accepted.
            config = fast(speed=600.0, session_rate=0.0)
            fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=config)
            await fleet.start()
            await fleet.wait_for_all(lambda c: c.accepted, 30)
    finally:
        if fleet is not None:
            await fleet.stop()
        await rt.stop()


async def test_backup_refuses_a_directory_that_is_not_new(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    code, output = await evota_cli("backup", str(tmp_path / "x"), "--data-dir", str(data))
    assert code == 1 and output.count("\n") == 1 and "no database at" in output, output
    (data / "evota.db").write_bytes(b"")
    target = tmp_path / "used"
    target.mkdir()
    (target / "something").write_text("x")
    code, output = await evota_cli("backup", str(target), "--data-dir", str(data))
    assert code == 1 and "exists and is not empty" in output, output
    code, output = await evota_cli("backup", str(data / "b"), "--data-dir", str(data))
    assert code == 1 and "inside the data directory" in output, output


async def test_backup_keeps_keys_images_and_archives_and_leaves_scratch_and_caches(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    files = {
        "download-token.key": b"k" * 32,
        "audit-head.key": b"h" * 32,
        "audit-anchors.jsonl": b'{"seq": 1, "hash": "x", "mac": "y"}\n',
        "charger-ca/ca-key.pem": b"ca key",
        "firmware/sha256/ab/abcd": b"image",
        "uploads/7/diagnostics.zip": b"zip",
        "audit-archive/audit-1.jsonl": b"archived",
        # never part of a backup: scratch, the node lock, the S3 store's local copies
        "firmware/tmp/upload-1": b"partial",
        "firmware-cache/abcd": b"cached image",
        "evota.db.node-lock": b"",
    }
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    with sqlite3.connect(data / "evota.db") as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (42)")
    db.close()
    code, output = await evota_cli("backup", str(tmp_path / "b"), "--data-dir", str(data))
    assert code == 0, output
    copied = {
        str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*") if p.is_file()
    }
    kept = {n for n in files if not n.startswith(("firmware/tmp", "firmware-cache", "evota.db"))}
    assert copied == kept | {"evota.db"}
    for name in kept:
        assert (tmp_path / "b" / name).read_bytes() == files[name], name
        assert (tmp_path / "b" / name).stat().st_mode & 0o777 == 0o600, name
    with sqlite3.connect(tmp_path / "b" / "evota.db") as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
    db.close()


async def test_a_failed_backup_is_one_line_and_leaves_no_partial_copy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "audit-anchors.jsonl").write_text('{"seq": 1, "hash": "x", "mac": "y"}\n')
    out = tmp_path / "b"
    nobody = "postgresql+asyncpg://evota:secret-pw@127.0.0.1:1/evota"  # nothing listens
    code, output = await evota_cli(
        "backup", str(out), "--data-dir", str(data), "--database-url", nobody,
        "--pg-dump", str(PG_BIN / "pg_dump"),
    )  # fmt: skip
    assert code == 1 and output.startswith("error: pg_dump failed:"), output
    assert output.count("\n") == 1 and "secret-pw" not in output, output
    assert not out.exists()
    code, output = await evota_cli(
        "backup", str(out), "--data-dir", str(data), "--database-url", "mysql://x/y"
    )
    assert code == 1 and "SQLite or PostgreSQL only" in output and not out.exists(), output
