"""The OCPP listener against unauthenticated peers (issue 12, items 5, 16, 18, 19).

Real sockets on loopback: slow-loris clients, junk connections held open from one or many
source addresses (127.0.0.x), key guessing, hostile identities; the simulator is the charger.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import pytest
import structlog.testing
import websockets
from sqlalchemy import func, select

from evota.gateway.limits import (
    AuthFailures,
    PreAuthPool,
    client_source,
    parse_networks,
    source_of,
)
from evota.logging import escape, escape_controls
from evota.ocpp import identity
from evota.runtime import Runtime
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.fleet import ChargerSpec
from evota.store.models import Charger
from tests.conftest import ShiftedClock, api_client, basic, connect, provision, start_runtime
from tests.support import until

KEY = "auth-key-0123456789ab"
FAST = SimConfig(
    speed=6000.0,
    call_timeout=2.0,
    backoff_initial=0.05,
    backoff_max=0.2,
    ping_interval=None,
    close_timeout=0.5,
)


async def _status_of(coro) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        await coro
    return info.value.response.status_code


async def _junk(rt: Runtime, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, object]:
    """A socket from ``source`` that starts an upgrade and never finishes it."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", rt.ocpp_port, local_addr=(source, 0)
    )
    writer.write(b"GET /ocpp/junk HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


async def _closed(reader: asyncio.StreamReader, wait: float = 0.001) -> bool:
    """Whether the server closes this socket (EOF or reset) within ``wait`` seconds: a long
    wait for sockets that must be closed, a short look at those that must stay open."""
    try:
        return await asyncio.wait_for(reader.read(1), wait) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@asynccontextmanager
async def _charger(rt: Runtime, identity: str) -> AsyncIterator[SimulatedCharger]:
    await provision(rt, identity, KEY)
    sim = SimulatedCharger(ChargerSpec(identity, KEY), f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", FAST)
    sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


# -- item 5: the upgrade has a total deadline, pre-auth connections a cap ----------------------


async def test_slow_loris_is_closed_at_the_handshake_deadline(tmp_path, sqlite_url):
    rt = await start_runtime(tmp_path, sqlite_url, ocpp_handshake_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.ocpp_port)
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            header = b"GET /ocpp/CP-slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000
            for byte in header:
                writer.write(bytes([byte]))  # one byte every 50 ms: never idle for long
                sent += 1
                await asyncio.sleep(0.05)

        trickler = asyncio.create_task(trickle())
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        elapsed = time.monotonic() - started
        trickler.cancel()
        # Well before the sweeper's backstop (10 s); the peer was never idle for 0.5 s.
        assert 0.45 <= elapsed < 5, elapsed
        assert sent >= 5
        assert len(rt.gateway.preauth) == 0
        writer.close()
    finally:
        await rt.stop()


async def test_junk_from_one_address_cannot_lock_out_a_charger(tmp_path, sqlite_url):
    clock = ShiftedClock()
    rt = await start_runtime(
        tmp_path, sqlite_url, clock, ocpp_max_preauth=16, ocpp_max_preauth_per_address=4
    )
    try:
        junk = [await _junk(rt) for _ in range(4)]
        await until(lambda: len(rt.gateway.preauth) == 4)
        # While they are young a newcomer is turned away (a storm keeps its handshakes) …
        reader, writer = await _junk(rt)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        # … once they have been held a while, newcomers push the oldest out.
        clock.advance(seconds=3)
        junk += [await _junk(rt) for _ in range(2)]
        assert [await _closed(r, 5) for r, _ in junk[:2]] == [True, True]
        await until(lambda: rt.gateway.preauth.count("127.0.0.1") == 4)
        assert [await _closed(r) for r, _ in junk[2:]] == [False] * 4
        clock.advance(seconds=3)
        # While the cap's worth of junk is held, a charger from the same address gets in.
        async with _charger(rt, "CP-real") as sim:
            await until(lambda: sim.accepted)
            assert (sim.stats.connects, sim.stats.connect_failures) == (1, 0)
            assert rt.gateway.is_connected("CP-real")
        assert await _closed(junk[2][0], 5)  # the oldest junk made room
        assert rt.gateway.preauth.count("127.0.0.1") == 3
        for _, writer in junk:
            writer.close()  # type: ignore[attr-defined]
    finally:
        await rt.stop()


async def test_junk_from_many_addresses_cannot_lock_out_a_charger(tmp_path, sqlite_url):
    clock = ShiftedClock()
    rt = await start_runtime(
        tmp_path, sqlite_url, clock, ocpp_max_preauth=8, ocpp_max_preauth_per_address=2
    )
    try:
        sources = [f"127.0.0.{n}" for n in (2, 3, 4, 5)]
        junk = [await _junk(rt, source) for source in sources for _ in range(2)]
        await until(lambda: len(rt.gateway.preauth) == 8)  # the global cap, all held
        assert not any([await _closed(r) for r, _ in junk])
        clock.advance(seconds=3)  # held for a while
        async with _charger(rt, "CP-real2") as sim:
            await until(lambda: sim.accepted)
            assert (sim.stats.connects, sim.stats.connect_failures) == (1, 0)
        assert await _closed(junk[0][0], 5)  # the oldest overall made room
        assert len(rt.gateway.preauth) == 7
        for _, writer in junk:
            writer.close()  # type: ignore[attr-defined]
    finally:
        await rt.stop()


def test_preauth_pool_evicts_the_oldest_of_the_source_then_overall():
    pool: PreAuthPool[str] = PreAuthPool(max_total=3, max_per_source=2, min_age=2.0)
    assert pool.add("a1", "A", 0) == [] and pool.add("a2", "A", 0) == []
    assert pool.add("a3", "A", 5) == ["a1"]
    assert pool.add("b1", "B", 5) == []
    assert pool.add("b2", "B", 5) == ["a2"]  # total 4 > 3: the oldest overall
    pool.discard("b1")
    pool.discard("b1")  # twice is harmless
    assert (len(pool), pool.count("A"), pool.count("B")) == (2, 1, 1)
    assert "b2" in pool and "b1" not in pool


def test_preauth_pool_refuses_a_newcomer_rather_than_evict_a_young_handshake():
    """A reconnect storm: those over the cap are all fresh, so the newcomer is turned away
    (it retries) instead of dropping a handshake that is about to complete."""
    pool: PreAuthPool[str] = PreAuthPool(max_total=3, max_per_source=2, min_age=2.0)
    assert pool.add("a1", "A", 10.0) == [] and pool.add("a2", "A", 10.5) == []
    assert pool.add("a3", "A", 11.0) == ["a3"]
    assert pool.add("b1", "B", 11.0) == []
    assert pool.add("c1", "C", 11.5) == ["c1"]  # total: a1 is only 1.5 s old
    assert pool.add("c1", "C", 12.0) == ["a1"]  # now it is 2 s old: it makes room
    assert ("a1" in pool, "a3" in pool, len(pool)) == (False, False, 3)
    with pytest.raises(ValueError):
        PreAuthPool(max_total=2, max_per_source=3)


def test_sources_are_addresses_and_ipv6_prefixes():
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"


def test_preauth_caps_are_validated():
    from pydantic import ValidationError

    from evota.config import Settings

    with pytest.raises(ValidationError, match="ocpp_max_preauth"):
        Settings(ocpp_max_preauth=10, ocpp_max_preauth_per_address=11)


# -- item 16: failed keys are throttled, alerted, and answered alike --------------------------


async def test_many_wrong_keys_are_throttled_and_alerted(evota):
    await provision(evota, "CP-victim", KEY)
    limit = evota.settings.charger_auth_failures_per_id
    for n in range(limit):
        assert await _status_of(connect(evota, "CP-victim", f"guess-{n:016d}")) == 401
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(evota, "CP-victim", "guess-after-the-limit")
    assert info.value.response.status_code == 429
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 60
    # While throttled even the right key is refused: a guess cannot tell it is right.
    assert await _status_of(connect(evota, "CP-victim", KEY)) == 429
    async with api_client(evota) as api:
        alerts = await until(lambda: _alerts(api, "charger_auth_failures", "CP-victim"), timeout=10)
        assert len(alerts) == 1
        assert alerts[0]["detail"]["chargers"] == ["CP-victim"]
        assert f"{limit} failed authentications" in alerts[0]["message"]
        summary = (await api.get("/api/v1/alerts/summary")).json()
        assert summary["open"]["charger_auth_failures"] == 1
    # Another charger from elsewhere is unaffected by the victim's window.
    await provision(evota, "CP-bystander", KEY)
    ws = await connect(evota, "CP-bystander", KEY)
    await ws.close()


async def _alerts(api, rule: str, subject: str) -> list[dict]:
    r = await api.get("/api/v1/alerts", params={"rule": rule, "subject": subject})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_guessing_across_identities_throttles_the_source(tmp_path, sqlite_url):
    rt = await start_runtime(
        tmp_path, sqlite_url, charger_auth_failures_per_address=5, charger_auth_failures_per_id=50
    )
    try:
        await provision(rt, "CP-good", KEY)
        for n in range(5):
            assert await _status_of(connect(rt, f"CP-guess-{n}", KEY)) == 401
        assert await _status_of(connect(rt, "CP-good", KEY)) == 429  # the source is throttled
        async with api_client(rt) as api:
            await until(lambda: _alerts(api, "charger_auth_failures", "client:127.0.0.1"))
        # The same charger from another address is not.
        ws = await websockets.connect(
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp/CP-good",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic("CP-good", KEY)},
            local_addr=("127.0.0.2", 0),
        )
        await ws.close()
    finally:
        await rt.stop()


def test_behind_a_trusted_proxy_the_charger_address_counts():
    proxies = parse_networks(["10.0.0.5", "10.1.0.0/16"])
    # From the proxy: the right-most address the trusted proxies did not add.
    assert client_source("10.0.0.5", "192.0.2.7", proxies) == "192.0.2.7"
    assert client_source("10.0.0.5", "6.6.6.6, 192.0.2.7, 10.1.2.3", proxies) == "192.0.2.7"
    assert client_source("::ffff:10.0.0.5", "192.0.2.7", proxies) == "192.0.2.7"
    assert client_source("10.0.0.5", "2001:db8:1:2::9", proxies) == "2001:db8:1:2::/64"
    # Garbage, nothing outside the proxies, no header: the proxy itself.
    assert client_source("10.0.0.5", "192.0.2.7, junk", proxies) == "10.0.0.5"
    assert client_source("10.0.0.5", "10.1.9.9", proxies) == "10.0.0.5"
    assert client_source("10.0.0.5", None, proxies) == "10.0.0.5"
    # From anyone else the header is ignored: a client cannot pick its own address.
    assert client_source("192.0.2.99", "192.0.2.7", proxies) == "192.0.2.99"
    assert client_source("192.0.2.99", "192.0.2.7", ()) == "192.0.2.99"
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.5", "proxy.example"])


def test_a_trusted_proxy_is_held_only_to_the_total_cap():
    pool: PreAuthPool[str] = PreAuthPool(max_total=4, max_per_source=2, min_age=0)
    assert [pool.add(f"p{i}", "10.0.0.5", i, per_source=False) for i in range(4)] == [[]] * 4
    assert pool.add("p4", "10.0.0.5", 4, per_source=False) == ["p0"]  # the total cap still holds
    assert pool.count("10.0.0.5") == 4


async def test_chargers_behind_a_trusted_proxy_are_throttled_by_their_own_address(
    tmp_path, sqlite_url
):
    """A TLS proxy carries the whole fleet from one address: a few chargers with a wrong key
    must not lock every other charger out, and the header counts only from the proxy."""
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        charger_auth_failures_per_address=3,
        charger_auth_failures_per_id=50,
        ocpp_trusted_proxies=["127.0.0.1"],
    )

    def via(client: str, who: str, key: str):
        return websockets.connect(
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp/{who}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(who, key), "X-Forwarded-For": client},
            open_timeout=5,
        )

    try:
        await provision(rt, "CP-good", KEY)
        for n in range(3):
            assert await _status_of(via("192.0.2.66", f"CP-guess-{n}", KEY)) == 401
        assert await _status_of(via("192.0.2.66", "CP-good", KEY)) == 429
        ws = await via("192.0.2.7", "CP-good", KEY)  # another charger behind the same proxy
        await ws.close()
        async with api_client(rt) as api:
            await until(lambda: _alerts(api, "charger_auth_failures", "client:192.0.2.66"))
    finally:
        await rt.stop()
    # Not a trusted proxy: the header is ignored and the peer's address is throttled.
    plain = tmp_path / "plain"
    plain.mkdir()
    rt = await start_runtime(
        plain,
        f"sqlite+aiosqlite:///{plain / 'evota.db'}",
        charger_auth_failures_per_address=3,
        charger_auth_failures_per_id=50,
    )
    try:
        await provision(rt, "CP-good", KEY)
        for n in range(3):
            assert await _status_of(via("192.0.2.66", f"CP-guess-{n}", KEY)) == 401
        assert await _status_of(via("192.0.2.7", "CP-good", KEY)) == 429
    finally:
        await rt.stop()


def test_failures_fill_a_window_once_per_quiet_period():
    failures = AuthFailures(per_identity=2, per_source=100, window=60, quiet=3600)
    assert failures.failed("CP-1", "A", 0) == []
    assert failures.blocked("CP-1", "A", 1) is None
    [filled] = failures.failed("CP-1", "A", 1)
    assert (filled.subject, filled.failures) == ("CP-1", 2)
    assert failures.blocked("CP-1", "A", 2) == pytest.approx(58)
    assert failures.blocked("CP-2", "A", 2) is None  # per identity
    assert failures.blocked("CP-1", "A", 61) is None  # the window slid on
    assert failures.failed("CP-1", "A", 61) == failures.failed("CP-1", "A", 62) == []  # quiet
    assert failures.blocked("CP-1", "A", 63) is not None


async def _raw_upgrade(rt: Runtime, who: str, key: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.ocpp_port)
    writer.write(
        f"GET /ocpp/{who} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
        f"Authorization: {basic(who, key)}\r\n\r\n".encode()
    )
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    # The Date header is the only thing allowed to differ (it has one-second resolution).
    return re.sub(rb"\r\nDate: [^\r]*", b"", response)


async def test_unknown_identity_and_wrong_key_get_identical_answers(evota_sqlite):
    await provision(evota_sqlite, "CP-known", KEY)
    with structlog.testing.capture_logs() as logs:
        wrong_key = await _raw_upgrade(evota_sqlite, "CP-known", "not-the-right-key-00")
        unknown = await _raw_upgrade(evota_sqlite, "CP-unknown", KEY)
    assert wrong_key.startswith(b"HTTP/1.1 401 ")
    assert wrong_key == unknown
    # The server log keeps the difference for the operator.
    refused = {
        (e.get("charger_id"), e.get("reason")) for e in logs if e["event"] == "charger refused"
    }
    assert ("CP-known", "wrong authorization key") in refused, logs
    assert ("CP-unknown", "unknown charger") in refused, logs


# -- item 18: one identity rule, at the handshake and in the API ------------------------------

BAD_IDENTITIES = ["CP 1", "CP\x00", "CP\x1b[31m", "CPé", "CP%", "CP/1", "CP:1", "x" * 49, ""]


def test_identity_rule():
    for good in ["CP-1", "a.b_c*d=e+f|g@h", "x" * 48]:
        assert identity.problem(good) is None and identity.is_valid(good)
    for bad in BAD_IDENTITIES:
        assert identity.problem(bad) is not None and not identity.is_valid(bad), repr(bad)


@pytest.mark.parametrize("bad", BAD_IDENTITIES[:-1], ids=repr)
async def test_open_registration_refuses_identities_the_api_cannot_address(
    tmp_path, sqlite_url, bad
):
    rt = await start_runtime(tmp_path, sqlite_url, registration="open")
    try:
        coro = websockets.connect(
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp/{quote(bad, safe='')}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={
                "Authorization": "Basic " + base64.b64encode(f"{bad}:{KEY}".encode()).decode()
            },
            open_timeout=5,
        )
        assert await _status_of(coro) == 404  # before the upgrade
        async with rt.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(Charger))).scalar() == 0
    finally:
        await rt.stop()


async def test_the_api_applies_the_same_identity_rule(evota_sqlite):
    async with api_client(evota_sqlite) as api:
        for bad in BAD_IDENTITIES:
            r = await api.post("/api/v1/chargers", json={"id": bad, "auth_key": KEY})
            assert r.status_code == 422, (bad, r.text)
        for bad in ["CP 1", "CP%1B", "CP%C3%A9"]:
            assert (await api.get(f"/api/v1/chargers/{bad}")).status_code == 422
        # What the rule allows (identifierString without ':') works on both sides.
        odd = "a.b_c*d=e+f|g@h"
        assert (await api.post("/api/v1/chargers", json={"id": odd, "auth_key": KEY})).is_success
        assert (await api.get(f"/api/v1/chargers/{quote(odd, safe='')}")).status_code == 200
    ws = await websockets.connect(
        f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/ocpp/{quote(odd, safe='')}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": basic(odd, KEY)},
        open_timeout=5,
    )
    await ws.close()


# -- item 19: control characters from outside never reach a log line raw ----------------------


def test_escape_controls_in_every_string_field():
    event = {
        "event": "refused \x1b[2J",
        "identity": "\x1b[31mEVIL\r\nfake line\x00\x7f\x85\u2028",
        "count": 3,
        "exception": "Traceback\n  boom \x1b[0m",
    }
    out = escape_controls(None, "info", event)
    assert out["event"] == "refused \\x1b[2J"
    assert out["identity"] == "\\x1b[31mEVIL\\r\\nfake line\\x00\\x7f\\x85\\u2028"
    assert out["count"] == 3
    assert out["exception"] == "Traceback\n  boom \\x1b[0m"  # a traceback keeps its lines
    assert escape("plain") == "plain"


@pytest.mark.slow
async def test_hostile_identity_is_logged_escaped(tmp_path):
    """`evota serve` as operators run it; its real log output is read back."""
    # Every listener on a free port: the download listener's default (8001) is also the
    # demo's, which another test worker may be running at the same moment.
    env = {
        **os.environ,
        "COLUMNS": "200",
        "EVOTA_ADMIN_TOKEN": "t" * 24,
        "EVOTA_DOWNLOAD_PORT": "0",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evota",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--http-port",
        "0",
        "--ocpp-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        port = await asyncio.wait_for(_ocpp_port(proc.stderr), 60)
        hostile = "\x1b[31mEVIL\nfake\x00"
        coro = websockets.connect(
            f"ws://127.0.0.1:{port}/ocpp/{quote(hostile, safe='')}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic("x", KEY)},
            open_timeout=5,
        )
        assert await _status_of(coro) == 404
        lines: list[bytes] = []
        while not any(b"invalid identity" in line for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line, b"".join(lines)
            lines.append(line)
    finally:
        proc.terminate()
        await proc.wait()
    output = b"".join(lines)
    assert b"\x1b" not in output and b"\x00" not in output
    [refused] = [line for line in lines if b"invalid identity" in line]
    assert b"\\x1b[31mEVIL\\nfake\\x00" in refused
    assert not any(line.startswith(b"fake") for line in lines)


async def _ocpp_port(stderr: asyncio.StreamReader) -> int:
    seen = b""
    while True:
        line = await stderr.readline()
        assert line, seen.decode(errors="replace")
        seen += line
        found = re.search(rb"ws://127\.0\.0\.1:(\d+)/ocpp/", seen)
        if found:
            return int(found.group(1))


async def test_the_cli_shows_what_a_charger_reports_without_performing_it(evota_sqlite):
    """Same class as the logs: a charger's vendor string reaches the operator's terminal."""
    from tests.test_cli import invoke

    vendor = "Acme [/red]\x1b[2J"  # not valid markup, and a clear-screen sequence
    await provision(evota_sqlite, "CP-vendor", KEY)
    sim = SimulatedCharger(
        ChargerSpec("CP-vendor", KEY, vendor=vendor),
        f"ws://127.0.0.1:{evota_sqlite.ocpp_port}/ocpp",
        FAST,
    )
    sim.start()
    try:
        await until(lambda: sim.accepted)
        await evota_sqlite.fleet.writer.flush()
    finally:
        await sim.stop()
    for args in (["charger", "list"], ["charger", "show", "CP-vendor"]):
        r = await invoke(evota_sqlite, *args)
        assert r.exit_code == 0, r.output  # the markup error no longer ends the command
        assert "\x1b" not in r.stdout and "[/red]" in r.stdout
    assert "Acme [/red]\\x1b[2J" in r.stdout  # `show` has room for the whole value


async def test_an_oversized_upgrade_request_is_refused(evota_sqlite):
    """Within the caps, a pending socket must not buffer a megabyte of headers either."""
    reader, writer = await asyncio.open_connection("127.0.0.1", evota_sqlite.ocpp_port)
    writer.write(b"GET /ocpp/CP-big HTTP/1.1\r\n")
    for n in range(40):  # 40 headers of 1 KiB: within websockets' own limits
        writer.write(f"X-Pad-{n}: {'a' * 1000}\r\n".encode())
    try:
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    except ConnectionResetError:
        answer = b""  # closed with our bytes unread: the kernel resets, the 431 may be lost
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    await until(lambda: len(evota_sqlite.gateway.preauth) == 0)
    writer.close()
