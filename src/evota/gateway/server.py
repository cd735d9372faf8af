"""The OCPP-J listener, the registry of connected chargers and the command path into it."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import structlog
from websockets.frames import CloseCode

from evota import metrics
from evota.control import commands
from evota.control.commands import ChargerOffline, Command, CommandResult
from evota.fleet.service import FleetService
from evota.gateway.connection import ChargerConnection

log = structlog.get_logger("evota.gateway")


class Gateway:
    def __init__(
        self,
        fleet: FleetService,
        *,
        path_prefix: str = "/ocpp/",
        call_timeout: float = 30.0,
        max_message_size: int = 256 * 1024,
        idle_timeout: float | None = None,
        handshake_timeout: float = 10.0,
        sweep_interval: float = 10.0,
    ) -> None:
        self.fleet = fleet
        self.path_prefix = path_prefix
        self.call_timeout = call_timeout
        self.max_message_size = max_message_size
        # A charger that says nothing for this long is gone (missed heartbeats + slack).
        self.idle_timeout = idle_timeout or fleet.heartbeat_interval * 2 + 60
        self.handshake_timeout = handshake_timeout
        self.sweep_interval = sweep_interval
        self.connections: dict[str, ChargerConnection] = {}
        self.sockets: set[ChargerConnection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ChargerConnection(self), host, port, backlog=4096, reuse_address=True
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="gateway-sweeper")
        bound = self._server.sockets[0].getsockname()[1]
        log.info("ocpp listener started", host=host, port=bound)
        return int(bound)

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._server:
            self._server.close()
        for conn in list(self.sockets):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.sleep(0.05)
        for conn in list(self.sockets):
            if conn.transport:
                conn.transport.abort()
        if self._server:
            await self._server.wait_closed()

    # -- registry ----------------------------------------------------------------------------
    def attach(self, conn: ChargerConnection) -> None:
        assert conn.state is not None and conn.dialect is not None
        old = self.connections.get(conn.state.id)
        self.connections[conn.state.id] = conn
        if old is not None and old is not conn:
            log.info("charger reconnected; closing the old connection", charger_id=conn.state.id)
            old.close(CloseCode.NORMAL_CLOSURE, "replaced by a new connection")
        else:
            metrics.CONNECTED.inc()
        self.fleet.connected(conn.state, conn.dialect.subprotocol)
        log.info(
            "charger connected",
            charger_id=conn.state.id,
            protocol=conn.dialect.subprotocol,
            peer=conn.peer,
        )

    def detach(self, conn: ChargerConnection, reason: str) -> None:
        assert conn.state is not None
        if self.connections.get(conn.state.id) is not conn:
            return  # a newer connection replaced this one; the charger is still online
        del self.connections[conn.state.id]
        metrics.CONNECTED.dec()
        self.fleet.disconnected(conn.state, reason)
        log.info("charger disconnected", charger_id=conn.state.id, reason=reason)

    def is_connected(self, charger_id: str) -> bool:
        return charger_id in self.connections

    # -- command path ------------------------------------------------------------------------
    async def send(
        self, charger_id: str, command: Command, timeout: float | None = None
    ) -> CommandResult:
        """Send a domain command and return the charger's typed answer.

        Raises ChargerOffline, CommandTimeout, CommandRejected (CALLERROR) or CommandError.
        """
        conn = self.connections.get(charger_id)
        if conn is None or conn.dialect is None:
            raise ChargerOffline(charger_id, "charger is not connected")
        if conn.dialect.subprotocol == "ocpp2.0.1":
            command = await self._with_transaction_ids(charger_id, command)
        try:
            action, payload = conn.dialect.encode_command(command)
        except commands.CommandError as exc:
            exc.charger_id = exc.charger_id or charger_id
            raise
        answer = await conn.call(action, payload, timeout or self.call_timeout)
        return conn.dialect.decode_result(command, answer)

    async def _with_transaction_ids(self, charger_id: str, command: Command) -> Command:
        """Commands may name a session by evota's id; a 2.0.1 charger knows its own id."""
        match command:
            case commands.RemoteStopTransaction(transaction_id=int(session_id)):
                external = await self.fleet.external_transaction_id(charger_id, session_id)
                if external is not None:
                    return dataclasses.replace(command, transaction_id=external)
            case commands.SetChargingProfile(profile=profile) if isinstance(
                profile.transaction_id, int
            ):
                external = await self.fleet.external_transaction_id(
                    charger_id, profile.transaction_id
                )
                if external is not None:
                    new = dataclasses.replace(profile, transaction_id=external)
                    return dataclasses.replace(command, profile=new)
        return command

    # -- housekeeping ------------------------------------------------------------------------
    async def _sweep(self) -> None:
        """Close silent sockets and stalled handshakes; one pass for all, no per-socket timer."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = time.monotonic()
            for conn in list(self.sockets):
                limit = self.idle_timeout if conn.state else self.handshake_timeout
                if now - conn.last_rx > limit and conn.transport:
                    log.info("closing silent connection", charger_id=conn.charger_id)
                    conn.transport.abort()
            metrics.WRITE_BACKLOG.set(self.fleet.writer.backlog)
