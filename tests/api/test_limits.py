"""Request body limits over real HTTP on loopback (evota.api.limits).

A 150 MB JSON body without a token was once read and parsed in full before authentication
(the server grew by 430 MB). Now the answer comes from the request head: each test sends a
head that declares (or streams) far more than it ever writes, and gets the answer while most
of the body is still unsent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evota.api.limits import FORM_OVERHEAD, LOGIN_MAX_BYTES, body_rule
from evota.config import Settings
from evota.runtime import Runtime
from tests.conftest import TOKEN, api_client, start_runtime

HUGE = 150_000_000  # declared, never sent
SENT = 64 * 1024  # what the client writes before it reads the answer
STREAM_CAP = 64 * 1024 * 1024  # a chunked sender gives up here (the server never answered)


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(tmp_path, sqlite_url, firmware_max_bytes=2_000_000)
    yield runtime
    await runtime.stop()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, json.loads(body)


async def _declared(
    rt: Runtime, path: str, length: int, token: str | None, content_type: str = "application/json"
) -> tuple[int, dict[str, str], Any]:
    """Declare ``length`` body bytes, write only SENT of them, and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.http_port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: evota\r\n{auth}Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        writer.write(head.encode() + b"[" + b" " * (SENT - 1))
        await writer.drain()
        status, headers, body = await asyncio.wait_for(_response(reader), 10)
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # and it stopped reading
        return status, headers, body
    finally:
        writer.close()


async def _streamed(rt: Runtime, path: str, token: str | None) -> tuple[int, Any, int]:
    """Stream an endless chunked body until the server answers; (status, body, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.http_port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: evota\r\n{auth}Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    chunk = b" " * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    async def write_forever() -> None:
        nonlocal sent
        writer.write(head.encode() + b"1\r\n[\r\n")
        while sent < STREAM_CAP:
            writer.write(frame)
            await writer.drain()
            sent += len(chunk)

    writing = asyncio.create_task(write_forever())
    try:
        status, _, body = await asyncio.wait_for(_response(reader), 30)
        return status, body, sent
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        writer.close()


async def test_a_body_without_credentials_is_refused_before_it_is_sent(rt: Runtime) -> None:
    status, headers, body = await _declared(rt, "/api/v1/sites", HUGE, None)
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert body["field"] == "Authorization" and headers["www-authenticate"] == "Bearer"
    # a junk token is bounded by the size limit like any other
    status, _, body = await _declared(rt, "/api/v1/sites", HUGE, "not-a-token")
    assert status == 413
    # without a length, the head alone (Transfer-Encoding) is enough to refuse
    status, body, sent = await _streamed(rt, "/api/v1/sites", None)
    assert status == 401 and sent < STREAM_CAP


async def test_an_oversized_body_with_a_token_is_413_naming_the_limit(rt: Runtime) -> None:
    status, headers, body = await _declared(rt, "/api/v1/sites", HUGE, TOKEN)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert str(rt.settings.api_max_body_bytes) in body["detail"] and body["field"] == "(body)"


async def test_a_chunked_body_is_cut_off_at_the_limit_while_it_streams(rt: Runtime) -> None:
    status, body, sent = await _streamed(rt, "/api/v1/sites", TOKEN)
    assert status == 413 and str(rt.settings.api_max_body_bytes) in body["detail"]
    assert sent < STREAM_CAP  # the answer came long before the sender gave up
    # the server is fine afterwards, and small bodies pass
    async with api_client(rt) as api:
        r = await api.post("/api/v1/sites", json={"id": "berlin", "name": "Berlin"})
        assert r.status_code == 201, r.text


async def test_firmware_uploads_have_their_own_limit(rt: Runtime) -> None:
    limit = rt.settings.firmware_max_bytes + FORM_OVERHEAD
    status, _, body = await _declared(
        rt, "/api/v1/firmware", limit + 1, TOKEN, "multipart/form-data; boundary=x"
    )
    assert status == 413 and str(limit) in body["detail"] and "firmware" in body["detail"]
    status, _, _ = await _declared(
        rt, "/api/v1/firmware", limit, None, "multipart/form-data; boundary=x"
    )
    assert status == 401


async def test_login_and_charger_uploads_need_no_credentials_but_are_bounded(
    rt: Runtime,
) -> None:
    status, _, body = await _declared(rt, "/api/v1/auth/login", HUGE, None)
    assert status == 413 and str(LOGIN_MAX_BYTES) in body["detail"]
    status, _, body = await _declared(rt, "/api/v1/uploads/some-token/f.log", HUGE, None)
    assert status == 413 and "charger upload" in body["detail"]
    async with api_client(rt, token=None) as anonymous:  # small bodies reach the routes
        r = await anonymous.post("/api/v1/auth/login", json={"username": "x", "password": "y"})
        assert r.status_code == 401 and r.json()["title"] != "Request body too large"
        r = await anonymous.put("/api/v1/uploads/bad-token/f.log", content=b"data")
        assert r.status_code == 403  # the route's own answer: the token is checked there


def test_body_rule() -> None:
    s = Settings(firmware_max_bytes=10_000, upload_max_bytes=5_000, api_max_body_bytes=2048)
    assert body_rule("POST", "/api/v1/firmware", s).limit == 10_000 + FORM_OVERHEAD
    assert body_rule("POST", "/api/v1/firmware/", s).credentials
    assert body_rule("POST", "/api/v1/firmware/abc/revoke", s).limit == 2048
    upload = body_rule("PUT", "/api/v1/uploads/t/name.log", s)
    assert (upload.limit, upload.credentials) == (5_000 + FORM_OVERHEAD, False)
    assert body_rule("POST", "/api/v1/auth/login", s).credentials is False
    assert body_rule("PATCH", "/api/v1/chargers/CP-1", s).limit == 2048
    assert body_rule("POST", "/console/api/campaign-preview", s).credentials
