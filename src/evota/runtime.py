"""Wires evota together in one process: database, fleet service, OCPP gateway, HTTP API."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock, SystemClock
from evota.config import Settings
from evota.firmware.storage import LocalFirmwareStore
from evota.fleet.service import FleetService
from evota.gateway.server import Gateway
from evota.store import db
from evota.store.models import ApiToken, Charger

log = structlog.get_logger("evota")

BOOTSTRAP_TOKEN_NAME = "bootstrap-admin"


def token_hash(token: str) -> str:
    # API tokens are 256-bit random strings: a plain SHA-256 is a sound way to store them.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    engine: AsyncEngine = field(init=False)
    fleet: FleetService = field(init=False)
    gateway: Gateway = field(init=False)
    firmware_store: LocalFirmwareStore = field(init=False)
    http_port: int = 0
    ocpp_port: int = 0
    generated_admin_token: str | None = None
    _uvicorn: uvicorn.Server | None = None
    _http_task: asyncio.Task[Any] | None = None

    async def start(self, serve_http: bool = True) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = db.create_engine(s.resolved_database_url())
        await db.migrate(self.engine)
        await self._reset_connected()
        await self._bootstrap_admin_token()
        self.firmware_store = LocalFirmwareStore(s.data_dir / "firmware")
        self.fleet = FleetService(
            self.engine,
            self.clock,
            open_registration=s.registration == "open",
            heartbeat_interval=s.heartbeat_interval,
            pending_interval=s.pending_interval,
            last_seen_interval=s.last_seen_flush_seconds,
            write_interval=s.write_interval,
        )
        self.fleet.writer.start()
        self.gateway = Gateway(
            self.fleet, call_timeout=s.call_timeout, max_message_size=s.max_message_size
        )
        self.ocpp_port = await self.gateway.start(s.host, s.ocpp_port)
        if serve_http:
            await self._start_http()
        # Everything allocated so far (modules, FastAPI app, schemas) lives for the whole run:
        # keep it out of the cyclic GC's full collections, which otherwise stall the gateway.
        gc.collect()
        gc.freeze()

    async def _start_http(self) -> None:
        from evota.api.app import create_app

        app = create_app(self)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        self._uvicorn = server
        self._http_task = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
            await asyncio.sleep(0.01)
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("http listener started", host=self.settings.host, port=self.http_port)

    async def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._http_task:
                await self._http_task
        await self.gateway.stop()
        await self.fleet.writer.stop()
        await self._reset_connected()
        await self.engine.dispose()

    async def on_firmware_revoked(self, firmware_id: str) -> None:
        """A revoked image must not be downloaded or installed any more: stop its jobs."""

    async def _reset_connected(self) -> None:
        """A single node owns every connection: after a restart none are open."""
        async with self.engine.begin() as conn:
            await conn.execute(update(Charger).where(Charger.connected).values(connected=False))

    async def _bootstrap_admin_token(self) -> None:
        configured = (
            self.settings.admin_token.get_secret_value() if self.settings.admin_token else None
        )
        async with self.engine.begin() as conn:
            existing = (
                await conn.execute(select(ApiToken).where(ApiToken.name == BOOTSTRAP_TOKEN_NAME))
            ).first()
            if configured:
                values = {"token_hash": token_hash(configured), "role": "admin", "revoked_at": None}
                if existing:
                    await conn.execute(
                        update(ApiToken)
                        .where(ApiToken.name == BOOTSTRAP_TOKEN_NAME)
                        .values(**values)
                    )
                else:
                    await conn.execute(
                        insert(ApiToken).values(
                            name=BOOTSTRAP_TOKEN_NAME, created_at=self.clock.now(), **values
                        )
                    )
            elif not existing:
                token = "evota_" + secrets.token_urlsafe(32)
                await conn.execute(
                    insert(ApiToken).values(
                        name=BOOTSTRAP_TOKEN_NAME,
                        token_hash=token_hash(token),
                        role="admin",
                        created_at=self.clock.now(),
                    )
                )
                self.generated_admin_token = token
