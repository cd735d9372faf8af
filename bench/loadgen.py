"""Load generator for bench/gateway.py: simulated OCPP chargers on raw asyncio Protocols.

``WorkerConfig.protocol`` picks the load message: ``ocpp1.6`` sends StatusNotification,
``ocpp2.0.1`` sends TransactionEvent(Updated) with a meter value of seven samples (the
heaviest 2.0.1 message a charger sends routinely, and the costliest to validate) for a
transaction each connection starts after its boot.

Each worker process runs one event loop holding many connections. A connection does the
WebSocket upgrade itself (HTTP Basic auth, ``Sec-WebSocket-Protocol: ocpp1.6``), checks the
101 answer (status, ``Sec-WebSocket-Accept``, agreed subprotocol), sends BootNotification and
requires ``Accepted``. Under load it keeps exactly one StatusNotification CALL outstanding and
sends the next one as soon as the answer arrives.

Cheapness is what matters here, so the hot path avoids json and websockets libraries: frames
are assembled from pre-encoded pieces (fixed-width message id, fixed-width timestamp, so the
length is constant), masked with a random key from a per-worker pool of 64 keys (XOR done as
one big-int operation), and an answer is first compared byte for byte with the exact
CALLRESULT expected (``[3,"<id>",{}]``). Anything else goes through ``json.loads`` and is
classified: a CALLRESULT for the id with other spacing/payload still counts as a success; a
CALLERROR is counted as an error (never as a success); anything else is "unexpected".

The worker talks to the orchestrator over a ``multiprocessing`` pipe:
    worker -> ("ready", setup report)
    orchestrator -> ("go", t_go, warmup, duration, grace)   # throughput: run, then ("result", ...)
    orchestrator -> ("close",)                               # close connections, ("closed", ...)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import ssl
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# StatusNotification, split around the parts that change per message.
_SN_1 = b'[2,"'
_SN_2 = b'","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"'
_SN_3 = b'","timestamp":"'
_SN_4 = b'"}]'
_STATUS = (b"Available", b"Preparing")  # same length, so every frame has the same length
assert len(_STATUS[0]) == len(_STATUS[1])

BOOT_PAYLOAD = {"chargePointVendor": "evota-bench", "chargePointModel": "gateway-bench"}
MASK_POOL = 64

# TransactionEvent(Updated), split the same way: message id, timestamp, seqNo, transaction id
# (per connection), timestamp again, energy register. All fixed width.
_TE_1 = b'[2,"'
_TE_2 = b'","TransactionEvent",{"eventType":"Updated","timestamp":"'
_TE_3 = b'","triggerReason":"MeterValuePeriodic","seqNo":'
_TE_4 = b',"transactionInfo":{"transactionId":"'
_TE_5 = (
    b'","chargingState":"Charging"},"evse":{"id":1,"connectorId":1},"meterValue":[{"timestamp":"'
)
_TE_6 = b'","sampledValue":[{"value":'
_TE_7 = (
    b',"context":"Sample.Periodic","measurand":"Energy.Active.Import.Register",'
    b'"unitOfMeasure":{"unit":"Wh"}},'
    b'{"value":7360.5,"context":"Sample.Periodic","measurand":"Power.Active.Import",'
    b'"unitOfMeasure":{"unit":"W"}},'
    b'{"value":16.0,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L1"},'
    b'{"value":16.0,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L2"},'
    b'{"value":16.0,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L3"},'
    b'{"value":230.1,"context":"Sample.Periodic","measurand":"Voltage","phase":"L1-N"},'
    b'{"value":55,"context":"Sample.Periodic","measurand":"SoC","location":"EV"}]}]}]'
)
_BIG = 1_000_000_000  # seqNo and energy start here, so they keep 10 digits

BOOT_PAYLOAD_201 = {
    "chargingStation": {"vendorName": "evota-bench", "model": "gateway-bench"},
    "reason": "PowerUp",
}
PROTOCOLS = ("ocpp1.6", "ocpp2.0.1")


def _status_201(ts: str, status: str = "Available") -> dict[str, Any]:
    return {"timestamp": ts, "connectorStatus": status, "evseId": 1, "connectorId": 1}


@dataclass
class WorkerConfig:
    host: str
    port: int
    path_prefix: str  # e.g. "/ocpp/"; the identity is appended, percent-encoded
    chargers: list[tuple[str, str]]  # (identity, AuthorizationKey)
    worker_index: int = 0
    connect_concurrency: int = 64
    connect_timeout: float = 30.0
    idle_status: bool = True  # memory mode: one StatusNotification after boot
    probe_validation: bool = False  # first connection sends one invalid StatusNotification
    cpus: list[int] | None = None  # sched_setaffinity for this worker
    protocol: str = "ocpp1.6"  # or "ocpp2.0.1"
    # wss:// (bench/tls.py): the CA file the server is checked against, and per identity a
    # client certificate and key (security profile 3: then no Basic auth is sent)
    tls_ca: str | None = None
    tls_certs: dict[str, tuple[str, str]] | None = None


def _utc_ts() -> bytes:
    """Fixed-width (24 chars) UTC timestamp with milliseconds."""
    t = time.time()
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return f"{whole}.{int(t % 1 * 1000):03d}Z".encode()


def _header(opcode: int, length: int) -> bytes:
    b0 = 0x80 | opcode
    if length < 126:
        return bytes((b0, 0x80 | length))
    if length < 65536:
        return bytes((b0, 0x80 | 126)) + length.to_bytes(2, "big")
    return bytes((b0, 0x80 | 127)) + length.to_bytes(8, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (not on the hot path)."""
    mask = os.urandom(4)
    n = len(payload)
    if n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return _header(opcode, n) + mask + payload


class ConnectFailed(Exception):
    pass


@dataclass
class Stats:
    ok: int = 0  # CALLRESULTs inside the measured window
    ok_total: int = 0  # CALLRESULTs during the whole load phase (warm-up, window, drain)
    callerrors: Counter = field(default_factory=Counter)  # whole load phase, by error code
    callerrors_window: int = 0
    unexpected: int = 0  # frames that were neither the expected CALLRESULT nor a CALLERROR
    server_calls: int = 0  # CALLs initiated by the server (answered with CALLERROR)
    dropped: int = 0  # connections closed by the server or lost during the run
    close_codes: Counter = field(default_factory=Counter)
    lat: array = field(default_factory=lambda: array("q"))  # window round trips, ns


def client_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A charger's TLS context: the server checked against ``ca``, optionally a client
    certificate (profile 3)."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class Generator:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        self.conns: list[ChargerConn] = []
        self.setup_failures: Counter = Counter()
        self.running = False  # send a new CALL after each answer
        self.measuring = False
        self.outstanding = 0
        self.drained: asyncio.Future | None = None
        self.ts = _utc_ts()
        self.frame_len = 0
        self.frame_head = b""
        self.masks: list[tuple[bytes, int]] = []
        self.closing = False
        self.validation_probe = ""
        # TLS contexts are built before any connection (bench/tls.py times the connects)
        self.tls: ssl.SSLContext | None = None
        self.tls_per_charger: dict[str, ssl.SSLContext] = {}
        if cfg.tls_ca is not None:
            self.tls = client_context(cfg.tls_ca)
            for ident, (cert, key) in (cfg.tls_certs or {}).items():
                self.tls_per_charger[ident] = client_context(cfg.tls_ca, cert, key)

    # -- frame template ------------------------------------------------------------------
    def _prepare_masks(self, sample: bytes) -> None:
        n = len(sample)
        self.frame_len = n
        self.frame_head = _header(OP_TEXT, n)
        rnd = random.Random(os.urandom(16))
        self.masks = []
        for _ in range(MASK_POOL):
            m = rnd.randbytes(4)
            self.masks.append((m, int.from_bytes((m * (n // 4 + 1))[:n], "big")))

    def _tick_timestamp(self) -> None:
        self.ts = _utc_ts()
        if self.running:
            self.loop.call_later(1.0, self._tick_timestamp)

    # -- setup ---------------------------------------------------------------------------
    async def connect_all(self) -> None:
        sem = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def one(i: int, ident: str, key: str) -> None:
            async with sem:
                conn = ChargerConn(self, i, ident, key)
                try:
                    await asyncio.wait_for(conn.setup(), self.cfg.connect_timeout)
                except (ConnectFailed, OSError, TimeoutError) as exc:
                    reason = str(exc) if isinstance(exc, ConnectFailed) else type(exc).__name__
                    self.setup_failures[reason] += 1
                    conn.abort()
                    return
                self.conns.append(conn)

        await asyncio.gather(*(one(i, c[0], c[1]) for i, c in enumerate(self.cfg.chargers)))
        if self.cfg.probe_validation and self.conns:
            self.validation_probe = await self.conns[0].probe_validation()
        # Template for the hot path: the first connection's prefix has the common width.
        if self.cfg.protocol == "ocpp2.0.1":
            sample = ChargerConn.build_transaction(b"000000-0000000000", 0, b"000000-", self.ts)
        else:
            sample = ChargerConn.build_status(b"000000-0000000000", _STATUS[0], self.ts)
        self._prepare_masks(sample)

    # -- load ----------------------------------------------------------------------------
    async def run_load(self, t_go: float, warmup: float, duration: float, grace: float) -> dict:
        loop = self.loop
        wall_to_loop = loop.time() - time.time()
        await asyncio.sleep(max(0.0, t_go - time.time()))
        self.running = True
        self._tick_timestamp()
        for c in self.conns:
            if c.open:
                c.send_next()
        marks: dict[str, float] = {}
        window_over = asyncio.Event()

        def start_window() -> None:
            self.measuring = True
            marks["cpu0"] = time.process_time()
            marks["t0"] = time.perf_counter()

        def end_window() -> None:
            self.measuring = False
            marks["cpu1"] = time.process_time()
            marks["t1"] = time.perf_counter()
            window_over.set()

        loop.call_at(t_go + warmup + wall_to_loop, start_window)
        loop.call_at(t_go + warmup + duration + wall_to_loop, end_window)
        await window_over.wait()
        self.running = False
        if self.outstanding:
            self.drained = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained, grace)
        st = self.stats
        return {
            "ok": st.ok,
            "ok_total": st.ok_total,
            "callerrors": dict(st.callerrors),
            "callerrors_window": st.callerrors_window,
            "unexpected": st.unexpected,
            "server_calls": st.server_calls,
            "dropped": st.dropped,
            "close_codes": dict(st.close_codes),
            "unanswered": self.outstanding,
            "window_s": marks["t1"] - marks["t0"],
            "client_cpu_s": marks["cpu1"] - marks["cpu0"],
            "lat": st.lat.tobytes(),
        }

    def answered(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def close_all(self) -> None:
        self.closing = True
        close = encode_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        for c in self.conns:
            if c.open:
                c.transport.write(close)
        await asyncio.sleep(0.5)
        for c in self.conns:
            c.abort()


class ChargerConn(asyncio.Protocol):
    def __init__(self, gen: Generator, index: int, ident: str, key: str) -> None:
        self.gen = gen
        self.ident = ident
        self.key = key
        self.prefix = b"%06d-" % (index % 1_000_000)
        self.seq = 0
        self.transport: Any = None
        self.open = False
        self.handshaking = True
        self.ws_key = base64.b64encode(os.urandom(16))
        self.buf = b""
        self.frag: list[bytes] = []
        self.frag_op = 0
        self.expect = b""  # exact CALLRESULT bytes expected for the outstanding load CALL
        self.pending_id = ""  # id of the outstanding CALL (load or setup)
        self.sent_ns = 0
        self.waiter: asyncio.Future | None = None  # setup CALLs and the handshake
        # The load CALL for the protocol, bound once (the hot path does no lookups).
        two = gen.cfg.protocol == "ocpp2.0.1"
        self.send_next = self.send_transaction if two else self.send_status

    # -- setup ---------------------------------------------------------------------------
    async def setup(self) -> None:
        gen = self.gen
        cfg = gen.cfg
        self.waiter = gen.loop.create_future()
        tls = gen.tls_per_charger.get(self.ident, gen.tls)
        await gen.loop.create_connection(
            lambda: self, cfg.host, cfg.port, ssl=tls, server_hostname=cfg.host if tls else None
        )
        await self.waiter  # handshake
        if cfg.protocol == "ocpp2.0.1":
            await self.setup_201()
            return
        res = await self.call("BootNotification", BOOT_PAYLOAD)
        if res.get("status") != "Accepted":
            raise ConnectFailed(f"BootNotification status {res.get('status')!r}")
        if cfg.idle_status:
            payload = {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": _utc_ts().decode(),
            }
            await self.call("StatusNotification", payload)

    async def setup_201(self) -> None:
        """Boot; then a status (memory mode) or the transaction the load updates."""
        res = await self.call("BootNotification", BOOT_PAYLOAD_201)
        if res.get("status") != "Accepted":
            raise ConnectFailed(f"BootNotification status {res.get('status')!r}")
        ts = _utc_ts().decode()
        if self.gen.cfg.idle_status:
            await self.call("StatusNotification", _status_201(ts))
            return
        started = {
            "eventType": "Started",
            "timestamp": ts,
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": self.transaction_id.decode()},
            "evse": {"id": 1, "connectorId": 1},
            "idToken": {"idToken": "BENCH-TOKEN", "type": "ISO14443"},
            "meterValue": [
                {
                    "timestamp": ts,
                    "sampledValue": [{"value": _BIG, "context": "Transaction.Begin"}],
                }
            ],
        }
        await self.call("TransactionEvent", started)

    @property
    def transaction_id(self) -> bytes:
        return b"bench-" + self.prefix

    async def call(self, action: str, payload: dict) -> dict:
        kind, body = await self.raw_call(action, payload)
        if kind != 3:
            raise ConnectFailed(f"{action} answered with CALLERROR {body[0] if body else ''}")
        return body

    async def raw_call(self, action: str, payload: dict) -> tuple[int, Any]:
        self.seq += 1
        self.pending_id = (self.prefix + b"%010d" % self.seq).decode()
        self.expect = b""
        self.waiter = self.gen.loop.create_future()
        text = json.dumps([2, self.pending_id, action, payload], separators=(",", ":"))
        self.transport.write(encode_frame(OP_TEXT, text.encode()))
        return await self.waiter

    async def probe_validation(self) -> str:
        """Does the server check payloads against the schema? (Honesty check, not timed.)"""
        bad: dict[str, Any] = {"connectorId": 1, "errorCode": "NoError", "status": "Bogus"}
        if self.gen.cfg.protocol == "ocpp2.0.1":
            bad = {"connectorStatus": "Bogus", "evseId": 1, "connectorId": 1}  # enum, no ts
        try:
            kind, body = await asyncio.wait_for(self.raw_call("StatusNotification", bad), 10)
        except (TimeoutError, ConnectFailed) as exc:
            return f"no answer to an invalid StatusNotification ({type(exc).__name__})"
        if kind == 4:
            return f"yes (invalid StatusNotification -> CALLERROR {body[0]})"
        return "NO: an invalid StatusNotification got a CALLRESULT"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        cfg = self.gen.cfg
        auth = base64.b64encode(f"{self.ident}:{self.key}".encode()).decode()
        req = (
            f"GET {cfg.path_prefix}{quote(self.ident, safe='')} HTTP/1.1\r\n"
            f"Host: {cfg.host}:{cfg.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.ws_key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {cfg.protocol}\r\n"
            + (f"Authorization: Basic {auth}\r\n" if self.key else "")
            + "\r\n"
        )
        transport.write(req.encode())

    def _fail_waiter(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectFailed(reason))

    def _handshake(self, data: bytes) -> bytes | None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self._fail_waiter("oversized handshake response")
            return None
        head, rest = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
        self.buf = b""
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        status = parts[1] if len(parts) > 1 else "?"
        if status != "101":
            self._fail_waiter(f"HTTP {status} on upgrade")
            self.transport.close()
            return None
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(hashlib.sha1(self.ws_key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self._fail_waiter("bad Sec-WebSocket-Accept")
            self.transport.close()
            return None
        if headers.get("sec-websocket-protocol") != self.gen.cfg.protocol:
            self._fail_waiter(f"subprotocol {self.gen.cfg.protocol} not agreed")
            self.transport.close()
            return None
        self.handshaking = False
        self.open = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        return rest

    # -- hot path ------------------------------------------------------------------------
    @staticmethod
    def build_status(mid: bytes, status: bytes, ts: bytes) -> bytes:
        return _SN_1 + mid + _SN_2 + status + _SN_3 + ts + _SN_4

    @staticmethod
    def build_transaction(mid: bytes, seq: int, prefix: bytes, ts: bytes) -> bytes:
        number = b"%d" % (_BIG + seq % _BIG)
        return (
            _TE_1 + mid + _TE_2 + ts + _TE_3 + number + _TE_4 + b"bench-" + prefix
            + _TE_5 + ts + _TE_6 + number + _TE_7
        )  # fmt: skip

    def send_transaction(self) -> None:
        gen = self.gen
        self.seq = seq = self.seq + 1
        mid = self.prefix + b"%010d" % (seq % 10_000_000_000)
        text = self.build_transaction(mid, seq, self.prefix, gen.ts)
        n = gen.frame_len
        mask, key = gen.masks[seq % MASK_POOL]
        self.expect = b'[3,"' + mid + b'",{}]'
        self.pending_id = ""
        gen.outstanding += 1
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(
            gen.frame_head + mask + (int.from_bytes(text, "big") ^ key).to_bytes(n, "big")
        )

    def send_status(self) -> None:
        gen = self.gen
        self.seq = seq = self.seq + 1
        mid = self.prefix + b"%010d" % (seq % 10_000_000_000)
        text = _SN_1 + mid + _SN_2 + _STATUS[seq & 1] + _SN_3 + gen.ts + _SN_4
        n = gen.frame_len
        mask, key = gen.masks[seq % MASK_POOL]
        self.expect = b'[3,"' + mid + b'",{}]'
        self.pending_id = ""
        gen.outstanding += 1
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(
            gen.frame_head + mask + (int.from_bytes(text, "big") ^ key).to_bytes(n, "big")
        )

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            rest = self._handshake(data)
            if not rest:
                return
            data = rest
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos = 0
        n = len(data)
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 4], "big")
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            if b1 & 0x80:  # servers must not mask (RFC 6455 5.1)
                self.gen.stats.unexpected += 1
                self.abort()
                return
            end = pos + hl + ln
            if end > n:
                break
            payload = data[pos + hl : end]
            pos = end
            op = b0 & 0x0F
            if op == OP_TEXT and b0 & 0x80:
                self.on_text(payload)
            elif op == OP_PING:
                self.transport.write(encode_frame(OP_PONG, payload))
            elif op == OP_PONG:
                pass
            elif op == OP_CLOSE:
                self.on_close(payload)
                return
            elif op in (OP_TEXT, OP_BIN):  # first fragment
                self.frag_op = op
                self.frag = [payload]
            elif op == OP_CONT:
                self.frag.append(payload)
                if b0 & 0x80:
                    whole = b"".join(self.frag)
                    self.frag = []
                    if self.frag_op == OP_TEXT:
                        self.on_text(whole)
                    else:
                        self.gen.stats.unexpected += 1
            else:
                self.gen.stats.unexpected += 1
        if pos < n:
            self.buf = data[pos:]

    def on_text(self, payload: bytes) -> None:
        gen = self.gen
        if self.expect and payload == self.expect:
            now = time.perf_counter_ns()
            self.expect = b""
            st = gen.stats
            st.ok_total += 1
            if gen.measuring:
                st.ok += 1
                st.lat.append(now - self.sent_ns)
            gen.answered()
            if gen.running:
                self.send_next()
            return
        self.on_other(payload)

    def on_other(self, payload: bytes) -> None:
        """Slow path: anything that is not the exact expected CALLRESULT."""
        gen = self.gen
        st = gen.stats
        try:
            msg = json.loads(payload)
            kind = msg[0]
            mid = msg[1]
        except (ValueError, TypeError, IndexError, KeyError):
            st.unexpected += 1
            return
        if kind == 2:  # a CALL from the server: this simulated charger supports none
            st.server_calls += 1
            err = json.dumps(
                [4, mid, "NotSupported", "bench charger handles no CSMS-initiated calls", {}],
                separators=(",", ":"),
            )
            self.transport.write(encode_frame(OP_TEXT, err.encode()))
            return
        if self.expect:  # a load CALL is outstanding
            expected_id = self.expect[4:-5].decode()
            if mid != expected_id or kind not in (3, 4):
                st.unexpected += 1
                return
            self.expect = b""
            if kind == 3:
                now = time.perf_counter_ns()
                st.ok_total += 1
                if gen.measuring:
                    st.ok += 1
                    st.lat.append(now - self.sent_ns)
            else:
                st.callerrors[str(msg[2]) if len(msg) > 2 else "?"] += 1
                if gen.measuring:
                    st.callerrors_window += 1
            gen.answered()
            if gen.running:
                self.send_next()
            return
        if self.pending_id and mid == self.pending_id and kind in (3, 4):
            self.pending_id = ""
            if self.waiter is not None and not self.waiter.done():
                body = msg[2] if kind == 3 else msg[2:]
                self.waiter.set_result((kind, body))
            return
        st.unexpected += 1

    def on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.gen.stats.close_codes[code] += 1
        if self.open and not self.gen.closing:
            self.transport.write(encode_frame(OP_CLOSE, payload[:2]))
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.open
        self.open = False
        self._fail_waiter(f"connection lost ({exc or 'closed'})")
        if was_open and not self.gen.closing:
            self.gen.stats.dropped += 1
            if self.expect:  # its CALL will never be answered
                self.expect = b""
                self.gen.answered()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# -- worker process entry point ----------------------------------------------------------


async def _recv(pipe: Any) -> Any:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        loop.remove_reader(pipe.fileno())
        # Keep the pipe blocking for Connection.send of large results (some loops, e.g.
        # uvloop, switch a watched fd to non-blocking).
        os.set_blocking(pipe.fileno(), True)
        if not fut.done():
            try:
                fut.set_result(pipe.recv())
            except EOFError as exc:
                fut.set_exception(exc)

    loop.add_reader(pipe.fileno(), ready)
    return await fut


async def _worker(cfg: WorkerConfig, pipe: Any) -> None:
    gen = Generator(cfg)
    t0 = time.perf_counter()
    await gen.connect_all()
    pipe.send(
        (
            "ready",
            {
                "connected": len(gen.conns),
                "failures": dict(gen.setup_failures),
                "setup_s": time.perf_counter() - t0,
                "server_calls": gen.stats.server_calls,
                "validation_probe": gen.validation_probe,
            },
        )
    )
    cmd = await _recv(pipe)
    if cmd[0] == "go":
        _, t_go, warmup, duration, grace = cmd
        result = await gen.run_load(t_go, warmup, duration, grace)
        result["connected"] = len(gen.conns)
        pipe.send(("result", result))
        cmd = await _recv(pipe)
    open_before_close = sum(1 for c in gen.conns if c.open)
    await gen.close_all()
    pipe.send(
        (
            "closed",
            {
                "open_before_close": open_before_close,
                "dropped": gen.stats.dropped,
                "close_codes": dict(gen.stats.close_codes),
                "server_calls": gen.stats.server_calls,
                "unexpected": gen.stats.unexpected,
            },
        )
    )


def run_worker(cfg: WorkerConfig, pipe: Any) -> None:
    """multiprocessing target."""
    if cfg.cpus:
        os.sched_setaffinity(0, cfg.cpus)
    asyncio.run(_worker(cfg, pipe))
