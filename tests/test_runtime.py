"""Start-up behaviour: the bootstrap admin token, reconciliation of connections, log masking."""

from __future__ import annotations

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
