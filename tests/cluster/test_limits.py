"""Shared limits (evota.cluster.limits): login throttling and lockouts, charger-key brute-force
throttling and the download caps hold across nodes on one Redis, a dead node's download slots
lapse with their lease, and an unreachable Redis never opens a security limit."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from evota.cluster.limits import (
    UNREACHABLE,
    SharedAuthFailures,
    SharedDownloadCaps,
    SharedLoginThrottle,
    SlidingWindows,
    sync_client,
)
from evota.cluster.redis import connect
from evota.firmware import tokens
from evota.firmware.delivery import DeliveryServer, ServedImage, download_path
from evota.operators.login import LoginThrottle
from evota.runtime import Runtime
from evota.signed_tokens import new_key
from tests.cluster.harness import cluster_redis, pg_database, start_nodes  # noqa: F401
from tests.conftest import ShiftedClock, basic, provision
from tests.redis_fixtures import RedisServer

KEY = "correct-horse-battery"

# -- the rule is the single-node rule ----------------------------------------------------------


@hsettings(max_examples=40)
@given(
    limit=st.integers(1, 4),
    window=st.integers(1, 10),
    steps=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["a", "b"]), st.booleans()), max_size=25
    ),
)
def test_the_redis_window_decides_as_the_in_process_one(
    redis_server: RedisServer, limit: int, window: int, steps: list[tuple[int, str, bool]]
) -> None:
    """Any sequence of attempts (recorded or only looked at) gets the same answers, waits
    included, from the Lua window as from LoginThrottle."""

    async def run() -> None:
        client = connect(redis_server.url)
        await client.flushall()  # each example starts empty
        shared = SlidingWindows(client, "prop", limit, float(window))
        local = LoginThrottle(limit, float(window))
        now = 1_800_000_000.0
        try:
            for gap, name, record in steps:
                now += gap
                if record:
                    assert await shared.check(name, now) == local.check(name, now)
                else:
                    assert await shared.blocked(name, now) == local.blocked(name, now)
        finally:
            await client.aclose()

    asyncio.run(run())


async def test_window_keys_expire(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        windows = SlidingWindows(client, "ttl", 3, 60.0)
        await windows.check("10.0.0.1", time.time())
        ttl = await client.pttl("evota:ttl:10.0.0.1")
        assert 0 < ttl <= 60_001  # nothing grows forever: the key goes a window after use
    finally:
        await client.aclose()


# -- two nodes ---------------------------------------------------------------------------------


@pytest.fixture
async def two_nodes(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[list[Runtime]]:
    overrides = getattr(request, "param", {})
    nodes = await start_nodes(tmp_path, pg_database, redis_url, clock=ShiftedClock(), **overrides)
    yield nodes
    for node in reversed(nodes):
        await node.stop()


def _api(node: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}", timeout=15)


async def _login(node: Runtime, username: str, password: str) -> httpx.Response:
    async with _api(node) as api:
        return await api.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )


async def _add_user(node: Runtime, username: str, password: str) -> None:
    from tests.conftest import TOKEN

    async with _api(node) as api:
        r = await api.post(
            "/api/v1/users",
            json={"username": username, "password": password, "roles": ["viewer"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize(
    "two_nodes", [{"login_max_failures": 5, "login_rate_per_minute": 100}], indirect=True
)
async def test_five_failed_logins_over_two_nodes_lock_the_account(two_nodes: list[Runtime]) -> None:
    a, b = two_nodes
    await _add_user(a, "alice", "correct horse battery staple")
    for i in range(4):
        r = await _login((a, b)[i % 2], "alice", "wrong-password")
        assert r.status_code == 401, r.text
    r = await _login(b, "alice", "wrong-password")  # the fifth: locks, on whichever node
    assert r.status_code == 423, r.text
    for node in (a, b):  # locked everywhere, even with the right password
        r = await _login(node, "alice", "correct horse battery staple")
        assert r.status_code == 423, r.text


@pytest.mark.parametrize("two_nodes", [{"login_rate_per_minute": 4}], indirect=True)
async def test_login_attempts_from_one_address_are_throttled_across_nodes(
    two_nodes: list[Runtime],
) -> None:
    a, b = two_nodes
    for i in range(4):  # two on each node: one node alone would allow four more
        r = await _login((a, b)[i % 2], f"nobody{i}", "wrong-password")
        assert r.status_code == 401, r.text
    for node in (a, b):
        r = await _login(node, "nobody", "wrong-password")
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
    assert isinstance(a.clock, ShiftedClock) and a.clock is b.clock
    a.clock.advance(seconds=61)  # both nodes read the same (moved) clock
    assert (await _login(b, "nobody", "wrong-password")).status_code == 401


async def _handshake(node: Runtime, identity: str, key: str) -> int:
    try:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{node.ocpp_port}/ocpp/{identity}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic(identity, key)},
            compression=None,
            open_timeout=5,
        )
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


@pytest.mark.parametrize(
    "two_nodes",
    [{"charger_auth_failures_per_id": 4, "charger_auth_failures_per_address": 100}],
    indirect=True,
)
async def test_a_charger_id_brute_forced_across_two_nodes_is_throttled(
    two_nodes: list[Runtime],
) -> None:
    a, b = two_nodes
    await provision(a, "CP-victim", KEY)
    for i in range(4):  # two wrong guesses on each node
        assert await _handshake((a, b)[i % 2], "CP-victim", f"guess-{i}-xxxxxxxx") == 401
    for node in (a, b):  # even the right key waits: the identity is throttled everywhere
        assert await _handshake(node, "CP-victim", KEY) == 429
    assert await _handshake(a, "CP-other", KEY) == 401  # another identity is not
    assert isinstance(a.clock, ShiftedClock) and a.clock is b.clock
    a.clock.advance(seconds=61)
    assert await _handshake(b, "CP-victim", KEY) == 101


# -- download caps -----------------------------------------------------------------------------

SIZE = 32 * 1024 * 1024  # sparse; more than loopback buffers hold, so a held download stays open


@pytest.fixture
def image(tmp_path: Path) -> tuple[str, ServedImage]:
    import hashlib

    path = tmp_path / "big"
    with path.open("wb") as f:
        f.truncate(SIZE)
    return hashlib.sha256(bytes(SIZE)).hexdigest(), ServedImage(path, SIZE)


class Server:
    def __init__(self, caps: SharedDownloadCaps, key: bytes, image: tuple[str, ServedImage]):
        self.sha, served = image
        self.key = key
        self.caps = caps
        self.server = DeliveryServer(
            keys=[key],
            lookup={self.sha: served}.get,
            site_of={"CP-1": "berlin", "CP-2": "berlin", "CP-3": "paris"}.get,
            max_concurrent=99,  # the shared caps decide
            max_per_site=99,
            caps=caps,
            timeout=5,
        )
        self.port = self.server.start("127.0.0.1", 0)

    def path(self, charger: str, job: str) -> str:
        grant = tokens.DownloadGrant(job, charger, self.sha, int(time.time()) + 3600)
        return download_path(charger, self.sha, tokens.issue(grant, self.key))

    def hold(self, charger: str, job: str) -> socket.socket:
        """A download the client stops reading: the server blocks mid-body, holding a slot."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(f"GET {self.path(charger, job)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        return sock

    def get_status(self, charger: str, job: str = "job-x") -> int:
        r = httpx.get(
            f"http://127.0.0.1:{self.port}{self.path(charger, job)}",
            headers={"Range": "bytes=0-0"},
            timeout=5,
        )
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "30"
        return r.status_code


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture
def servers(redis_url: str, image: tuple[str, ServedImage]) -> Iterator[list[Server]]:
    key = new_key()
    made = [Server(SharedDownloadCaps(sync_client(redis_url), 2, 1), key, image) for _ in range(2)]
    yield made
    for s in made:
        s.server.stop()
        s.caps.close()


def test_the_download_caps_hold_across_two_nodes(servers: list[Server]) -> None:
    a, b = servers
    held_a = a.hold("CP-1", "job-a")  # berlin, on node a
    _wait(lambda: a.caps.active == 1)
    assert b.get_status("CP-2") == 503  # berlin's one slot is taken, on the other node
    held_b = b.hold("CP-3", "job-b")  # paris: the second global slot
    _wait(lambda: b.caps.active == 1)
    assert a.get_status("CP-9") == 503  # no site, but the global cap of 2 is full
    held_a.close()
    _wait(lambda: a.caps.active == 0)
    assert b.get_status("CP-2") == 206  # freed on a, usable on b
    held_b.close()
    _wait(lambda: b.caps.active == 0)


def test_a_live_node_keeps_its_slots_by_renewing_them(redis_url: str) -> None:
    shift = [0.0]
    now = lambda: time.time() + shift[0]  # noqa: E731
    a = SharedDownloadCaps(sync_client(redis_url), 1, 1, now, lease=30)
    b = SharedDownloadCaps(sync_client(redis_url), 1, 1, now, lease=30)
    try:
        assert a.acquire("berlin") is None
        shift[0] += 20
        a.renew()
        shift[0] += 20  # 40 s after the slot was taken, 20 s after its renewal
        assert b.acquire("berlin") == "global"
        a.release("berlin")
        assert b.acquire("berlin") is None
    finally:
        a.close()
        b.close()


HOLDER = """
import sys, time
from evota.cluster.limits import SharedDownloadCaps, sync_client
caps = SharedDownloadCaps(sync_client(sys.argv[1]), 1, 1)
assert caps.acquire("berlin") is None
print("held", flush=True)
time.sleep(600)
"""


def test_a_node_killed_mid_download_frees_its_slot_after_the_lease(redis_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        shift = [0.0]
        other = SharedDownloadCaps(
            sync_client(redis_url), 1, 1, lambda: time.time() + shift[0], lease=30
        )
        try:
            assert other.acquire("berlin") == "global"
            holder.send_signal(signal.SIGKILL)  # nobody releases anything
            holder.wait(10)
            assert other.acquire("berlin") == "global"  # the lease still runs
            shift[0] = 31  # one lease later
            assert other.acquire("berlin") is None
        finally:
            other.close()
    finally:
        holder.kill()
        holder.wait(10)


# -- Redis unreachable -------------------------------------------------------------------------


@pytest.fixture
def down_redis(cluster_redis: RedisServer) -> Iterator[RedisServer]:  # noqa: F811
    """A Redis of the test's own, stopped (start it again to test the recovery)."""
    cluster_redis.stop()
    yield cluster_redis


async def test_without_redis_login_attempts_fall_back_to_this_nodes_window(
    down_redis: RedisServer,
) -> None:
    client = connect(down_redis.url)
    try:
        throttle = SharedLoginThrottle(client, 2, time.time)
        throttle._breaker.retry = 0.0  # ask Redis every time (not once a second)
        assert await throttle.check("10.0.0.1") is None
        assert await throttle.check("10.0.0.1") is None
        assert await throttle.check("10.0.0.1") is not None  # never open: the local limit
        down_redis.start()
        assert await throttle.check("10.0.0.1") is None  # Redis decides again (empty)
        assert await client.exists("evota:login:10.0.0.1") == 1
    finally:
        await client.aclose()


async def test_a_node_without_redis_still_answers_logins_and_throttles_them(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> None:
    (node,) = await start_nodes(
        tmp_path, pg_database, cluster_redis.url, n=1, clock=ShiftedClock(), login_rate_per_minute=2
    )
    try:
        cluster_redis.stop()
        assert node.shared_limits is not None
        node.shared_limits.login._breaker.retry = 0.0  # ask Redis every time
        for _ in range(2):
            assert (await _login(node, "nobody", "wrong-password")).status_code == 401
        assert (await _login(node, "nobody", "wrong-password")).status_code == 429
    finally:
        if cluster_redis.process is None:
            cluster_redis.start()
        await node.stop()


async def test_without_redis_failed_charger_keys_fall_back_to_this_nodes_windows(
    down_redis: RedisServer,
) -> None:
    client = connect(down_redis.url)
    try:
        failures = SharedAuthFailures(client, 2, 100, 60.0, time.time)
        assert await failures.failed("CP-1", "10.0.0.1") == []
        filled = await failures.failed("CP-1", "10.0.0.1")
        assert [f.subject for f in filled] == ["CP-1"]  # the alert still fires
        assert await failures.blocked("CP-1", "10.0.0.1") is not None
        assert await failures.blocked("CP-2", "10.0.0.1") is None
    finally:
        await client.aclose()


def test_without_redis_downloads_are_deferred_and_resume_when_it_is_back(
    cluster_redis: RedisServer,  # noqa: F811
    image: tuple[str, ServedImage],
) -> None:
    caps = SharedDownloadCaps(sync_client(cluster_redis.url, timeout=1.0), 2, 2)
    caps._breaker.retry = 0.0  # ask Redis every time (not once a second)
    server = Server(caps, new_key(), image)
    try:
        held = server.hold("CP-1", "job-a")  # running when Redis goes: it goes on
        _wait(lambda: caps.active == 1)
        cluster_redis.stop()
        assert caps.acquire("paris") == UNREACHABLE
        assert server.get_status("CP-3") == 503  # fail closed, with Retry-After
        held.close()
        _wait(lambda: caps.active == 0)  # released locally; its lease lapses in Redis
        cluster_redis.start()
        assert server.get_status("CP-3") == 206
    finally:
        server.server.stop()
        caps.close()
