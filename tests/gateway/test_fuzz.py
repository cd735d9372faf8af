"""Property-based fuzzing of the OCPP gateway (issue 12, "Prove it stays fixed").

A real evota (real runtime, real WebSocket on loopback) with an accepted 1.6 charger and an
accepted 2.0.1 charger receives generated frames: valid message shapes built from the JSON
schemas evota itself loads (every action of both versions, so charger->CSMS actions and the
ones a charger may not send), with hostile values (deep nesting, big sizes, NUL, lone
surrogates, odd unicode, numbers at the limits, wrong types, missing and extra fields), and
broken frames (unknown actions, bad message ids, wrong message types, non-object payloads,
unsolicited answers, not JSON). After each batch:

a. every frame that asks for an answer got exactly one: a schema-valid CALLRESULT or a
   CALLERROR whose code exists in that version, and the code OCPP-J prescribes where the
   frame's fault is a framing one (:func:`expected`); never InternalError (a crash);
b. the fleet writer is alive and another charger's BootNotification is stored;
c. the API and the console serve the fuzzed chargers and the witness without a 5xx.

The machinery is shared with ``bench/fuzz_gateway.py`` (the long run). The CI profile is
derandomized, so the run is the same every time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from evota.ocpp.dialect import DIALECTS, Dialect
from evota.ocpp.errors import ErrorKind, RpcError
from evota.runtime import Runtime
from tests.conftest import TOKEN, basic, session_for, start_runtime

pytestmark = pytest.mark.slow  # thousands of generated frames against a real gateway

KEY = "fuzz-charger-key-0123456789"
CHARGERS = {"ocpp1.6": "FUZZ-16", "ocpp2.0.1": "FUZZ-201"}
WITNESS = "FUZZ-WITNESS"
#: Frames stay under the gateway's default message size (256 KiB), which closes the socket.
MAX_FRAME = 240 * 1024

# -- values ----------------------------------------------------------------------------------

LIMIT_INTS = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**30,
]
LIMIT_FLOATS = [1e308, -1e308, 5e-324, -0.0, 0.1, 1e15, -1e-300]
ODD_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "\u202eevil",
    "\ufeff",
    "\U0001f600" * 8,
    "Z\u0351\u0360\u0361" * 10,
    "\r\n\x1b[31m",
    "%s%n{0}",
    "'; DROP TABLE chargers; --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "null",
]
ISO_TIMES = [
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456+14:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "yesterday",
    "",
]


@dataclass(frozen=True)
class Deep:
    """JSON nested ``depth`` levels deep around ``leaf``; serialised by :func:`dumps` (the
    stdlib and orjson cannot build it from Python objects)."""

    depth: int
    leaf: str = "x"


def characters(surrogates: bool = True) -> st.SearchStrategy[str]:
    """Any code point: NUL, controls, bidi overrides, and (unless told) lone surrogates."""
    return st.characters(exclude_categories=() if surrogates else ("Cs",))


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], weight: int = 8) -> Any:
    """``usual`` about ``weight`` times as often as ``odd``: most frames must pass the schema
    so that the hostile values reach evota's handlers and its database. (``one_of`` would not
    weight repeated branches, and hypothesis favours the ends of an integer range.)"""
    return st.integers(0, 1000).flatmap(lambda i: odd if i % (weight + 1) == 1 else usual)


def hostile_text(max_size: int | None) -> st.SearchStrategy[str]:
    """Text within ``max_size`` with odd characters; now and then at or past the limit or
    with lone surrogates (which no JSON parser evota uses accepts)."""
    limit = 50 if max_size is None else max_size
    fits = st.one_of(
        st.text(characters(surrogates=False), max_size=min(limit, 40)),
        st.sampled_from([t for t in ODD_STRINGS if len(t) <= limit and not _lone(t)] or [""]),
    )
    odd = st.one_of(
        st.text(characters(), min_size=1, max_size=min(limit, 40)),
        st.sampled_from(ODD_STRINGS),
        st.integers(0, 2).map(lambda extra, n=limit: "x" * (n + extra)),  # at and past the limit
    )
    return mostly(fits, odd, 4)


def _lone(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def big_text() -> st.SearchStrategy[str]:
    return st.sampled_from([10_000, 70_000, 200_000]).map(lambda n: "A" * n)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(LIMIT_INTS),
    st.integers(),
    st.sampled_from(LIMIT_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text(40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text(20), inner, max_size=4)
    ),
    max_leaves=12,
)


def free_form() -> st.SearchStrategy[Any]:
    """A value with no schema (2.0.1 DataTransfer ``data``): anything, very deep, very big."""
    return st.one_of(
        json_values,
        st.sampled_from([16, 17, 100, 300, 1000, 1020, 1100]).map(Deep),
        big_text(),
    )


# -- payloads from the schemas ---------------------------------------------------------------


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def from_schema(node: dict[str, Any], root: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    """Values of the schema's shape with hostile contents; now and then a wrong type."""
    node = _resolve(node, root)
    kind = node.get("type")
    if "enum" in node:
        shaped: st.SearchStrategy[Any] = mostly(
            st.sampled_from(node["enum"]), hostile_text(node.get("maxLength"))
        )
    elif kind == "object" or "properties" in node:
        shaped = _object(node, root, depth)
    elif kind == "array":
        items = from_schema(node.get("items", {}), root, depth + 1)
        shaped = st.lists(items, min_size=node.get("minItems", 0), max_size=3)
    elif kind == "string":
        if node.get("format") == "date-time":
            shaped = mostly(
                st.sampled_from(ISO_TIMES[:4]),
                st.one_of(st.sampled_from(ISO_TIMES), hostile_text(40)),
            )
        else:
            max_length = node.get("maxLength")
            shaped = hostile_text(max_length)
            if max_length is None:  # 1.6 DataTransfer data, CSRs, certificates
                shaped = st.one_of(shaped, big_text())
    elif kind == "integer":
        shaped = st.one_of(st.integers(-3, 3), st.sampled_from(LIMIT_INTS), st.integers())
    elif kind == "number":
        shaped = st.one_of(st.sampled_from(LIMIT_FLOATS + LIMIT_INTS), st.floats(allow_nan=False))
    elif kind == "boolean":
        shaped = st.booleans()
    else:  # no type at all
        return free_form()
    if depth == 0:
        return shaped
    return mostly(shaped, json_scalars, 15)  # now and then a value of the wrong type


def _object(node: dict[str, Any], root: dict[str, Any], depth: int) -> st.SearchStrategy:
    properties = node.get("properties", {})
    required = set(node.get("required", ()))
    if depth > 6:
        return st.fixed_dictionaries({k: st.just("x") for k in required})
    values = {k: from_schema(v, root, depth + 1) for k, v in properties.items()}
    base = st.fixed_dictionaries(
        {k: v for k, v in values.items() if k in required},
        optional={k: v for k, v in values.items() if k not in required},
    )

    def mutate(payload: dict[str, Any], drop: int, extra: str | None) -> dict[str, Any]:
        if drop and payload and required:
            payload.pop(sorted(required)[drop % len(required)], None)
        if extra is not None:
            payload[extra] = "unexpected"
        return payload

    return st.builds(
        mutate,
        base,
        st.sampled_from([0] * 15 + [1]),
        mostly(st.none(), st.just("unknownField"), 15),
    )


_SCHEMA_CACHE: dict[tuple[str, str], dict[str, Any]] = {}


def schema_of(dialect: Dialect, action: str) -> dict[str, Any]:
    key = (dialect.subprotocol, action)
    if key not in _SCHEMA_CACHE:
        sset = dialect.schemas
        name = action + sset._request_suffix
        _SCHEMA_CACHE[key] = json.loads((sset._dir / f"{name}.json").read_text(encoding="utf-8"))
    return _SCHEMA_CACHE[key]


def actions(dialect: Dialect) -> list[str]:
    """Every action the version's schemas define (what a charger may send first)."""
    charger = sorted(dialect.schemas.actions & dialect.charger_actions)
    return charger + sorted(dialect.schemas.actions - dialect.charger_actions)


# -- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One text frame and, when known, the action it calls (for checking a CALLRESULT)."""

    text: str
    action: str | None = None


_DEEP_TAG = "\x01deep:"


def dumps(value: Any) -> str:
    """JSON text of ``value``, :class:`Deep` placeholders expanded, surrogates escaped."""
    deep: list[Deep] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Deep):
            deep.append(obj)
            return f"{_DEEP_TAG}{len(deep) - 1}"
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, default=default, allow_nan=True)
    for index, item in enumerate(deep):
        placeholder = json.dumps(f"{_DEEP_TAG}{index}")
        text = text.replace(
            placeholder, "[" * item.depth + json.dumps(item.leaf) + "]" * item.depth
        )
    return text


message_ids = mostly(
    st.integers(0, 10**6).map(lambda n: f"f{n}"),
    st.one_of(
        st.text(characters(), min_size=1, max_size=36), st.sampled_from(["", "x" * 37, "-1"])
    ),
)


def frames(dialect: Dialect) -> st.SearchStrategy[Frame]:
    names = actions(dialect)
    # The actions a charger may send, three times as often as those it may not.
    charger = [a for a in names if a in dialect.charger_actions]
    calls = st.sampled_from(names + charger + charger).flatmap(
        lambda action: st.builds(
            lambda mid, payload, a=action: Frame(dumps([2, mid, a, payload]), a),
            message_ids,
            from_schema(schema_of(dialect, action), schema_of(dialect, action)),
        )
    )
    odd_id = st.one_of(st.integers(), st.none(), st.floats(allow_nan=False), st.just([]))
    broken = st.one_of(
        st.builds(lambda a, p: Frame(dumps([2, "u1", a, p]), a), hostile_text(60), json_values),
        st.builds(lambda i: Frame(dumps([2, i, "Heartbeat", {}])), odd_id),
        st.builds(
            lambda t: Frame(dumps([t, "t1", "Heartbeat", {}])),
            st.sampled_from([0, 1, 5, 99, -2, "2", 2.0, None, True]),
        ),
        st.builds(lambda p: Frame(dumps([2, "p1", "Heartbeat", p])), json_scalars),
        st.builds(
            lambda n: Frame(dumps([2, "n1", "Heartbeat", {}, {}][:n]), "Heartbeat"),
            st.integers(1, 5),
        ),
        st.builds(lambda mid, p: Frame(dumps([3, mid, p])), message_ids, json_values),
        st.builds(lambda mid, c: Frame(dumps([4, mid, c, "d", {}])), message_ids, hostile_text(30)),
        st.sampled_from(["", "[]", "{}", "[2", "nope", '[2,"a","Heartbeat",{}]x', "\x00"]).map(
            Frame
        ),
        json_values.map(lambda v: Frame(dumps(v))),
    )
    return mostly(calls, broken, 4).filter(
        lambda f: len(f.text.encode("utf-8", "surrogatepass")) < MAX_FRAME
    )


def batches(dialect: Dialect, max_size: int = 8) -> st.SearchStrategy[list[Frame]]:
    return st.lists(frames(dialect), min_size=1, max_size=max_size)


# -- what evota must answer ------------------------------------------------------------------

SPELLINGS = {name: frozenset(d.spelling.values()) for name, d in DIALECTS.items()}


def expected(text: str, dialect: Dialect) -> tuple[str, str | None] | None:
    """The answer OCPP-J prescribes for ``text``: ``(message id, error code or None for
    "a CALLRESULT or any CALLERROR of the version")``, or None when no answer is due (an
    answer to a CALL evota did not send is dropped). Mirrors OCPP-J 2.0.1 section 4.3."""
    framework = dialect.code(ErrorKind.RPC_FRAMEWORK)
    try:
        frame = orjson.loads(text)  # what cannot be read as JSON is answered with id -1
    except orjson.JSONDecodeError:
        return "-1", framework
    if not isinstance(frame, list) or not frame:
        return "-1", framework
    if len(frame) < 2 or not isinstance(frame[1], str) or not 1 <= len(frame[1]) <= 36:
        return "-1", framework
    kind, message_id = frame[0], frame[1]
    if type(kind) is not int or kind not in (2, 3, 4):
        return message_id, dialect.code(ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED)
    if kind == 3:
        return None if len(frame) == 3 and isinstance(frame[2], dict) else (message_id, framework)
    if kind == 4:
        ok = len(frame) == 5 and isinstance(frame[2], str) and isinstance(frame[3], str)
        return None if ok and isinstance(frame[4], dict) else (message_id, framework)
    if len(frame) != 4 or not isinstance(frame[2], str) or not frame[2]:
        return message_id, framework
    if not isinstance(frame[3], dict):
        return message_id, dialect.code(ErrorKind.FORMAT)
    action = frame[2]
    if action not in dialect.schemas.actions:
        return message_id, dialect.code(ErrorKind.NOT_IMPLEMENTED)
    if action not in dialect.charger_actions:
        return message_id, dialect.code(ErrorKind.NOT_SUPPORTED)
    return message_id, None


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Stats:
    frames: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0  # frames that need no answer (answers to nothing)
    server_errors: int = 0  # 5xx from the API or console
    boots: int = 0
    violations: list[str] = field(default_factory=list)


class Harness:
    """evota on its own event loop in a thread, with the fuzzed chargers and a witness.

    A thread, not pytest-asyncio: hypothesis drives plain functions, and the same harness
    runs the long fuzz in bench/fuzz_gateway.py.
    """

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-evota")
        self.rt: Runtime | None = None
        self.ws: dict[str, ClientConnection] = {}
        self.api: httpx.AsyncClient | None = None
        self.web: httpx.AsyncClient | None = None
        self.stats = Stats()
        self.writer_alive = False
        self._boots = itertools.count(1)

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @contextmanager
    def started(self) -> Iterator[Harness]:
        self.thread.start()
        try:
            self.run(self._start())
            yield self
        finally:
            self.run(self._stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def _start(self) -> None:
        rt = await start_runtime(
            self.tmp_path, self.database_url, write_interval=0.02, call_timeout=2.0
        )
        self.rt = rt
        base = f"http://127.0.0.1:{rt.http_port}"
        self.api = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        for charger_id in (*CHARGERS.values(), WITNESS):
            r = await self.api.post("/api/v1/chargers", json={"id": charger_id, "auth_key": KEY})
            assert r.status_code == 201, r.text
        session = await session_for(rt, "fuzz-viewer", ["viewer"])
        self.web = httpx.AsyncClient(base_url=base, cookies={"evota_session": session}, timeout=30)
        for protocol in CHARGERS:
            await self._connect(protocol)

    async def _connect(self, protocol: str) -> None:
        assert self.rt is not None
        charger_id = CHARGERS[protocol]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp/{charger_id}",
            subprotocols=[protocol],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(charger_id, KEY)},
            compression=None,
            max_size=None,
        )
        self.ws[protocol] = ws
        if protocol == "ocpp2.0.1":
            boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "F", "model": "Z"}}
        else:
            boot = {"chargePointVendor": "F", "chargePointModel": "Z"}
        reply = await self._exchange(protocol, dumps([2, "boot", "BootNotification", boot]))
        assert reply is not None and reply[0] == 3 and reply[2]["status"] == "Accepted", reply

    async def _stop(self) -> None:
        if self.rt is not None:
            self.writer_alive = self.rt.fleet.writer.problem() is None
        for ws in self.ws.values():
            await ws.close()
        for client in (self.api, self.web):
            if client is not None:
                await client.aclose()
        if self.rt is not None:
            await self.rt.stop()

    # -- one batch -----------------------------------------------------------------------------
    def batch(self, frames_16: list[Frame], frames_201: list[Frame]) -> list[str]:
        """Send both batches (each charger its own, concurrently), then check (a)-(c); returns
        the violations found (empty when evota behaved)."""
        return list(self.run(self._batch(frames_16, frames_201)))

    async def _batch(self, frames_16: list[Frame], frames_201: list[Frame]) -> list[str]:
        found: list[str] = []
        await asyncio.gather(
            self._send_all("ocpp1.6", frames_16, found),
            self._send_all("ocpp2.0.1", frames_201, found),
        )
        found += await self._after_batch()
        self.stats.violations += found
        return found

    async def _send_all(self, protocol: str, frames: list[Frame], found: list[str]) -> None:
        dialect = DIALECTS[protocol]
        for frame in frames:
            self.stats.frames += 1
            want = expected(frame.text, dialect)
            try:
                problem = await self._check_one(protocol, dialect, frame, want)
            except (TimeoutError, websockets.ConnectionClosed) as exc:
                problem = f"{type(exc).__name__}"
                await self._reconnect(protocol)
            if problem:
                found.append(f"{protocol} {frame.text[:200]!r}: {problem}")

    async def _check_one(
        self, protocol: str, dialect: Dialect, frame: Frame, want: tuple[str, str | None] | None
    ) -> str | None:
        if want is None:  # no answer due: a Heartbeat probe must be the next thing answered
            self.stats.unanswered += 1
            await self.ws[protocol].send(frame.text)
            probe = await self._exchange(protocol, dumps([2, "probe", "Heartbeat", {}]))
            return None if probe and probe[1] == "probe" and probe[0] == 3 else f"got {probe!r}"
        reply = await self._exchange(protocol, frame.text, want[0])
        if reply is None:
            return "no answer"
        message_id, code = want
        if reply[0] == 3:
            self.stats.results += 1
            if code is not None:
                return f"CALLRESULT where {code} was due"
            try:
                assert frame.action is not None
                dialect.schemas.validate_response(frame.action, reply[2], message_id)
            except (AssertionError, RpcError) as exc:
                return f"invalid CALLRESULT {reply!r}: {exc}"
            return None
        got = reply[2]
        self.stats.errors[got] += 1
        if got not in SPELLINGS[protocol]:
            return f"CALLERROR code {got!r} is not an OCPP {protocol} code"
        if got == dialect.code(ErrorKind.INTERNAL):
            return f"InternalError (evota failed on this input): {reply!r}"
        if code is not None and got != code:
            return f"CALLERROR {got} where {code} was due: {reply!r}"
        return None

    async def _exchange(
        self, protocol: str, text: str, message_id: str | None = None
    ) -> list[Any] | None:
        """Send ``text`` and return the answer with ``message_id`` (default: the frame's),
        answering any CALL evota sends meanwhile (it reads configuration after a boot)."""
        ws = self.ws[protocol]
        if message_id is None:
            message_id = orjson.loads(text)[1]
        await ws.send(text)
        while True:
            raw = await asyncio.wait_for(ws.recv(), 15)
            message = orjson.loads(raw)
            if message[0] == 2:  # evota asks something: "not implemented here"
                await ws.send(dumps([4, message[1], "NotImplemented", "fuzz charger", {}]))
                continue
            if message[1] != message_id:
                raise AssertionError(f"answer {message!r} while waiting for {message_id!r}")
            return list(message)

    async def _reconnect(self, protocol: str) -> None:
        with_ws = self.ws.get(protocol)
        if with_ws is not None:
            await with_ws.close()
        await self._connect(protocol)

    async def _after_batch(self) -> list[str]:
        """(b) the writer is alive and stores another charger's boot; (c) no 5xx."""
        assert self.rt is not None and self.api is not None and self.web is not None
        found: list[str] = []
        problem = self.rt.fleet.writer.problem()
        if problem is not None:
            found.append(f"writer: {problem}")
        firmware = f"fw-{next(self._boots)}"
        ws = await websockets.connect(
            f"ws://127.0.0.1:{self.rt.ocpp_port}/ocpp/{WITNESS}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(WITNESS, KEY)},
            compression=None,
        )
        try:
            boot = {"chargePointVendor": "W", "chargePointModel": "W", "firmwareVersion": firmware}
            await ws.send(dumps([2, "w", "BootNotification", boot]))
            while orjson.loads(await asyncio.wait_for(ws.recv(), 15))[1] != "w":
                pass
        finally:
            await ws.close()
        deadline = time.monotonic() + 15
        while True:
            r = await self.api.get(f"/api/v1/chargers/{WITNESS}")
            if r.status_code >= 500:
                found.append(f"GET witness: {r.status_code}")
                break
            if r.json().get("firmware_version") == firmware:
                self.stats.boots += 1
                break
            if time.monotonic() > deadline:
                found.append(f"the witness's boot ({firmware}) was not stored")
                break
            await asyncio.sleep(0.02)
        health = await self.api.get("/healthz")
        if health.status_code != 200:
            found.append(f"/healthz {health.status_code}: {health.text[:300]}")
        pages = [(self.api, "/api/v1/chargers"), (self.web, "/console/chargers")]
        for charger_id in (*CHARGERS.values(), WITNESS):
            pages += [
                (self.api, f"/api/v1/chargers/{charger_id}"),
                (self.web, f"/console/chargers/{charger_id}"),
            ]
        for client, path in pages:
            r = await client.get(path)
            if r.status_code >= 500:
                self.stats.server_errors += 1
                found.append(f"GET {path}: {r.status_code} {r.text[:300]}")
        return found


# -- what the fuzzer found (kept as explicit examples) -----------------------------------------

_AT = "2026-01-01T00:00:00Z"
_START = {"connectorId": 1, "idTag": "t", "meterStart": 1, "timestamp": _AT}
_EVENT = {
    "eventType": "Started",
    "timestamp": _AT,
    "triggerReason": "Authorized",
    "seqNo": 1,
    "transactionInfo": {"transactionId": "T"},
}
#: Each made evota answer InternalError before it was fixed (a value the database refused).
FOUND_16 = [
    Frame(
        dumps([2, "x1", "StartTransaction", {**_START, "connectorId": 2**63}]), "StartTransaction"
    ),
    Frame(dumps([2, "x2", "StartTransaction", {**_START, "idTag": "t\x00"}]), "StartTransaction"),
    Frame(
        dumps(
            [2, "x3", "StopTransaction", {"transactionId": 2**63, "meterStop": 1, "timestamp": _AT}]
        ),
        "StopTransaction",
    ),
]
FOUND_201 = [
    Frame(
        dumps(
            [2, "y1", "TransactionEvent", {**_EVENT, "transactionInfo": {"transactionId": "\x00"}}]
        ),
        "TransactionEvent",
    ),
    Frame(
        dumps([2, "y2", "TransactionEvent", {**_EVENT, "evse": {"id": 2**63}}]), "TransactionEvent"
    ),
    Frame(dumps([2, "y3", "DataTransfer", {"vendorId": "v", "data": Deep(1020)}]), "DataTransfer"),
]

# -- the CI profile --------------------------------------------------------------------------

CI = settings(
    max_examples=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
    print_blob=True,
)


def test_expected_answers_follow_ocpp_j() -> None:
    """The oracle itself, on the cases OCPP-J names (so the fuzz asserts the right thing)."""
    v16, v201 = DIALECTS["ocpp1.6"], DIALECTS["ocpp2.0.1"]
    assert expected("nope", v201) == ("-1", "RpcFrameworkError")
    assert expected('"\\ud800"', v16) == ("-1", "FormationViolation")
    assert expected('[2, 5, "Heartbeat", {}]', v201) == ("-1", "RpcFrameworkError")
    assert expected('[7, "a", "Heartbeat", {}]', v201) == ("a", "MessageTypeNotSupported")
    assert expected('[2, "a", "Heartbeat", []]', v16) == ("a", "FormationViolation")
    assert expected('[2, "a", "Nope", {}]', v16) == ("a", "NotImplemented")
    assert expected('[2, "a", "Reset", {}]', v201) == ("a", "NotSupported")
    assert expected('[3, "a", {}]', v16) is None
    assert expected('[2, "a", "DataTransfer", {}]', v201) == ("a", None)
    assert "DataTransfer" in actions(v201) and "SecurityEventNotification" in actions(v16)
    assert dumps({"d": Deep(3)}) == '{"d": [[["x"]]]}'


def test_the_gateway_survives_generated_hostile_frames(tmp_path: Path, database_url: str) -> None:
    harness = Harness(tmp_path, database_url)
    with harness.started() as h:

        @CI
        @given(frames_16=batches(DIALECTS["ocpp1.6"]), frames_201=batches(DIALECTS["ocpp2.0.1"]))
        @example(frames_16=FOUND_16, frames_201=FOUND_201)
        def one_batch(frames_16: list[Frame], frames_201: list[Frame]) -> None:
            problems = h.batch(frames_16, frames_201)
            assert not problems, "\n".join(problems)

        one_batch()
    assert harness.stats.boots >= CI.max_examples
    assert harness.stats.frames > 2 * CI.max_examples


@pytest.mark.parametrize("depth", [1000, 1020])
def test_deep_data_from_both_versions_then_the_witness_boots(
    tmp_path: Path, sqlite_url: str, depth: int
) -> None:
    """The issue's frames, fixed (not generated), through the same checks."""
    harness = Harness(tmp_path, sqlite_url)
    with harness.started() as h:
        deep = {"vendorId": "v", "data": Deep(depth)}
        problems = h.batch(
            [
                Frame(
                    dumps([2, "a", "DataTransfer", {"vendorId": "v", "data": "\u202e" * 1000}]),
                    "DataTransfer",
                )
            ],
            [Frame(dumps([2, "b", "DataTransfer", deep]), "DataTransfer")],
        )
        assert not problems, problems
        assert h.stats.results == 2 and h.stats.boots == 1
