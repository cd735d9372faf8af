"""The OCPP-J listener, the registry of connected chargers and the command path into it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import structlog
from websockets.frames import CloseCode

from evota import metrics
from evota.clock import Clock, SystemClock
from evota.control import commands
from evota.control.commands import ChargerOffline, Command, CommandResult
from evota.fleet.service import FleetService
from evota.gateway.connection import ChargerConnection
from evota.gateway.limits import (
    AuthFailures,
    Exhausted,
    Network,
    PreAuthPool,
    SharedFailures,
)
from evota.gateway.tls import TlsConfig

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
        max_preauth: int = 512,
        max_preauth_per_address: int = 32,
        auth_failures: AuthFailures | None = None,
        on_auth_failures: Callable[[Exhausted], Awaitable[object]] | None = None,
        shared_auth_failures: SharedFailures | None = None,
        preauth_min_age: float = 2.0,
        trusted_proxies: tuple[Network, ...] = (),
        clock: Clock | None = None,
        tls: TlsConfig | None = None,
        client_cert_header: str | None = None,
        on_tls_reload_failed: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.fleet = fleet
        self.path_prefix = path_prefix
        self.call_timeout = call_timeout
        self.max_message_size = max_message_size
        # A charger that says nothing for this long is gone (missed heartbeats + slack).
        self.idle_timeout = idle_timeout or fleet.heartbeat_interval * 2 + 60
        # From accept to an authenticated upgrade: a total deadline, not an idle timeout.
        self.handshake_timeout = handshake_timeout
        self.sweep_interval = sweep_interval
        self.connections: dict[str, ChargerConnection] = {}
        self.sockets: set[ChargerConnection] = set()
        self.clock = clock or SystemClock()  # monotonic: pre-auth ages, failed-key windows
        self.preauth: PreAuthPool[ChargerConnection] = PreAuthPool(
            max_preauth, max_preauth_per_address, preauth_min_age
        )
        self.auth_failures = auth_failures or AuthFailures(10, 50, 60.0)
        # In a cluster the failed-key windows are the cluster's (evota.cluster.limits).
        self.shared_auth_failures = shared_auth_failures
        # Proxies whose X-Forwarded-For names the charger's address (limits.client_source).
        self.trusted_proxies = trusted_proxies
        # Called when failed keys fill a window (the runtime raises the alert).
        self.on_auth_failures = on_auth_failures
        self._alerting: set[asyncio.Task[object]] = set()
        # Security profiles 2 and 3 (evota.gateway.tls, docs/security-profiles.md): the TLS
        # listener's context and client-certificate trust, and the header a trusted proxy
        # forwards a verified client certificate in (None: proxies forward none).
        self.tls = tls
        self.client_cert_header = client_cert_header
        self.on_tls_reload_failed = on_tls_reload_failed
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, serving: bool = True) -> int:
        """Bind the ``ws://`` listener; ``serving=False``: accept only after :meth:`serve`."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ChargerConnection(self),
            host,
            port,
            backlog=4096,
            reuse_address=True,
            start_serving=serving,
        )
        self._start_sweeper()
        bound = self._server.sockets[0].getsockname()[1]
        log.info("ocpp listener started", host=host, port=bound)
        return int(bound)

    async def serve(self) -> None:
        """Start accepting on listeners bound with ``serving=False`` (cluster mode: once
        what a charger says has somewhere to go, evota.cluster.events)."""
        for server in (self._server, self._tls_server):
            if server is not None and not server.is_serving():
                await server.start_serving()

    async def start_tls(self, host: str, port: int, *, serving: bool = True) -> int:
        """The ``wss://`` listener (profiles 2 and 3): the same connections over TLS."""
        assert self.tls is not None and self.tls.context is not None
        loop = asyncio.get_running_loop()
        self._tls_server = await loop.create_server(
            lambda: ChargerConnection(self, secure=True),
            host,
            port,
            backlog=4096,
            reuse_address=True,
            ssl=self.tls.context,
            ssl_handshake_timeout=self.handshake_timeout,
            start_serving=serving,
        )
        self._start_sweeper()
        bound = self._tls_server.sockets[0].getsockname()[1]
        log.info(
            "ocpp tls listener started",
            host=host,
            port=bound,
            certificate_expires=str(self.tls.server_not_after),
            client_certificates=self.tls.trust is not None,
        )
        return int(bound)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="gateway-sweeper")

    def reload_tls(self) -> str | None:
        """Load the TLS files again (SIGHUP, or a changed file seen by the sweep). A bad set
        keeps the one in use; the reason is logged, returned and alerted once."""
        if self.tls is None:
            return None
        problem = self.tls.reload()
        if problem is None:
            log.info(
                "tls certificates reloaded",
                certificate_expires=str(self.tls.server_not_after),
            )
            return None
        log.error("tls certificates not reloaded; the previous ones stay in use", error=problem)
        if self.on_tls_reload_failed is not None:
            task = asyncio.get_running_loop().create_task(self._report_tls(problem))
            self._alerting.add(task)
            task.add_done_callback(self._alerting.discard)
        return problem

    async def _report_tls(self, problem: str) -> None:
        assert self.on_tls_reload_failed is not None
        try:
            await self.on_tls_reload_failed(problem)
        except Exception:
            log.exception("could not raise the tls reload alert")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._alerting:  # alerts being raised are written, not lost
            await asyncio.gather(*self._alerting, return_exceptions=True)
        for server in (self._server, self._tls_server):
            if server:
                server.close()
        for conn in list(self.sockets):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.sleep(0.05)
        for conn in list(self.sockets):
            if conn.transport:
                conn.transport.abort()
        for server in (self._server, self._tls_server):
            if server:
                await server.wait_closed()

    # -- before authentication ---------------------------------------------------------------
    def opened(self, conn: ChargerConnection) -> None:
        """A new socket: pending until authenticated, with a deadline and a place in the pool."""
        now = self.clock.monotonic()
        for victim in self.preauth.add(conn, conn.source, now, per_source=not conn.via_proxy):
            if victim is conn:
                log.info("pre-auth connections at their cap; refused", peer=conn.peer)
                conn.refuse()
                return
            log.info("pre-auth connection dropped to make room", peer=victim.peer)
            victim.evict()
        conn.arm_deadline(self.handshake_timeout)

    def preauth_done(self, conn: ChargerConnection) -> None:
        """Upgraded with valid credentials, or gone: no longer counts as pending."""
        conn.disarm_deadline()
        self.preauth.discard(conn)

    def auth_failed(self, identity: str, source: str) -> asyncio.Task[None] | None:
        """Count a failed authentication. Shared windows are counted by the returned task,
        which the handshake awaits before it answers, so the charger's next attempt (on any
        node) already sees the failure."""
        if self.shared_auth_failures is not None:
            return asyncio.get_running_loop().create_task(self._shared_failed(identity, source))
        self._filled(self.auth_failures.failed(identity, source, self.clock.monotonic()))
        return None

    async def _shared_failed(self, identity: str, source: str) -> None:
        assert self.shared_auth_failures is not None
        try:
            self._filled(await self.shared_auth_failures.failed(identity, source))
        except Exception:
            log.exception("could not count a failed charger authentication")

    def _filled(self, windows: list[Exhausted]) -> None:
        for filled in windows:
            log.warning(
                "repeated failed charger authentications",
                subject=filled.subject,
                failures=filled.failures,
                window_seconds=filled.window,
            )
            if self.on_auth_failures is not None:
                task = asyncio.get_running_loop().create_task(self._report(filled))
                self._alerting.add(task)
                task.add_done_callback(self._alerting.discard)

    async def _report(self, filled: Exhausted) -> None:
        assert self.on_auth_failures is not None
        try:
            await self.on_auth_failures(filled)
        except Exception:
            log.exception("could not raise the failed-authentication alert", subject=filled.subject)

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

    async def with_transaction_ids(self, charger_id: str, command: Command) -> Command:
        """What ``send`` sends a 2.0.1 charger (evota.cluster.routing encodes it elsewhere)."""
        return await self._with_transaction_ids(charger_id, command)

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
        """Close silent sockets; one pass for all, no per-socket timer. (Handshakes have their
        own deadline timer; this pass is the backstop for them, counted from the accept.)"""
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = time.monotonic()
            for conn in list(self.sockets):
                if conn.state:
                    stale = now - conn.last_rx > self.idle_timeout
                else:
                    stale = now - conn.opened_at > self.handshake_timeout
                if stale and conn.transport:
                    log.info("closing silent connection", charger_id=conn.charger_id)
                    conn.transport.abort()
            metrics.WRITE_BACKLOG.set(self.fleet.writer.backlog)
            if self.tls is not None and self.tls.changed():
                self.reload_tls()
