"""One simulated charger: a strict OCPP client that behaves like a well-made station.

Everything a charger does runs as a few asyncio tasks (no threads), so thousands share one
event loop. The charger validates every message it sends and every answer and CALL it
receives against the official schemas, because a simulator that tolerates sloppy messages
hides the CSMS bugs it exists to find.

Time: intervals the charger chooses (heartbeats, meter values, session lengths, reboots) are
*simulated seconds*, divided by ``SimConfig.speed`` before sleeping; network limits (call
timeout, reconnect backoff) are real seconds, because they protect the CSMS, not the story.

Inbound CALLs go through the wire's dispatch table (action -> :data:`Handler`), so firmware
updates, remote commands and fault profiles add entries instead of touching the connection
code; :data:`AFTER_BOOT` hooks run after every accepted boot (e.g. to report a firmware
update's result). Firmware updates live in :mod:`evota.sim.firmware`, remote commands in
:mod:`evota.sim.control` (one module per OCPP functional block).

Protocols: the charger is one core (sessions, reboots, firmware, configuration) behind a
:class:`Wire`, the per-version adapter that spells what the core does as messages and owns the
version's dispatch table: :mod:`evota.sim.v16` (OCPP 1.6J) and :mod:`evota.sim.v201` register
theirs in :data:`WIRES`. The core never builds a payload.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import itertools
import random
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from evota.clock import Clock, SystemClock
from evota.ocpp import rpc
from evota.ocpp.errors import ErrorKind, RpcError
from evota.ocpp.schemas import SchemaSet
from evota.sim.fleet import CONNECTOR_FAULT_CODE, ChargerSpec
from evota.sim.tls import CSMS_ROOT_USES, TlsIdentity, mint

if TYPE_CHECKING:
    from evota.sim.control.keys import ConfigKey
    from evota.sim.control.state import ControlState
    from evota.sim.firmware import FirmwareAgent

log = structlog.get_logger("evota.sim")

USER_AGENT = "evota-sim/0.1"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Behaviour and timing shared by a fleet. ``sim`` seconds are divided by ``speed``."""

    speed: float = 1.0  # simulated seconds per real second
    session_rate: float = 0.0  # sessions per charger per simulated hour (Poisson arrivals)
    session_duration: tuple[float, float] = (900.0, 3600.0)  # sim s, uniform
    meter_interval: float = 60.0  # sim s between MeterValues during a session
    power_kw: float = 11.0  # charging power, drives Energy.Active.Import.Register
    heartbeat_default: float = 300.0  # sim s, when the CSMS answers interval 0
    boot_retry_default: float = 60.0  # sim s, for Pending/Rejected with interval 0 or a failed Boot
    reboot_delay: float = 1.0  # sim s offline during a Reset
    call_timeout: float = 30.0  # real s to wait for a CALLRESULT
    open_timeout: float = 10.0  # real s for the WebSocket handshake
    close_timeout: float = 2.0  # real s for the closing handshake
    backoff_initial: float = 1.0  # real s before the first reconnect
    backoff_max: float = 60.0  # real s cap of the exponential reconnect backoff
    ping_interval: float | None = 30.0  # real s between WebSocket pings (None: off)
    install_duration: float = 5.0  # sim s a firmware install takes (between Installing and reboot)
    download_retry_interval: float = 30.0  # sim s between download attempts without retryInterval
    download_timeout: float = 30.0  # real s of HTTP silence before a download attempt fails
    remote_session_duration: float = 4 * 3600.0  # sim s a RemoteStartTransaction session lasts
    upload_bytes: int = 8 * 1024  # size of a generated diagnostics or log file
    upload_timeout: float = 30.0  # real s of HTTP silence before an upload attempt fails
    # cards drivers present, drawn at random per session (provision them in evota's token
    # store); empty: a random SIM######## tag each time, which only a lab evota accepts
    id_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.session_rate < 0:
            raise ValueError("session_rate must not be negative")


@dataclass(slots=True)
class ChargerStats:
    """Counters for tests and the live summary; plain ints, cheap to keep for 20,000 chargers."""

    connects: int = 0  # WebSocket handshakes that succeeded
    connect_failures: int = 0  # handshakes refused or failed
    disconnects: int = 0  # established connections that ended (reboots included)
    last_http_status: int | None = None  # of the last refused handshake (401, 404, ...)
    last_error: str | None = None
    boots_sent: int = 0
    boots_accepted: int = 0
    reboots: int = 0
    messages_sent: int = 0  # every frame: CALLs, CALLRESULTs, CALLERRORs
    messages_received: int = 0
    calls_sent: Counter[str] = field(default_factory=Counter)  # by action
    calls_received: Counter[str] = field(default_factory=Counter)  # by action
    # codes of the last CALLERRORs received / sent (bounded, so a chatty CSMS cannot grow them)
    callerrors: deque[str] = field(default_factory=lambda: deque(maxlen=1000))
    errors_sent: deque[str] = field(default_factory=lambda: deque(maxlen=1000))
    invalid_results: int = 0  # schema-invalid or malformed CALLRESULTs/CALLERRORs
    unexpected_results: int = 0  # answers to no outstanding CALL (e.g. after a timeout)
    call_timeouts: int = 0
    authorize_rejected: int = 0
    transactions_started: int = 0
    transactions_completed: int = 0
    energy_wh: int = 0  # delivered in completed transactions
    certificates_installed: int = 0  # CertificateSigned answered Accepted
    certificates_rejected: int = 0  # CertificateSigned answered Rejected


# -- errors raised by SimulatedCharger.call -------------------------------------------------------


class CallFailed(Exception):
    """Our CALL got no usable answer."""


class NotConnected(CallFailed):
    pass


class CallTimeout(CallFailed):
    pass


class CallErrorReceived(CallFailed):
    def __init__(self, action: str, code: str, description: str) -> None:
        super().__init__(f"{action}: CALLERROR {code}: {description}")
        self.code = code
        self.description = description


class InvalidResult(CallFailed):
    pass


class _Refused(Exception):
    """The CSMS completed the handshake on terms we cannot use."""


# -- inbound CALL dispatch ----------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """A handler's answer; ``then`` runs after the CALLRESULT is on the wire (e.g. reboot)."""

    payload: dict[str, Any]
    then: Callable[[], Awaitable[None]] | None = None


#: Answers one CSMS-initiated action; payloads arrive schema-validated, replies are checked.
Handler = Callable[["SimulatedCharger", rpc.Call], Awaitable[Reply]]

#: Run (as a connection task) after every accepted boot, once the connectors are reported.
AFTER_BOOT: list[Callable[[SimulatedCharger], Coroutine[Any, Any, None]]] = []


def handles(action: str, table: dict[str, Handler]) -> Callable[[Handler], Handler]:
    """Register a handler for a CSMS-initiated action in a dispatch table."""

    def register(handler: Handler) -> Handler:
        table[action] = handler
        return handler

    return register


# -- the wire: one OCPP version's spelling of what the core does ------------------------------


class Wire(abc.ABC):
    """One OCPP version's spelling of what the core does (one instance per charger):
    :class:`evota.sim.v16.V16Wire`, :class:`evota.sim.v201.V201Wire`.

    Methods that send take the charger and call :meth:`SimulatedCharger.call`, so every
    message is schema-checked by the charger; methods returning ``(action, payload)`` leave
    the sending to the caller (the firmware outbox queues them while offline).
    """

    #: The WebSocket subprotocol, also ``ChargerSpec.protocol``.
    protocol: ClassVar[str]
    #: Boot on every connection (1.6), or only after a (re)boot (a 2.0.1 station).
    boot_every_connection: ClassVar[bool]
    #: Firmware statuses beyond 1.6 core (DownloadScheduled) even for unsigned updates.
    detailed_firmware: ClassVar[bool]

    @property
    def subprotocol(self) -> str:
        return self.protocol

    @property
    @abc.abstractmethod
    def spelling(self) -> dict[ErrorKind, str]:
        """Error codes as the version spells them in CALLERRORs."""

    @abc.abstractmethod
    def schemas(self) -> SchemaSet: ...

    @abc.abstractmethod
    def handlers(self) -> dict[str, Handler]:
        """The version's dispatch table (inbound action -> handler)."""

    async def booted(self, charger: SimulatedCharger, reason: str) -> None:
        """After an accepted boot (a connection task): what the version reports then."""
        return None  # nothing by default

    def allow_sessions_pending_update(self, charger: SimulatedCharger) -> bool:
        """Whether sessions may start while an update waits to install (2.0.1 can say so)."""
        return False

    def extra_configuration(self, charger: SimulatedCharger) -> dict[str, ConfigKey]:
        """Configuration the version adds to the 1.6 key set (2.0.1: its own variables)."""
        return {}

    # -- charger-initiated messages -------------------------------------------------------------
    @abc.abstractmethod
    def boot(self, charger: SimulatedCharger, reason: str) -> dict[str, Any]:
        """The BootNotification payload."""

    @abc.abstractmethod
    async def status(
        self, charger: SimulatedCharger, connector: int, status: str, error_code: str, force: bool
    ) -> None:
        """Report a connector status (the core speaks 1.6 statuses; 0 is the whole charger)."""

    @abc.abstractmethod
    def authorize_remote(self, charger: SimulatedCharger) -> bool:
        """Whether a remotely started session is authorized first."""

    @abc.abstractmethod
    async def authorize(self, charger: SimulatedCharger, txn: Transaction) -> bool: ...

    @abc.abstractmethod
    async def start(self, charger: SimulatedCharger, txn: Transaction) -> bool:
        """Open the transaction (sets its id); False: the CSMS refused the id tag."""

    @abc.abstractmethod
    async def meter(self, charger: SimulatedCharger, txn: Transaction) -> None: ...

    @abc.abstractmethod
    async def stop(
        self, charger: SimulatedCharger, txn: Transaction, reason: str, meter_stop: int
    ) -> None: ...

    @abc.abstractmethod
    def firmware_status(self, status: str, request_id: int | None) -> tuple[str, dict[str, Any]]:
        """The (action, payload) reporting a firmware status."""

    @abc.abstractmethod
    def security_event(
        self, charger: SimulatedCharger, kind: str, tech_info: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The (action, payload) of a security event; None where the charger has none."""


#: Protocol -> wire factory, filled by :mod:`evota.sim.v16` and :mod:`evota.sim.v201`.
WIRES: dict[str, Callable[[], Wire]] = {}


# -- the charger ------------------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    connector_id: int
    id_tag: str
    meter_start: int
    # 1.6: the CSMS's, set once StartTransaction is answered; 2.0.1: the charger's own
    transaction_id: int | str | None = None
    stop_reason: str = "PowerLoss"  # used if the charger loses the connection mid-session
    stop_requested: str | None = None  # a remote stop or unlock: end now with this reason
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set with stop_requested
    remote: bool = False  # started by a remote start request
    remote_start_id: int | None = None  # 2.0.1 RequestStartTransaction's id
    id_token_type: str = "ISO14443"  # 2.0.1 idToken type (an RFID card unless remote)
    seq_no: int = 0  # 2.0.1: the next TransactionEvent's sequence number


def basic_auth(identity: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{identity}:{key}".encode()).decode()


def charger_url(base_url: str, identity: str) -> str:
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(identity, safe='')}"


class SimulatedCharger:
    """An independent OCPP client (``spec.protocol``); :meth:`start` runs it until :meth:`stop`."""

    def __init__(
        self,
        spec: ChargerSpec,
        base_url: str,
        config: SimConfig | None = None,
        *,
        initial_delay: float = 0.0,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        schemas: SchemaSet | None = None,
        handlers: dict[str, Handler] | None = None,
        tls_url: str | None = None,
    ) -> None:
        """``tls_url`` (``wss://``) is where the charger connects once its security profile
        is 2 or 3 if ``base_url`` is plain ``ws://`` (after a profile switch)."""
        self.spec = spec
        self.url = charger_url(base_url, spec.identity)
        self.tls_url = charger_url(tls_url, spec.identity) if tls_url else None
        # The security profile the charger believes it is on (1.6 SWP / 2.0.1 A00).
        self.security_profile = spec.security_profile or (
            3 if spec.client_cert or spec.client_ca else 2 if base_url.startswith("wss://") else 1
        )
        self.tls = TlsIdentity(spec.client_cert, spec.client_key)
        self.offline_forever = False  # fault: never reconnects after a profile switch
        # 2.0.1 network connection profiles (evota.sim.control.network): slot -> (URL, profile),
        # the slots to fall back to when the current one cannot connect, and the fault's flag.
        self.network_slots: dict[int, tuple[str, int]] = {}
        self.network_fallbacks: list[tuple[str, int]] = []
        self.fail_next_connect = False
        self.certificate_problem: str | None = None  # why the last CertificateSigned failed
        self.config = config or SimConfig()
        self.initial_delay = initial_delay
        self.rng = rng or random.Random(spec.identity)
        self.clock: Clock = clock or SystemClock()
        factory = WIRES.get(spec.protocol)
        if factory is None:
            raise ValueError(f"protocol {spec.protocol!r} is not simulated (known: {list(WIRES)})")
        self.wire = factory()
        self.schemas = schemas or self.wire.schemas()
        self.handlers = self.wire.handlers() if handlers is None else handlers
        self.stats = ChargerStats()
        self.connected = False
        self.boot_status: str | None = None  # of the current connection's BootNotification
        self.heartbeat_interval = self.config.heartbeat_default
        self.connector_status: dict[int, str] = dict.fromkeys(range(spec.connectors + 1), "")
        self.meter_wh: dict[int, float] = {
            c: float(self.rng.randrange(0, 5_000_000)) for c in range(1, spec.connectors + 1)
        }
        self.transactions: dict[int, Transaction] = {}  # open, by connector
        self.last_call: rpc.Call | None = None  # last CALL received from the CSMS
        self.firmware_version = spec.firmware_version  # reported at boot; changed by updates
        self.firmware_state: str | None = None  # last firmware status reported
        self.firmware_history: list[str] = []  # every firmware status reported, in order
        self.firmware_request_id: int | None = None  # of the update that reported last
        self.firmware_agent: FirmwareAgent | None = None  # created by the first update request
        # While an update waits for sessions to end, idle connectors report Unavailable.
        self.hold_idle_connectors = False
        self.auth_key = spec.auth_key  # the AuthorizationKey configuration key may change it
        self.inoperative: set[int] = set()  # ChangeAvailability Inoperative (0: whole charger)
        # Connectors Faulted from power-up (fault profile); a reboot clears the resettable ones.
        self.connector_faults: set[int] = {
            *spec.faults.faulted_connectors,
            *spec.faults.stuck_connectors,
        }
        self.control: ControlState | None = None  # remote command state (evota.sim.control.state)
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._call_lock = asyncio.Lock()
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._hangup: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # tasks of the current connection
        self._background: set[asyncio.Task[Any]] = set()  # survive reconnects, end with stop()
        self._sessions: dict[int, asyncio.Task[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rebooting = False
        self._reconnecting = False
        self._opened = False
        self._failures = 0
        self.boot_reason = "PowerUp"  # of the next BootNotification (2.0.1 sends it)
        self._cycle_accepted = False  # booted and accepted since the last (re)boot

    # -- observable state ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.spec.identity

    @property
    def accepted(self) -> bool:
        return self.connected and self.boot_status == "Accepted"

    @property
    def transactions_completed(self) -> int:
        return self.stats.transactions_completed

    @property
    def in_session(self) -> bool:
        """A session is running or starting (its StartTransaction may still be in flight)."""
        return bool(self.transactions or self._sessions)

    @property
    def sessions_active(self) -> int:
        return len(self.transactions)

    @property
    def faulted(self) -> bool:
        """Booted into a firmware listed in ``spec.faults.bad_versions``: nothing works."""
        return self.firmware_version in self.spec.faults.bad_versions

    def idle_status(self, connector: int) -> tuple[str, str]:
        """(status, errorCode) of an idle connector, given faults and pending updates."""
        if self.faulted:
            return "Faulted", "OtherError"
        if connector in self.connector_faults:
            return "Faulted", CONNECTOR_FAULT_CODE
        if connector > 0 and self.firmware_version in self.spec.faults.unavailable_versions:
            return "Unavailable", "NoError"  # came up on this version, but cannot charge
        if connector in self.inoperative or 0 in self.inoperative:
            return "Unavailable", "NoError"
        if self.hold_idle_connectors and connector > 0:
            return "Unavailable", "NoError"
        return "Available", "NoError"

    # -- security profiles (evota.sim.tls) ------------------------------------------------------
    def csms_roots(self) -> list[str]:
        """The CSMS root certificates the charger checks the server with (InstallCertificate
        adds to them, DeleteCertificate removes)."""
        if self.control is None:
            return list(self.spec.ocpp_ca)
        return [pem for use, pem in self.control.certificates if use in CSMS_ROOT_USES]

    @property
    def connect_url(self) -> str:
        """Where the next connection goes: the TLS URL once on profile 2 or 3, if given."""
        if self.security_profile >= 2 and self.tls_url is not None:
            return self.tls_url
        return self.url

    def use_network(self, url: str, profile: int) -> None:
        """Connect with ``url`` (the full URL) on ``profile`` from the next connection on."""
        self.security_profile = profile
        if url.startswith("wss://"):
            self.tls_url = url
        else:
            self.url = url

    def _client_certificate(self) -> None:
        """Mint the client certificate from the fleet's CA the first time it is needed."""
        if self.tls.cert is not None or self.spec.client_ca is None:
            return
        from evota.sim.control.state import state  # the CpoName key names the organisation

        organization = state(self).setting("CpoName") or self.spec.organization
        expired = self.draw(self.spec.faults.expired_certificate)
        self.tls.cert, self.tls.key = mint(
            self.identity, organization, *self.spec.client_ca, self.clock.now(), expired=expired
        )

    def draw(self, rate: float) -> bool:
        """A fault drawn with this charger's generator; a rate of zero leaves it alone, so
        adding a fault to one charger does not change what the others do."""
        return rate > 0 and self.rng.random() < rate

    def reconnect(self) -> None:
        """Close the connection and open a new one at once (a new certificate or profile)."""
        if self._hangup is not None:
            self._reconnecting = True
            self._hangup.set()

    def __repr__(self) -> str:
        return (
            f"<SimulatedCharger {self.identity} connected={self.connected} "
            f"boot={self.boot_status} txns={self.stats.transactions_completed}>"
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping = False
            self.power_cycle("PowerUp")
            self._task = asyncio.create_task(self.run(), name=f"sim-{self.identity}")
        return self._task

    async def stop(self) -> None:
        """Disconnect (closing handshake included) and end every task of this charger."""
        self._stopping = True
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Connect, serve, and reconnect with capped exponential backoff plus jitter."""
        if self.initial_delay > 0:
            await asyncio.sleep(self.initial_delay)
        while not self._stopping:
            if self.offline_forever:
                await asyncio.get_running_loop().create_future()  # until stop() cancels us
            self._opened = False
            try:
                subprotocol = self.wire.subprotocol
                url = self.connect_url
                if self.fail_next_connect:  # fault: the new network profile does not work
                    self.fail_next_connect = False
                    raise _Refused(f"fault: no connection on profile {self.security_profile}")
                context = None
                if url.startswith("wss://"):
                    if self.security_profile == 3:
                        self._client_certificate()
                    context = self.tls.context(
                        self.csms_roots(), present=self.security_profile == 3
                    )
                # Profile 3 identifies the charger by its certificate: no Basic auth then.
                headers = {}
                if self.security_profile < 3:
                    headers["Authorization"] = basic_auth(self.identity, self.auth_key)
                async with connect(
                    url,
                    subprotocols=[Subprotocol(subprotocol)],
                    additional_headers=headers,
                    ssl=context,
                    compression=None,
                    proxy=None,
                    user_agent_header=USER_AGENT,
                    open_timeout=self.config.open_timeout,
                    close_timeout=self.config.close_timeout,
                    ping_interval=self.config.ping_interval,
                    ping_timeout=self.config.ping_interval,
                ) as ws:
                    if ws.subprotocol != subprotocol:
                        raise _Refused(f"CSMS selected subprotocol {ws.subprotocol!r}")
                    self._opened = True
                    self.network_fallbacks = []  # this profile works: no falling back from it
                    await self._serve(ws)
            except InvalidURI:
                raise
            except InvalidStatus as exc:
                self._disconnected(f"HTTP {exc.response.status_code}", exc.response.status_code)
            except (OSError, TimeoutError, ConnectionClosed, _Refused) as exc:
                self._disconnected(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a charger must survive anything the CSMS does
                log.warning("simulated charger error", charger_id=self.identity, error=repr(exc))
                self._disconnected(repr(exc))
            else:
                self._disconnected(None)
            if self._stopping:
                break
            if self._reconnecting:
                self._reconnecting = False
                continue
            if not self._opened and self.network_fallbacks:  # 2.0.1: the next priority slot
                self.use_network(*self.network_fallbacks.pop(0))
                continue
            if self._rebooting:
                self._rebooting = False
                self.stats.reboots += 1
                await self._sleep(self.config.reboot_delay)
                continue
            await asyncio.sleep(self._backoff())

    def _disconnected(self, error: str | None, http_status: int | None = None) -> None:
        if self._opened:
            self.stats.disconnects += 1
        else:
            self.stats.connect_failures += 1
        if error is not None:
            self.stats.last_error = error
        if http_status is not None:
            self.stats.last_http_status = http_status
        log.debug("simulated charger offline", charger_id=self.identity, error=error)

    def _backoff(self) -> float:
        """Equal jitter: uniform in [d/2, d], d doubling per failure up to ``backoff_max``."""
        cap = self.config.backoff_max
        delay = min(cap, self.config.backoff_initial * 2 ** min(self._failures, 30))
        self._failures += 1
        return self.rng.uniform(delay / 2, delay)

    async def _sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.config.speed)

    async def _sleep_unless(self, event: asyncio.Event, sim_seconds: float) -> float:
        """Sleep, or less if ``event`` is set meanwhile; returns the simulated seconds slept."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(0.0, sim_seconds) / self.config.speed):
                await event.wait()
        except TimeoutError:
            return sim_seconds
        return min(sim_seconds, (loop.time() - started) * self.config.speed)

    def charging_power_kw(self, connector: int) -> float:
        """The power a session draws now: the configured power, capped by charging profiles."""
        if self.control is None:
            return self.config.power_kw
        return self.control.power_kw(connector, self.config.power_kw)

    async def _serve(self, ws: ClientConnection) -> None:
        """One connection: boot, report, heartbeat, charge, until the socket or a reboot ends."""
        self._ws = ws
        self.connected = True
        self.boot_status = None
        self.stats.connects += 1
        hangup = self._hangup = asyncio.Event()
        try:
            receiver = self._spawn(self._receive(ws))
            receiver.add_done_callback(lambda _: hangup.set())
            self._spawn(self._boot_and_operate())
            await hangup.wait()
        finally:
            self.connected = False
            self._ws = None
            self._hangup = None
            if self._pending is not None and not self._pending[2].done():
                self._pending[2].set_exception(NotConnected("connection closed"))
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._sessions.clear()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that lives as long as the current connection."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def spawn_background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that survives disconnects and reboots (a firmware update); stop() ends it."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("simulated charger task failed", charger_id=self.identity, error=repr(exc))

    def drop_connection(self) -> None:
        """Lose the network (not a reboot): the socket closes and the charger reconnects."""
        if self._hangup is not None:
            self._hangup.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("simulated charger task failed", charger_id=self.identity, error=repr(exc))
            if self._hangup is not None:
                self._hangup.set()  # a broken charger drops the connection and starts over

    def power_cycle(self, reason: str) -> None:
        """The next connection is a (re)boot, announced with ``reason`` (2.0.1 boot reasons)."""
        self.boot_reason = reason
        self._cycle_accepted = False

    async def reboot(self, *, hard: bool = False, reason: str = "RemoteReset") -> None:
        """Reset: a soft reset ends sessions cleanly first; a hard one reports them after boot."""
        stop_reason = "HardReset" if hard else "SoftReset"
        for task in list(self._sessions.values()):
            task.cancel()
        await asyncio.gather(*self._sessions.values(), return_exceptions=True)
        for txn in self.transactions.values():
            txn.stop_reason = stop_reason
        if not hard:
            for txn in list(self.transactions.values()):
                await self._end_interrupted(txn)
        self.power_cycle(reason)
        self.connector_faults -= set(self.spec.faults.faulted_connectors)  # a reboot fixes them
        self._rebooting = True
        if self._hangup is not None:
            self._hangup.set()

    # -- after connecting ---------------------------------------------------------------------
    async def _boot_and_operate(self) -> None:
        booting = self.wire.boot_every_connection or not self._cycle_accepted
        if booting:
            await self._boot()
        else:  # 2.0.1: a reconnect without a reboot carries on without booting
            self.boot_status = "Accepted"
        self._failures = 0
        # Sessions cut off by a lost connection or a hard reset end now, as real chargers do.
        for txn in list(self.transactions.values()):
            await self._end_interrupted(txn)
        for connector in self.connector_status:
            with contextlib.suppress(CallErrorReceived, InvalidResult, CallTimeout):
                await self.send_status(connector, *self.idle_status(connector), force=booting)
        for hook in AFTER_BOOT:
            self._spawn(hook(self))
        if booting:
            self._spawn(self.wire.booted(self, self.boot_reason))
        self._spawn(self._heartbeats())
        if self.config.session_rate > 0:
            self._spawn(self._session_arrivals())

    async def _boot(self) -> None:
        """BootNotification until Accepted, retried after the interval the CSMS gave."""
        while True:
            self.stats.boots_sent += 1
            boot = self.wire.boot(self, self.boot_reason)
            try:
                answer = await self.call("BootNotification", boot)
            except CallFailed:
                await self._sleep(self.config.boot_retry_default)
                continue
            self.boot_status = answer["status"]
            interval = answer["interval"]
            if self.boot_status == "Accepted":
                break
            log.info("boot not accepted", charger_id=self.identity, status=self.boot_status)
            await self._sleep(interval if interval > 0 else self.config.boot_retry_default)
        self.stats.boots_accepted += 1
        self._cycle_accepted = True
        self.heartbeat_interval = interval if interval > 0 else self.config.heartbeat_default

    async def _end_interrupted(self, txn: Transaction) -> None:
        """Report the end of a session whose task was cut off; keep it only if we went offline."""
        if txn.transaction_id is None:  # StartTransaction never answered: nothing to stop
            self.transactions.pop(txn.connector_id, None)
            return
        try:
            await self._stop_transaction(txn, txn.stop_reason)
        except (CallErrorReceived, InvalidResult, CallTimeout) as exc:
            log.info("could not stop transaction", charger_id=self.identity, error=str(exc))
            self.transactions.pop(txn.connector_id, None)

    async def _heartbeats(self) -> None:
        while True:
            await self._sleep(self.heartbeat_interval)
            with contextlib.suppress(CallFailed):
                await self.call("Heartbeat", {})

    async def _session_arrivals(self) -> None:
        rate_per_sim_second = self.config.session_rate / 3600.0
        while True:
            await self._sleep(self.rng.expovariate(rate_per_sim_second))
            free = [
                c
                for c, status in self.connector_status.items()
                if c > 0
                and status == "Available"
                and c not in self.transactions
                and not self.hold_idle_connectors  # a firmware install is pending
            ]
            if free:
                self.begin_session(self.rng.choice(free))

    def begin_session(
        self,
        connector_id: int,
        id_tag: str | None = None,
        duration: float | None = None,
        *,
        remote: bool = False,
        remote_start_id: int | None = None,
        id_token_type: str | None = None,
    ) -> asyncio.Task[bool]:
        """Start a charging session now (for tests and demos); the task says if it completed.

        ``remote``: started by the CSMS (2.0.1 adds its ``remote_start_id``); ``id_token_type``
        is the 2.0.1 idToken type (default ``ISO14443``, an RFID card).
        """
        if not self.accepted:
            raise NotConnected(f"{self.identity} is not connected and accepted")
        if connector_id in self.transactions:
            raise ValueError(f"connector {connector_id} already has a session")
        if id_tag is None and self.config.id_tags:
            id_tag = self.rng.choice(self.config.id_tags)
        if id_tag is None:
            id_tag = f"SIM{self.rng.randrange(10**8):08d}"
        if duration is None:
            duration = self.rng.uniform(*self.config.session_duration)
        txn = Transaction(connector_id, id_tag, int(self.meter_wh[connector_id]))
        txn.remote, txn.remote_start_id = remote, remote_start_id
        if id_token_type is not None:
            txn.id_token_type = id_token_type
        task = self._spawn(self._session(txn, duration))
        self._sessions[connector_id] = task
        task.add_done_callback(lambda _: self._sessions.pop(connector_id, None))
        return task

    async def _session(self, txn: Transaction, duration: float) -> bool:
        connector = txn.connector_id
        self.transactions[connector] = txn
        try:
            await self.send_status(connector, "Preparing")
            authorize = not txn.remote or self.wire.authorize_remote(self)
            if authorize and not await self.wire.authorize(self, txn):
                self.stats.authorize_rejected += 1
                del self.transactions[connector]
                await self.send_status(connector, *self.idle_status(connector))
                return False
            accepted = await self.wire.start(self, txn)
            self.stats.transactions_started += 1
            if not accepted:
                await self._stop_transaction(txn, "DeAuthorized")
                await self.send_status(connector, "Finishing")
                await self.send_status(connector, *self.idle_status(connector))
                return False
            # Broken firmware or a faulted connector: the session ends at once, without energy.
            if self.faulted or connector in self.connector_faults:
                await self._stop_transaction(txn, "Other")
                await self.send_status(connector, *self.idle_status(connector))
                return False
            if self.firmware_version in self.spec.faults.degraded_versions:
                # A subtle regression: booted and healthy, but the session trips a
                # ground-fault check; the connector recovers at once.
                await self._stop_transaction(txn, "Other")
                await self.send_status(connector, "Faulted", "GroundFailure")
                await self.send_status(connector, *self.idle_status(connector))
                return False
            await self.send_status(connector, "Charging")
            elapsed = 0.0
            while elapsed < duration and txn.stop_requested is None:
                step = min(self.config.meter_interval, duration - elapsed)
                slept = await self._sleep_unless(txn.wake, step)
                elapsed += slept
                self.meter_wh[connector] += self.charging_power_kw(connector) * slept / 3.6
                if elapsed < duration and txn.stop_requested is None:
                    with contextlib.suppress(CallErrorReceived, InvalidResult, CallTimeout):
                        await self.wire.meter(self, txn)
            await self._stop_transaction(txn, txn.stop_requested or "EVDisconnected")
            await self.send_status(connector, "Finishing")
            await self.send_status(connector, *self.idle_status(connector))
            return True
        except NotConnected:
            return False  # the open transaction is stopped after the next boot
        except (CallErrorReceived, InvalidResult, CallTimeout) as exc:
            # The CSMS refused or ignored part of the session: drop it, keep the charger usable.
            log.info("session aborted", charger_id=self.identity, error=str(exc))
            self.transactions.pop(connector, None)
            with contextlib.suppress(CallFailed):
                await self.send_status(connector, *self.idle_status(connector))
            return False

    async def _stop_transaction(self, txn: Transaction, reason: str) -> None:
        meter_stop = int(self.meter_wh[txn.connector_id])
        await self.wire.stop(self, txn, reason, meter_stop)
        self.transactions.pop(txn.connector_id, None)
        self.stats.transactions_completed += 1
        self.stats.energy_wh += meter_stop - txn.meter_start

    async def send_status(
        self, connector: int, status: str, error_code: str = "NoError", *, force: bool = False
    ) -> None:
        """Set and report a connector's (1.6) status; ``force``: even if the wire would not
        repeat an unchanged one (2.0.1 reports changes; after a boot and on a trigger, all)."""
        self.connector_status[connector] = status
        await self.wire.status(self, connector, status, error_code, force)

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- RPC ------------------------------------------------------------------------------------
    async def call(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        validate: bool = True,
    ) -> dict[str, Any]:
        """Send one CALL and return its validated CALLRESULT payload.

        At most one CALL is outstanding: callers queue on a lock. Raises a :class:`CallFailed`
        subclass when no usable answer arrives; ``validate=False`` lets fault profiles send
        invalid requests on purpose (their answers are still validated).
        """
        if validate:
            self.schemas.validate_request(action, payload, "-")  # our bug if this raises
        async with self._call_lock:
            ws = self._ws
            if ws is None:
                raise NotConnected(f"{self.identity} is not connected")
            message_id = str(next(self._ids))
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, action, future)
            try:
                await ws.send(rpc.encode_call(message_id, action, payload).decode())
                self.stats.messages_sent += 1
                self.stats.calls_sent[action] += 1
                async with asyncio.timeout(timeout or self.config.call_timeout):
                    return await future
            except TimeoutError:
                self.stats.call_timeouts += 1
                log.info("call timed out", charger_id=self.identity, action=action)
                raise CallTimeout(f"{action}: no answer in time") from None
            except ConnectionClosed:
                raise NotConnected(f"{self.identity}: connection closed") from None
            finally:
                self._pending = None
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" noise after a send error

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self.stats.messages_received += 1
                await self._on_frame(frame)

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            message = rpc.decode(frame)
        except RpcError as err:
            await self._on_malformed(frame, err)
            return
        if isinstance(message, rpc.Call):
            self.stats.calls_received[message.action] += 1
            self.last_call = message
            self._spawn(self._on_call(message))
            return
        pending = self._pending
        if pending is None or pending[0] != message.message_id or pending[2].done():
            self.stats.unexpected_results += 1
            log.info("stray answer", charger_id=self.identity, id=message.message_id)
            return
        _, action, future = pending
        if isinstance(message, rpc.CallError):
            self.stats.callerrors.append(message.code)
            log.info("CALLERROR", charger_id=self.identity, action=action, code=message.code)
            future.set_exception(CallErrorReceived(action, message.code, message.description))
            return
        try:
            self.schemas.validate_response(action, message.payload, message.message_id)
        except RpcError as err:
            self.stats.invalid_results += 1
            log.warning(
                "invalid CALLRESULT", charger_id=self.identity, action=action, error=err.description
            )
            future.set_exception(InvalidResult(f"{action}: {err.description}"))
            return
        future.set_result(message.payload)

    async def _on_malformed(self, frame: str | bytes, err: RpcError) -> None:
        """Answer a broken CALL with a CALLERROR; count a broken answer and fail its CALL."""
        try:
            parsed = orjson.loads(frame)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and parsed and parsed[0] == rpc.CALL:
            code = self.wire.spelling[err.kind]
            self.stats.errors_sent.append(code)
            await self._send(rpc.encode_error(err.message_id, code, err.description))
            return
        self.stats.invalid_results += 1
        log.warning("malformed frame from CSMS", charger_id=self.identity, error=err.description)
        pending = self._pending
        if pending is not None and pending[0] == err.message_id and not pending[2].done():
            pending[2].set_exception(InvalidResult(f"{pending[1]}: {err.description}"))

    async def _on_call(self, call: rpc.Call) -> None:
        """Dispatch one CSMS CALL; runs in its own task so CALLs may cross ours."""
        try:
            if call.action not in self.schemas.actions:
                raise RpcError(ErrorKind.NOT_IMPLEMENTED, f"unknown action {call.action!r}")
            self.schemas.validate_request(call.action, call.payload, call.message_id)
            handler = self.handlers.get(call.action)
            if handler is None:
                raise RpcError(ErrorKind.NOT_SUPPORTED, f"{call.action} is not supported")
            reply = await handler(self, call)
            try:
                self.schemas.validate_response(call.action, reply.payload, call.message_id)
            except RpcError as err:
                log.error("simulator built an invalid reply", action=call.action, error=str(err))
                raise RpcError(ErrorKind.INTERNAL, "internal error building the reply") from None
        except RpcError as err:
            code = self.wire.spelling[err.kind]
            self.stats.errors_sent.append(code)
            await self._send(rpc.encode_error(call.message_id, code, err.description, err.details))
            return
        except Exception as exc:
            log.error("inbound call handler failed", action=call.action, error=repr(exc))
            self.stats.errors_sent.append("InternalError")
            await self._send(rpc.encode_error(call.message_id, "InternalError", "handler failed"))
            return
        await self._send(rpc.encode_result(call.message_id, reply.payload))
        if reply.then is not None:
            await reply.then()

    async def _send(self, data: bytes) -> None:
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data.decode())
            self.stats.messages_sent += 1
