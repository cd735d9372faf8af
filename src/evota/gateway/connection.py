"""One charger's WebSocket connection: the websockets sans-I/O protocol driven by an
asyncio ``Protocol``, with no task per connection, so 10,000 idle chargers cost little memory.

Inbound text frames are decoded, checked and answered here; the answer to every bad frame is
the CALLERROR the spec asks for, and the connection stays open. Outbound CALLs go through
:meth:`ChargerConnection.call`, one at a time, each with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog
from cryptography import x509
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from evota import metrics
from evota.control.commands import ChargerOffline, CommandError, CommandRejected, CommandTimeout
from evota.fleet.charger import ChargerState
from evota.fleet.events import REPLY_TYPES
from evota.fleet.security_profiles import Channel
from evota.gateway import auth, frames
from evota.gateway.frames import FrameError, FrameReader
from evota.gateway.limits import client_source, is_trusted, source_of
from evota.ocpp import identity as identities
from evota.ocpp import rpc
from evota.ocpp.dialect import Dialect, choose
from evota.ocpp.errors import V16_SPELLING, V201_SPELLING, ErrorKind, RpcError
from evota.pki import identity as certificates

if TYPE_CHECKING:
    from evota.gateway.server import Gateway

log = structlog.get_logger("evota.gateway")

KNOWN_CODES = frozenset(V16_SPELLING.values()) | frozenset(V201_SPELLING.values())
_ids = itertools.count(1)
# Unknown identity, wrong key and a key the policy refuses get this one answer (the server
# log keeps the difference): an attacker must not learn which identities exist.
AUTH_FAILED = "HTTP Basic authentication failed"
# A client certificate that fails evota's checks, and a connection below the charger's
# security profile (the log and the security event say which).
CERT_REFUSED = "client certificate refused"
BELOW_PROFILE = "connection below the charger's security profile"
# An OCPP upgrade request is well under 1 KiB; websockets alone would buffer up to 128 header
# lines of 8 KiB each (1 MiB) per pending socket, times the pre-auth cap.
MAX_REQUEST_HEAD = 16 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n\r\ntry later"
)


def _select_none(protocol: ServerProtocol, offered: Any) -> None:
    return None  # evota negotiates the subprotocol itself, see ChargerConnection._handshake


class ChargerConnection(asyncio.Protocol):
    __slots__ = (
        "_closing",
        "_deadline",
        "_head_bytes",
        "_pending",
        "_send_lock",
        "dialect",
        "gateway",
        "last_rx",
        "opened_at",
        "peer",
        "reader",
        "secure",
        "source",
        "state",
        "transport",
        "via_proxy",
        "ws",
    )

    def __init__(self, gateway: Gateway, secure: bool = False) -> None:
        self.gateway = gateway
        self.secure = secure  # accepted on the TLS listener (profiles 2 and 3)
        self.ws: ServerProtocol | None = ServerProtocol(
            extensions=None,  # no permessage-deflate: it costs ~100 KiB of zlib state per socket
            select_subprotocol=_select_none,
            max_size=gateway.max_message_size,
        )
        self.transport: asyncio.Transport | None = None
        self.state: ChargerState | None = None
        self.dialect: Dialect | None = None
        self.last_rx = self.opened_at = time.monotonic()
        self.peer = ""
        self.source = ""  # what the pre-auth and failed-key limits count by
        self.via_proxy = False  # the peer is a trusted proxy (EVOTA_OCPP_TRUSTED_PROXIES)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self.reader: FrameReader | None = None  # set once the upgrade succeeded
        self._closing = False
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._send_lock: asyncio.Lock | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.source = source_of(str(peer[0])) if peer else "?"
        self.via_proxy = bool(peer) and is_trusted(str(peer[0]), self.gateway.trusted_proxies)
        self.gateway.sockets.add(self)
        self.gateway.opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        reader = self.reader
        if reader is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD and self.transport is not None:
                log.info("upgrade request too large; closing", peer=self.peer)
                metrics.HANDSHAKES.labels("431").inc()
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
            if self.ws is not None:
                self.ws.receive_data(data)
                self._process_events()
            return
        try:
            received = reader.feed(data)
        except FrameError as exc:
            log.info("websocket protocol error", charger_id=self.charger_id, reason=exc.reason)
            self.close(exc.code, exc.reason)
            return
        for item in received:
            opcode = item.opcode
            if opcode == frames.OP_TEXT:
                if not self._closing:
                    self._on_message(item.data)
            elif opcode == frames.OP_PING:
                self._write(frames.encode(frames.OP_PONG, item.data))
            elif opcode == frames.OP_CLOSE:
                self._on_close_frame(item.data)

    def eof_received(self) -> bool | None:
        if self.reader is None and self.ws is not None:
            self.ws.receive_eof()
            self._process_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.sockets.discard(self)
        self.gateway.preauth_done(self)  # gone: free its pre-auth slot
        if self._pending is not None:
            _, _, fut = self._pending
            if not fut.done():
                fut.set_exception(
                    ChargerOffline(self.charger_id, "connection closed before the charger answered")
                )
        if self.state is not None:
            self.gateway.detach(self, reason=str(exc) if exc else "closed")

    # -- helpers -----------------------------------------------------------------------------
    @property
    def charger_id(self) -> str:
        return self.state.id if self.state else "?"

    def arm_deadline(self, seconds: float) -> None:
        """The upgrade must be complete by then, however the peer trickles its bytes."""
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._deadline_passed)

    def disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport is not None and self.reader is None:
            log.info("handshake deadline passed; closing", peer=self.peer)
            metrics.HANDSHAKES.labels("deadline").inc()
            self.transport.abort()

    def refuse(self) -> None:
        """Too many connections are mid-handshake: answer 503 at once (without reading the
        request) so the charger retries with its backoff."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            metrics.HANDSHAKES.labels("503").inc()
            transport.write(_BUSY)
            transport.close()

    def evict(self) -> None:
        """Dropped to make room under the pre-auth caps (see evota.gateway.limits)."""
        self.disarm_deadline()
        if self.transport is not None and not self.transport.is_closing():
            metrics.HANDSHAKES.labels("evicted").inc()
            self.transport.abort()

    def _flush(self) -> None:
        """Send what websockets produced during the handshake."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.ws.close_expected():
            transport.close()

    def _write(self, frame: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; the socket is dropped if the peer does not answer."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.reader is None:
            transport.close()
            return
        if not self._closing:
            self._closing = True
            transport.write(frames.encode_close(code, reason))
            asyncio.get_running_loop().call_later(2.0, transport.close)

    def _on_close_frame(self, payload: bytes) -> None:
        """Answer the charger's close (its code echoed, or the error its frame is) and drop."""
        try:
            code, reason = frames.parse_close(payload)
        except FrameError as exc:
            log.info("websocket protocol error", charger_id=self.charger_id, reason=exc.reason)
            answer, why = exc.code, exc.reason
        else:
            log.debug("charger closed", charger_id=self.charger_id, code=code, reason=reason)
            answer = CloseCode.NORMAL_CLOSURE if code == frames.CLOSE_NO_STATUS else code
            why = ""
        if not self._closing:
            self._closing = True
            self._write(frames.encode_close(answer, why))
        if self.transport is not None:
            self.transport.close()

    def _send(self, data: bytes) -> None:
        if not self._closing:
            self._write(frames.encode(frames.OP_TEXT, data))

    def _process_events(self) -> None:
        assert self.ws is not None
        for event in self.ws.events_received():
            if isinstance(event, Request):
                asyncio.get_running_loop().create_task(self._handshake(event))
        self._flush()

    # -- handshake ---------------------------------------------------------------------------
    async def _handshake(self, request: Request) -> None:
        assert self.ws is not None
        response, identity, password, dialect = self._check_request(request)
        if self.via_proxy:  # failed keys count against the charger's address, not the proxy's
            host = self.peer.rsplit(":", 1)[0]
            forwarded = request.headers.get("X-Forwarded-For")
            self.source = client_source(host, forwarded, self.gateway.trusted_proxies)
        channel = Channel(tls=self.secure)
        if response is None:
            shared = self.gateway.shared_auth_failures
            if shared is None:
                wait = self.gateway.auth_failures.blocked(
                    identity, self.source, self.gateway.clock.monotonic()
                )
            else:
                wait = await shared.blocked(identity, self.source)
            response = self._throttled(identity, wait)
        counting: asyncio.Task[None] | None = None  # a failure counted in shared windows
        if response is None:
            response, channel = self._channel(request, identity)
            if response is not None:  # a refused client certificate counts as a failure
                counting = self.gateway.auth_failed(identity, self.source)
            elif password is None and not channel.certificate:
                response = self._reject(
                    HTTPStatus.UNAUTHORIZED, "HTTP Basic authentication required"
                )
        if response is None:
            try:
                outcome = await self.gateway.fleet.authenticate(identity, password, channel)
            except Exception:
                log.exception("charger authentication failed", charger_id=identity)
                outcome = None
            if outcome is None:
                response = self._reject(HTTPStatus.SERVICE_UNAVAILABLE, "try again later")
            elif outcome.downgrade:
                response = self._reject(HTTPStatus.FORBIDDEN, BELOW_PROFILE)
                log.warning(
                    "charger refused: downgrade attempt",
                    charger_id=identity,
                    status=403,
                    reason=outcome.reason,
                    peer=self.peer,
                )
                self.gateway.fleet.downgrade_attempt(identity, outcome.reason, self.peer)
                counting = self.gateway.auth_failed(identity, self.source)
            elif outcome.state is None:
                response = self._reject(HTTPStatus.UNAUTHORIZED, AUTH_FAILED)
                log.info(
                    "charger refused",
                    charger_id=identity,
                    status=401,
                    reason=outcome.reason,  # "unknown charger", "wrong authorization key", …
                    peer=self.peer,
                )
                counting = self.gateway.auth_failed(identity, self.source)
            else:
                response = self.ws.accept(request)
                if dialect is not None:
                    response.headers["Sec-WebSocket-Protocol"] = dialect.subprotocol
                self.state = outcome.state
                self.dialect = dialect
                log.debug("charger security", charger_id=identity, profile=channel.profile)
        if counting is not None:  # counted before the answer: the next attempt sees it
            await counting
        if self.transport is None or self.transport.is_closing():
            return
        metrics.HANDSHAKES.labels(str(response.status_code)).inc()
        self.ws.send_response(response)
        self._flush()
        if response.status_code != 101:
            return
        # Upgraded: from here on frames.FrameReader parses, and websockets' state is freed.
        self.reader = FrameReader(self.gateway.max_message_size)
        self.ws = None
        self.gateway.preauth_done(self)
        if self.dialect is None:
            # No acceptable subprotocol: complete the handshake without one, then close.
            self.state = None
            self.close(CloseCode.PROTOCOL_ERROR, "no supported OCPP subprotocol offered")
            return
        assert self.state is not None
        self.gateway.attach(self)

    def _throttled(self, identity: str, wait: float | None) -> Response | None:
        """429 while the identity or the source has used up its failed attempts (checked
        before the database is asked, so a flood of guesses costs nothing there)."""
        if wait is None:
            return None
        log.info(
            "charger refused: too many failed authentications",
            charger_id=identity,
            peer=self.peer,
            retry_after=round(wait, 1),
        )
        response = self._reject(
            HTTPStatus.TOO_MANY_REQUESTS, "too many failed authentications; retry later"
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response

    def _check_request(
        self, request: Request
    ) -> tuple[Response | None, str, str | None, Dialect | None]:
        path = request.path.split("?", 1)[0]
        prefix = self.gateway.path_prefix
        if not path.startswith(prefix) or len(path) <= len(prefix):
            return self._reject(HTTPStatus.NOT_FOUND, "no such endpoint"), "", "", None
        identity = unquote(path[len(prefix) :])
        problem = identities.problem(identity)
        if problem is not None:
            # Logged as received: evota.logging escapes control characters in every field.
            log.info(
                "charger refused: invalid identity",
                identity=identity,
                reason=problem,
                peer=self.peer,
            )
            return self._reject(HTTPStatus.NOT_FOUND, "invalid charger identity"), "", "", None
        offered = [
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
        ]
        dialect = choose(offered)
        header = request.headers.get("Authorization")
        credentials = auth.parse_basic(header)
        if header is None:  # profile 3 may leave Basic out: the certificate decides
            return None, identity, None, dialect
        if credentials is None or credentials[0] != identity:
            response = self._reject(HTTPStatus.UNAUTHORIZED, "HTTP Basic authentication required")
            return response, "", "", None
        return None, identity, credentials[1], dialect

    def _channel(self, request: Request, identity: str) -> tuple[Response | None, Channel]:
        """What the connection proves (TLS, a client certificate for ``identity``), or the
        403 for a certificate that fails the checks. On the TLS listener the certificate is
        the TLS peer's; on the plain listener only a trusted proxy may vouch for TLS
        (``X-Forwarded-Proto: https``) and forward the certificate it verified; from anyone
        else both headers are ignored."""
        gateway = self.gateway
        tls, cert = self.secure, None
        header = gateway.client_cert_header
        if self.secure:
            ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der:
                try:
                    cert = x509.load_der_x509_certificate(der)
                except certificates.UNREADABLE:  # OpenSSL took it; cryptography cannot read it
                    return self._cert_refused(identity, "unreadable certificate"), Channel(tls)
        elif self.via_proxy:
            tls = request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
            forwarded = request.headers.get(header) if header else None
            if forwarded:
                try:
                    cert = certificates.from_header(forwarded)
                except certificates.IdentityError as exc:
                    return self._cert_refused(identity, str(exc)), Channel(tls=tls)
        elif header and request.headers.get(header):
            log.warning(
                "client certificate header from an untrusted peer ignored",
                charger_id=identity,
                peer=self.peer,
            )
        if cert is None:
            return None, Channel(tls=tls)
        trust = gateway.tls.trust if gateway.tls is not None else None
        if trust is None:
            problem: str | None = "no charger CA is configured (EVOTA_OCPP_CHARGER_CA)"
        else:
            problem = certificates.problem(cert, identity, trust, gateway.clock.now())
        if problem is not None:
            return self._cert_refused(identity, problem), Channel(tls=tls)
        return None, Channel(tls=True, certificate=True)  # a client certificate means TLS

    def _cert_refused(self, identity: str, reason: str) -> Response:
        log.warning(
            "charger refused: client certificate",
            charger_id=identity,
            status=403,
            reason=reason,
            peer=self.peer,
        )
        return self._reject(HTTPStatus.FORBIDDEN, CERT_REFUSED)

    def _reject(self, status: HTTPStatus, text: str) -> Response:
        assert self.ws is not None
        response = self.ws.reject(status, text)
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="evota", charset="UTF-8"'
        return response

    # -- messages ----------------------------------------------------------------------------
    def _on_message(self, data: bytes | bytearray | memoryview) -> None:
        if self.state is None or self.dialect is None:
            return
        started = time.perf_counter()
        try:
            message = rpc.decode(data)
        except RpcError as exc:
            self._send_error(exc, "(unparsable)")
            return
        if type(message) is rpc.Call:
            self._on_call(message, started)
        elif type(message) is rpc.CallResult or type(message) is rpc.CallError:
            self._on_answer(message)

    def _send_error(self, exc: RpcError, action: str) -> None:
        assert self.dialect is not None
        code = self.dialect.code(exc.kind)
        metrics.callerrors[code, "out"] += 1
        log.info(
            "callerror sent",
            charger_id=self.charger_id,
            action=action,
            code=code,
            description=exc.description,
            message_id=exc.message_id,
        )
        self._send(rpc.encode_error(exc.message_id, code, exc.description, exc.details))

    def _on_call(self, call: rpc.Call, started: float) -> None:
        dialect = self.dialect
        state = self.state
        assert dialect is not None and state is not None
        action = call.action
        known = action in dialect.charger_actions
        metrics.messages[action if known else "(other)", "in", "call"] += 1
        try:
            if not known:
                if action in dialect.schemas.actions:
                    raise RpcError(
                        ErrorKind.NOT_SUPPORTED,
                        f"evota does not accept {action} from a charger",
                        call.message_id,
                    )
                raise RpcError(
                    ErrorKind.NOT_IMPLEMENTED, f"unknown action {action[:64]!r}", call.message_id
                )
            if not state.accepted and action not in dialect.pre_accept_actions:
                raise RpcError(
                    ErrorKind.SECURITY,
                    f"{action} before the charger is Accepted by a BootNotification",
                    call.message_id,
                )
            dialect.schemas.validate_request(action, call.payload, call.message_id)
            if call.nul:
                rpc.refuse_nul(call)  # PropertyConstraintViolation naming the field
            event = dialect.decode_event(action, call.payload)
            reply = self.gateway.fleet.handle(state, event)
        except RpcError as exc:
            self.gateway.fleet.seen(state)
            self._send_error(exc, action if known else "(other)")
            return
        except Exception:
            log.exception("handler failed", charger_id=state.id, action=action)
            self._send_error(
                RpcError(ErrorKind.INTERNAL, "internal error", call.message_id), action
            )
            return
        if type(reply) not in REPLY_TYPES:  # a coroutine: the answer needs the database
            asyncio.get_running_loop().create_task(self._answer_later(call, reply, started))
        else:
            self._answer(call, reply, started)

    async def _answer_later(self, call: rpc.Call, reply: Any, started: float) -> None:
        try:
            result = await reply
        except Exception:
            log.exception("handler failed", charger_id=self.charger_id, action=call.action)
            self._send_error(
                RpcError(ErrorKind.INTERNAL, "internal error", call.message_id), call.action
            )
            return
        self._answer(call, result, started)

    def _answer(self, call: rpc.Call, reply: Any, started: float) -> None:
        dialect = self.dialect
        assert dialect is not None
        if self.transport is None or self.transport.is_closing():
            return
        payload = dialect.encode_reply(call.action, reply)
        try:
            dialect.schemas.validate_response(call.action, payload, call.message_id)
        except RpcError as exc:
            log.error("evota built an invalid answer", action=call.action, error=exc.description)
            self._send_error(
                RpcError(ErrorKind.INTERNAL, "internal error", call.message_id), call.action
            )
            return
        self._send(rpc.encode_result(call.message_id, payload))
        metrics.observe_handler(call.action, time.perf_counter() - started)

    # -- outbound CALLs ----------------------------------------------------------------------
    def _on_answer(self, message: rpc.CallResult | rpc.CallError) -> None:
        pending = self._pending
        if pending is None or pending[0] != message.message_id:
            log.warning(
                "late or unknown answer dropped",
                charger_id=self.charger_id,
                message_id=message.message_id,
            )
            return
        _, action, fut = pending
        if fut.done():
            return
        if isinstance(message, rpc.CallError):
            code = message.code if message.code in KNOWN_CODES else "(other)"
            metrics.callerrors[code, "in"] += 1
            fut.set_exception(CommandRejected(self.charger_id, message.code, message.description))
            return
        assert self.dialect is not None
        metrics.messages[action, "in", "result"] += 1
        try:
            self.dialect.schemas.validate_response(action, message.payload, message.message_id)
        except RpcError as exc:
            fut.set_exception(
                CommandError(self.charger_id, f"charger sent an invalid answer: {exc.description}")
            )
            return
        fut.set_result(message.payload)

    async def call(self, action: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one CALL and return the charger's CALLRESULT payload.

        CALLs to one charger are serialised (one outstanding per direction, as OCPP-J asks).
        """
        assert self.dialect is not None
        try:
            self.dialect.schemas.validate_request(action, payload, "-")
        except RpcError as exc:
            raise CommandError(self.charger_id, f"invalid {action}: {exc.description}") from None
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            if self.transport is None or self.transport.is_closing():
                raise ChargerOffline(self.charger_id, "charger is not connected")
            message_id = f"evota-{next(_ids)}"
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, action, fut)
            try:
                self._send(rpc.encode_call(message_id, action, payload))
                metrics.messages[action, "out", "call"] += 1
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise CommandTimeout(
                    self.charger_id, f"no answer to {action} within {timeout:g} s"
                ) from None
            finally:
                self._pending = None
