"""Shared fixtures: a real evota (real sockets on loopback, a real SQLite file or PostgreSQL).

Set ``EVOTA_TEST_POSTGRES_URL`` (``scripts/test`` does) to run database tests on PostgreSQL too;
with ``EVOTA_REQUIRE_POSTGRES=1`` a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import base64
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import structlog
import websockets
from websockets.asyncio.client import ClientConnection

from evota.config import Settings
from evota.firmware import signing
from evota.runtime import Runtime
from tests.pki_fixtures import pki  # noqa: F401  (the test certificates, issue 16)
from tests.redis_fixtures import redis_server, redis_url  # noqa: F401  (cluster tests, issue 15)
from tests.s3_fixtures import s3, s3_server  # noqa: F401  (S3 firmware store, issue 15)

# Server logs go to the process's own stdout (fd 1, which pytest captures), never to whatever
# ``sys.stdout`` is at that moment: CLI tests run click's CliRunner in a thread beside a running
# evota, CliRunner swaps ``sys.stdout`` process-wide, and a server log line would otherwise land
# in the JSON a test parses from the command's output.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stdout__))

# Hypothesis's per-example deadline is wall time: on a busy machine (the suite runs on several
# workers) it fails properties that hold. Each test keeps its own example count.
# Locally each run explores new examples (that is how a chart axis of 0..5e-324 was found);
# CI (.ci/run sets EVOTA_HYPOTHESIS_DERANDOMIZE=1) runs the same examples every time, so a
# run's result depends on the code alone, and a new find comes from a developer's run.
hypothesis.settings.register_profile("evota", deadline=None)
hypothesis.settings.register_profile("evota-ci", deadline=None, derandomize=True)
hypothesis.settings.load_profile(
    "evota-ci" if os.environ.get("EVOTA_HYPOTHESIS_DERANDOMIZE") == "1" else "evota"
)

pytest_plugins = ["tests.hang_report"]  # a hung test's asyncio stacks, before its timeout

TOKEN = "test-admin-token-0123456789"
PG_URL = os.environ.get("EVOTA_TEST_POSTGRES_URL")


def _backends() -> list[Any]:
    marks = []
    if not PG_URL:
        if os.environ.get("EVOTA_REQUIRE_POSTGRES") == "1":
            raise RuntimeError("EVOTA_REQUIRE_POSTGRES=1 but EVOTA_TEST_POSTGRES_URL is unset")
        marks = [pytest.mark.skip(reason="EVOTA_TEST_POSTGRES_URL not set")]
    return ["sqlite", pytest.param("postgresql", marks=marks)]


@pytest.fixture(params=_backends())
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database for each test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'evota.db'}"
        return
    import asyncpg  # type: ignore[import-untyped]

    assert PG_URL
    admin = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = "evota_test_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'evota.db'}"


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "http_port": 0,
        "ocpp_port": 0,
        "download_port": 0,
        "database_url": database_url,
        "admin_token": TOKEN,
        "last_seen_flush_seconds": 0.2,
        "heartbeat_interval": 60,
        "call_timeout": 5.0,
        # Four-eyes approvals are on by default in evota; tests of other features run without
        # them, and the approval tests (tests/test_approvals.py) switch them on explicitly.
        "approval_actions": [],
        # evota answers id tokens from its token store by default (unknown cards: Invalid);
        # tests of other features charge with any card, as a lab would. The token tests
        # (tests/test_id_tokens.py) and the end-to-end fleet test use the token store.
        "authorize_all": True,
        # evota reads a charger's configuration a second after its boot. Tests that drive a
        # charger by hand (raw frames, one CALL and its answer) must not find that read in
        # place of their answer on a slow run; the configuration tests set a short delay.
        "config_boot_delay_seconds": 3600.0,
        # The same for the certificate inventory after a boot (GetInstalledCertificateIds);
        # tests/test_charger_certificates.py sets it to 0.
        "cert_inventory_boot_delay_seconds": 3600.0,
    }
    values.update(overrides)
    return Settings(**values)


async def start_runtime(
    tmp_path: Path, database_url: str, clock: Any = None, **overrides: Any
) -> Runtime:
    settings = make_settings(tmp_path, database_url, **overrides)
    runtime = Runtime(settings) if clock is None else Runtime(settings, clock=clock)
    await runtime.start()
    return runtime


@pytest.fixture
async def evota(tmp_path: Path, database_url: str) -> AsyncIterator[Runtime]:
    """evota on every configured database backend."""
    runtime = await start_runtime(tmp_path, database_url)
    yield runtime
    await runtime.stop()


@pytest.fixture
async def evota_sqlite(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    """evota on SQLite only, for protocol tests where the database backend does not matter."""
    runtime = await start_runtime(tmp_path, sqlite_url)
    yield runtime
    await runtime.stop()


def api_client(runtime: Runtime, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=15
    )


async def provision(runtime: Runtime, charger_id: str, key: str, **extra: Any) -> dict[str, Any]:
    async with api_client(runtime) as api:
        r = await api.post("/api/v1/chargers", json={"id": charger_id, "auth_key": key, **extra})
        assert r.status_code == 201, r.text
        return r.json()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def connect(
    runtime: Runtime,
    identity: str,
    key: str | None,
    subprotocols: list[str] | None = None,
) -> ClientConnection:
    headers = {"Authorization": basic(identity, key)} if key is not None else {}
    return await websockets.connect(
        f"ws://127.0.0.1:{runtime.ocpp_port}/ocpp/{identity}",
        subprotocols=subprotocols if subprotocols is not None else ["ocpp1.6"],  # type: ignore[arg-type]
        additional_headers=headers,
        compression=None,
        open_timeout=5,
    )


@dataclass
class Keys:
    ca_key: bytes
    ca_cert: bytes
    key: bytes
    cert: bytes


@pytest.fixture(scope="session")
def keys() -> Keys:
    ca_key, ca_cert = signing.generate_ca("Evota Test Root", "Evota")
    key, cert = signing.generate_signing_key(
        "Evota Release", "Evota", ca_key=ca_key, ca_cert=ca_cert
    )
    return Keys(ca_key, ca_cert, key, cert)


class ShiftedClock:
    """Real time moved on demand (expiry, idle timeouts, windows) without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)

    def move_to(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset.total_seconds()


async def session_for(
    runtime: Runtime,
    username: str,
    roles: list[str],
    *,
    sites: list[str] | None = None,
    regions: list[str] | None = None,
    tags: list[str] | None = None,
    mfa: bool = True,
) -> str:
    """A logged-in operator with ``roles`` (one grant each, same scope): seeded straight into
    the tables the real authentication reads, so tests of access control do not depend on
    the login flow (tested on its own in tests/test_auth.py)."""
    import secrets
    from datetime import timedelta

    from sqlalchemy import insert, select

    from evota.operators.credentials import token_hash
    from evota.store.models import Grant, LoginSession, User

    now = runtime.clock.now()
    async with runtime.engine.begin() as conn:
        user_id = (await conn.execute(select(User.id).where(User.username == username))).scalar()
        if user_id is None:
            user_id = str(uuid.uuid4())
            await conn.execute(
                insert(User).values(
                    id=user_id,
                    username=username,
                    password_hash="$argon2id$not-a-real-hash",
                    disabled=False,
                    mfa_enabled=mfa,
                    recovery_codes=[],
                    failed_logins=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            for role in roles:
                await conn.execute(
                    insert(Grant).values(
                        user_id=user_id,
                        role=role,
                        sites=sites or [],
                        regions=regions or [],
                        tags=tags or [],
                    )
                )
        token = "sess_" + secrets.token_urlsafe(24)
        await conn.execute(
            insert(LoginSession).values(
                token_hash=token_hash(token),
                user_id=user_id,
                csrf_token=secrets.token_urlsafe(16),
                mfa=mfa,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=8),
            )
        )
    return token
