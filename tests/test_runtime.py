"""Start-up behaviour: the bootstrap admin token, reconciliation of connections, log masking."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import update

from evota.logging import _mask_secrets
from evota.store.models import Charger
from tests.conftest import api_client, provision, start_runtime


async def test_generated_admin_token_is_shown_once_and_works(tmp_path, sqlite_url):
    runtime = await start_runtime(tmp_path, sqlite_url, admin_token=None)
    token = runtime.generated_admin_token
    try:
        assert token and token.startswith("evota_")
        async with api_client(runtime, token=token) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200
    finally:
        await runtime.stop()
    again = await start_runtime(tmp_path, sqlite_url, admin_token=None)
    try:
        assert again.generated_admin_token is None  # not regenerated, not shown again
        async with api_client(again, token=token) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200
    finally:
        await again.stop()


async def test_configured_admin_token_replaces_the_bootstrap_token(tmp_path, sqlite_url):
    first = await start_runtime(tmp_path, sqlite_url, admin_token="first-token-0123456789")
    await first.stop()
    second = await start_runtime(tmp_path, sqlite_url, admin_token="second-token-0123456789")
    try:
        async with api_client(second, token="first-token-0123456789") as api:
            assert (await api.get("/api/v1/sites")).status_code == 401
        async with api_client(second, token="second-token-0123456789") as api:
            assert (await api.get("/api/v1/sites")).status_code == 200
    finally:
        await second.stop()


async def test_restart_marks_every_charger_disconnected(tmp_path, sqlite_url):
    runtime = await start_runtime(tmp_path, sqlite_url)
    await provision(runtime, "CP-stale", "0123456789abcdef")
    async with runtime.engine.begin() as conn:  # as if the process had died while connected
        await conn.execute(update(Charger).values(connected=True))
    await runtime.stop()
    runtime = await start_runtime(tmp_path, sqlite_url)
    try:
        async with api_client(runtime) as api:
            page = (await api.get("/api/v1/chargers", params={"connected": "true"})).json()
        assert page["total"] == 0
        async with runtime.engine.connect() as conn:
            from sqlalchemy import select

            assert (await conn.execute(select(Charger.connected))).scalar_one() is False
    finally:
        await runtime.stop()


def test_log_lines_never_carry_secrets():
    event = {
        "event": "x",
        "auth_key": "k" * 20,
        "token": "t",
        "Authorization": "Basic abc",
        "charger_id": "CP-1",
    }
    masked = _mask_secrets(None, "info", dict(event))
    assert masked["auth_key"] == masked["token"] == masked["Authorization"] == "***"
    assert masked["charger_id"] == "CP-1"


async def test_data_directory_database_keys_and_files_are_private(tmp_path):
    """Everything under the data directory is 0700/0600, even with a permissive umask: the
    database, the download-token, upload-token and audit keys, firmware and uploaded files."""
    import os
    import stat

    import httpx

    async def chunks() -> AsyncIterator[bytes]:
        yield b"firmware image"

    old = os.umask(0o000)
    try:
        runtime = await start_runtime(tmp_path, None)  # SQLite in the data directory
        try:
            await runtime.firmware_store.put(chunks(), max_bytes=100)
            await provision(runtime, "CP-files", "0123456789abcdef")
            location = runtime.uploads.url("CP-files", "diagnostics")
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.put(f"{location}/diag.txt", content=b"diagnostics")
                assert r.status_code == 201, r.text
            data_dir = runtime.settings.data_dir
            modes = {  # while running: SQLite's -wal and -shm files exist now
                str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
                for p in [data_dir, *data_dir.rglob("*")]
            }
        finally:
            await runtime.stop()
    finally:
        os.umask(old)
    names = {p.rsplit("/", 1)[-1] for p in modes}
    assert {
        "evota.db",
        "evota.db-wal",
        "download-token.key",
        "upload-token.key",
        "uploads",
    } <= names
    assert any(
        n.endswith(".key") and n not in ("download-token.key", "upload-token.key") for n in names
    ), names  # the audit head key
    wrong = {
        path: oct(mode)
        for path, mode in modes.items()
        if mode != (0o700 if (tmp_path / path).is_dir() else 0o600)
    }
    assert wrong == {}


async def test_an_existing_world_readable_data_directory_is_tightened(tmp_path):
    """A data directory and SQLite file an earlier version left 0755/0644 become private."""
    import os
    import stat

    runtime = await start_runtime(tmp_path, None)
    await runtime.stop()
    data_dir = runtime.settings.data_dir
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "evota.db", 0o644)
    runtime = await start_runtime(tmp_path, None)
    await runtime.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "evota.db").stat().st_mode) == 0o600
