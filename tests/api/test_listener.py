"""The HTTP listener against connections that never finish a request head (evota.api.listener).

uvicorn set no timer before a request head was complete: idle or dripping connections stayed
open forever and could exhaust the file descriptors the OCPP gateway shares.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from evota.api.listener import MAX_PENDING, guarded_h11, pending_connections
from evota.runtime import Runtime
from tests.conftest import start_runtime


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
async def small(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, type]]:
    """A real uvicorn on loopback with a 1 s head deadline (or the parameter's) and 8
    pending connections."""
    protocol = guarded_h11(head_timeout=getattr(request, "param", 1.0), max_pending=8)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # clients queue in the backlog until the server runs
    config = uvicorn.Config(_hello, http=protocol, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield sock.getsockname()[1], protocol
    server.should_exit = True
    await task


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except TimeoutError:
        return False


async def test_a_dripping_request_head_is_cut_off(small: tuple[int, type]) -> None:
    port, protocol = small
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\n")
    closed = False
    while not closed and time.monotonic() - started < 10:
        writer.write(b"X")  # a byte every 0.2 s: never idle
        closed = await _closed_within(reader, 0.2)
    assert closed and time.monotonic() - started < 4
    writer.close()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _closed_within(idle_reader, 4)  # one that sends nothing at all, too
    idle_writer.close()
    assert pending_connections(protocol) == 0


async def test_keep_alive_and_real_requests_still_work(small: tuple[int, type]) -> None:
    port, protocol = small
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            assert (await client.get("/")).text == "hello"
    assert pending_connections(protocol) <= 1  # the kept-alive one waits for its next head


@pytest.mark.parametrize("small", [60.0], indirect=True)  # no deadline within the test
async def test_junk_connections_evict_the_oldest_not_the_newcomer(
    small: tuple[int, type],
) -> None:
    port, protocol = small
    junk = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Slow: ")
        junk.append((reader, writer))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/")).text == "hello"
    assert pending_connections(protocol) <= 8
    assert await _closed_within(junk[0][0], 5)  # the oldest was evicted (no deadline yet)
    assert not await _closed_within(junk[-1][0], 0.1)  # the newest is still held
    for _, writer in junk:
        writer.close()


@pytest.fixture
async def rt(tmp_path: Any, sqlite_url: str) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(tmp_path, sqlite_url)
    yield runtime
    await runtime.stop()


async def test_evota_serves_while_more_junk_connections_than_the_cap_are_open(
    rt: Runtime,
) -> None:
    socks = []
    try:
        for _ in range(MAX_PENDING + 100):
            s = socket.create_connection(("127.0.0.1", rt.http_port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.http_port}") as client:
            assert (await client.get("/healthz")).status_code == 200
        assert rt._uvicorn is not None
        assert pending_connections(rt._uvicorn.config.http_protocol_class) <= MAX_PENDING
    finally:
        for s in socks:
            s.close()
