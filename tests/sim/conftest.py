"""A throwaway central system for simulator tests: real WebSockets on loopback, no evota.

It checks Basic auth at the upgrade (401 wrong key, 404 unknown identity; over TLS
(``tls=``) a verified client certificate whose CN is the identity stands in for it),
validates every
CALL against the 1.6 (or, with ``protocol="ocpp2.0.1"``, the 2.0.1) schemas, and the answers
to its own CALLs too, records everything, flags a second CALL from a charger while the first
is unanswered, and lets a test override any answer or send CALLs of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from evota.gateway.auth import parse_basic
from evota.ocpp import rpc
from evota.ocpp.errors import RpcError
from evota.ocpp.schemas import SchemaSet, v16, v201
from evota.sim.charger import SimConfig
from evota.sim.fleet import ChargerSpec, derive_key

SEED = "test-seed"


def spec(identity: str = "CP-1", connectors: int = 2, **kw: Any) -> ChargerSpec:
    return ChargerSpec(
        identity=identity,
        auth_key=kw.pop("auth_key", derive_key(SEED, identity)),
        serial_number="SN-" + identity[:20],
        connectors=connectors,
        **kw,
    )


def fast(**kw: Any) -> SimConfig:
    """Timing for tests: 1 simulated minute is 10 ms."""
    values: dict[str, Any] = {
        "speed": 6000.0,
        "call_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "ping_interval": None,
        "close_timeout": 0.5,
    }
    values.update(kw)
    return SimConfig(**values)


# An answer override returns a payload, NEVER (do not answer), or CallErrorAnswer.
NEVER = object()


@dataclass
class CallErrorAnswer:
    code: str
    description: str = "test"


Override = Callable[[str, dict[str, Any]], Any]


@dataclass
class Link:
    """The CSMS side of one charger connection."""

    identity: str
    ws: ServerConnection
    unanswered: int = 0
    pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


class FakeCsms:
    def __init__(
        self,
        keys: dict[str, str] | None = None,
        *,
        boot_statuses: list[str] | None = None,
        interval: int = 60,
        answer_delay: float = 0.0,
        protocol: str = "ocpp1.6",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.protocol = protocol
        self.tls = tls
        # (identity, the client certificate's CN, its serial) per TLS handshake
        self.peers: list[tuple[str, str | None, int | None]] = []
        self.authorization: list[str | None] = []  # the Authorization header of each upgrade
        self.schemas: SchemaSet = v16() if protocol == "ocpp1.6" else v201()
        self.keys = keys  # identity -> key; None: any identity, key must be derive_key(SEED, id)
        self.boot_statuses = list(boot_statuses or [])  # consumed first, then Accepted
        self.interval = interval
        self.answer_delay = answer_delay
        self.overrides: dict[str, Override] = {}
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # (identity, action, payload)
        self.invalid: list[str] = []  # schema violations in what chargers sent (and answered)
        self.overlaps = 0  # CALLs that arrived while the same charger's previous one was open
        self.handshakes: list[tuple[str, int, float]] = []  # (identity, HTTP status, when)
        self.links: dict[str, Link] = {}
        self.ever_connected: set[str] = set()
        self._txn_ids = itertools.count(100)
        self._call_ids = itertools.count(1)
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ocpp"

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            ssl=self.tls,
            process_request=self._check,
            subprotocols=[self.protocol],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[index]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- queries used by tests ---------------------------------------------------------------
    def actions(self, identity: str | None = None) -> list[str]:
        return [a for i, a, _ in self.received if identity is None or i == identity]

    def payloads(self, action: str, identity: str | None = None) -> list[dict[str, Any]]:
        return [
            p for i, a, p in self.received if a == action and (identity is None or i == identity)
        ]

    async def call(
        self, identity: str, action: str, payload: dict[str, Any], timeout: float = 2.0
    ) -> Any:
        """Send a CALL to a charger; returns rpc.CallResult or rpc.CallError."""
        try:  # tests send invalid CALLs on purpose; only valid ones have answers to check
            self.schemas.validate_request(action, payload, "-")
            check = action in self.schemas.actions
        except (RpcError, OSError):
            check = False
        link = self.links[identity]
        message_id = f"csms-{next(self._call_ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.pending[message_id] = future
        await link.ws.send(rpc.encode_call(message_id, action, payload).decode())
        answer = await asyncio.wait_for(future, timeout)
        if check and isinstance(answer, rpc.CallResult):
            try:
                self.schemas.validate_response(action, answer.payload, message_id)
            except RpcError as err:
                self.invalid.append(f"{action} answer: {err.description}")
        return answer

    async def send_raw(self, identity: str, text: str, message_id: str) -> asyncio.Future[Any]:
        """Send any frame; the returned future gets the charger's answer to ``message_id``."""
        link = self.links[identity]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.pending[message_id] = future
        await link.ws.send(text)
        return future

    async def drop(self, identity: str) -> None:
        """Close a charger's connection from the CSMS side."""
        await self.links[identity].ws.close()

    # -- server internals --------------------------------------------------------------------
    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        identity = unquote(request.path.removeprefix("/ocpp/"))
        credentials = parse_basic(request.headers.get("Authorization"))
        expected = derive_key(SEED, identity) if self.keys is None else self.keys.get(identity)
        cn = None
        if self.tls is not None:
            peer = connection.transport.get_extra_info("peercert") or {}
            names = [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"]
            cn = names[0] if names else None
            serial = peer.get("serialNumber")
            self.peers.append((identity, cn, int(serial, 16) if serial else None))
        self.authorization.append(request.headers.get("Authorization"))
        status = HTTPStatus.SWITCHING_PROTOCOLS
        if expected is None:
            status = HTTPStatus.NOT_FOUND
        elif cn != identity and credentials != (identity, expected):
            status = HTTPStatus.UNAUTHORIZED
        self.handshakes.append((identity, int(status), time.monotonic()))
        if status != HTTPStatus.SWITCHING_PROTOCOLS:
            return connection.respond(status, status.phrase)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        identity = unquote(ws.request.path.removeprefix("/ocpp/"))
        link = self.links[identity] = Link(identity, ws)
        self.ever_connected.add(identity)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for frame in ws:
                message = rpc.decode(frame)
                if isinstance(message, rpc.Call):
                    if link.unanswered:
                        self.overlaps += 1
                    link.unanswered += 1
                    self.received.append((identity, message.action, message.payload))
                    try:
                        self.schemas.validate_request(
                            message.action, message.payload, message.message_id
                        )
                    except RpcError as err:
                        self.invalid.append(f"{message.action}: {err.description}")
                    task = asyncio.create_task(self._answer(link, message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif message.message_id in link.pending:
                    link.pending.pop(message.message_id).set_result(message)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            if self.links.get(identity) is link:
                del self.links[identity]

    async def _answer(self, link: Link, call: rpc.Call) -> None:
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        override = self.overrides.get(call.action)
        answer = override(link.identity, call.payload) if override else self._default(call)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is NEVER:
            link.unanswered -= 1  # the charger times out; that is not an overlap
            return
        if answer is None:
            answer = {}
        link.unanswered -= 1
        if isinstance(answer, CallErrorAnswer):
            data = rpc.encode_error(call.message_id, answer.code, answer.description)
        else:
            data = rpc.encode_result(call.message_id, answer)
        with suppress(ConnectionClosed):
            await link.ws.send(data.decode())

    def _default(self, call: rpc.Call) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if self.protocol != "ocpp1.6":
            return self._default_201(call, now)
        match call.action:
            case "BootNotification":
                status = self.boot_statuses.pop(0) if self.boot_statuses else "Accepted"
                return {"status": status, "currentTime": now, "interval": self.interval}
            case "Heartbeat":
                return {"currentTime": now}
            case "Authorize" | "StopTransaction":
                return {"idTagInfo": {"status": "Accepted"}}
            case "StartTransaction":
                return {"transactionId": next(self._txn_ids), "idTagInfo": {"status": "Accepted"}}
            case _:
                return {}

    def _default_201(self, call: rpc.Call, now: str) -> dict[str, Any]:
        match call.action:
            case "BootNotification":
                status = self.boot_statuses.pop(0) if self.boot_statuses else "Accepted"
                return {"status": status, "currentTime": now, "interval": self.interval}
            case "Heartbeat":
                return {"currentTime": now}
            case "Authorize":
                return {"idTokenInfo": {"status": "Accepted"}}
            case "TransactionEvent" if "idToken" in call.payload:
                return {"idTokenInfo": {"status": "Accepted"}}
            case "DataTransfer":
                return {"status": "UnknownVendorId"}
            case "SignCertificate":
                return {"status": "Rejected"}
            case _:
                return {}


@pytest.fixture
async def csms() -> AsyncIterator[FakeCsms]:
    server = FakeCsms()
    await server.start()
    yield server
    await server.stop()


def server_tls(server_cert: Any, server_key: Any, client_ca: Any) -> ssl.SSLContext:
    """A server context: this certificate, client certificates optional but checked against
    ``client_ca`` when presented (profile 2 and 3 chargers on one port)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@pytest.fixture
async def csms201() -> AsyncIterator[FakeCsms]:
    server = FakeCsms(protocol="ocpp2.0.1")
    await server.start()
    yield server
    await server.stop()


@contextmanager
def csms_in_thread(**kwargs: Any) -> Iterator[FakeCsms]:
    """A FakeCsms on its own event loop thread, for code that calls asyncio.run itself."""
    loop = asyncio.new_event_loop()
    server = FakeCsms(**kwargs)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
