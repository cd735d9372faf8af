"""The nginx configuration in docs/security-profiles.md ("Behind a proxy"), run as written in
front of evota: Debian's nginx terminates TLS and forwards the verified client certificate.

Only the paths and ports of the documented block are replaced; if the documentation changes,
this test runs the new text. nginx is a Debian package that .ci/run and scripts/test install.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import websockets

from evota.runtime import Runtime
from tests import pki_fixtures
from tests.conftest import basic, provision, start_runtime
from tests.gateway.test_tls import client_context, status_of
from tests.pki_fixtures import CHARGER_ID, CPO, Credential, Pki
from tests.support import free_port, until

pki = pki_fixtures.pki
ROOT = Path(__file__).resolve().parents[2]
KEY = "proxy-key-0123456789ab"


def documented_nginx() -> str:
    """The ```nginx block of the "Behind a proxy" section."""
    text = (ROOT / "docs" / "security-profiles.md").read_text()
    section = text.split("## Behind a proxy", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```nginx\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/security-profiles.md: one nginx block under Behind a proxy"
    return str(blocks[0])


@pytest.fixture
def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.fail("nginx is not installed: install Debian's nginx package (scripts/test does)")
    return found


@pytest.fixture
async def evota_behind_nginx(
    tmp_path: Path,
    sqlite_url: str,
    pki: Pki,
    nginx_binary: str,
) -> AsyncIterator[tuple[Runtime, int]]:
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_trusted_proxies=["127.0.0.1"],
        ocpp_client_cert_header="X-Client-Cert",
        ocpp_charger_ca=pki.charger_ca,
        ocpp_crl=pki.crl,
        cpo_name=CPO,
    )
    port = free_port()
    block = (
        documented_nginx()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        .replace("/etc/evota/tls/server.pem", str(pki.server.cert_path))
        .replace("/etc/evota/tls/server.key", str(pki.server.key_path))
        .replace("/etc/evota/tls/charger-ca.pem", str(pki.charger_ca))
        .replace("/etc/evota/tls/charger-ca.crl.pem", str(pki.crl))
        .replace("127.0.0.1:9000", f"127.0.0.1:{rt.ocpp_port}")
    )
    assert "/etc/evota" not in block and "9000" not in block
    work = tmp_path / "nginx"
    work.mkdir()
    temp_paths = "\n".join(
        f"    {kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp_paths}
{block}
}}
"""
    )
    log = work / "error.log"
    proc = await asyncio.create_subprocess_exec(
        nginx_binary,
        *("-p", str(work), "-c", str(conf), "-e", str(log)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        await until(
            lambda: _listening(port, proc),
            describe=lambda _: f"nginx is not listening: {_read(log)}",
        )
        yield rt, port
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await rt.stop()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _listening(port: int, proc: asyncio.subprocess.Process) -> bool:
    """nginx reports no readiness: its socket accepting is the sign (a crash fails at once)."""
    assert proc.returncode is None, f"nginx exited with {proc.returncode}"
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def _via(
    port: int, ctx: ssl.SSLContext, key: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    extra = dict(headers or {})
    if key is not None:
        extra["Authorization"] = basic(CHARGER_ID, key)
    return websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/{CHARGER_ID}",
        ssl=ctx,
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=extra,
        open_timeout=5,
    )


def _forged(cred: Credential) -> dict[str, str]:
    return {"X-Client-Cert": quote(cred.cert_path.read_text()), "X-Forwarded-Proto": "https"}


async def test_the_documented_nginx_config_carries_profiles_2_and_3(
    evota_behind_nginx: tuple[Runtime, int],
    pki: Pki,
) -> None:
    rt, port = evota_behind_nginx
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    await provision(rt, "CP-P2", KEY, security_profile=2)
    # Profile 3: nginx verifies, forwards the certificate, evota checks it again.
    async with _via(port, client_context(pki.server_ca, pki.good)):
        assert rt.gateway.is_connected(CHARGER_ID)
    # Profile 2 through the proxy: TLS, Basic auth, no certificate.
    two = websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/CP-P2",
        ssl=client_context(pki.server_ca),
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": basic("CP-P2", KEY)},
        open_timeout=5,
    )
    async with two:
        assert rt.gateway.is_connected("CP-P2")
    # nginx refuses what it cannot verify (400), evota what does not identify the charger.
    assert await status_of(_via(port, client_context(pki.server_ca, pki.wrong_ca))) == 400
    assert await status_of(_via(port, client_context(pki.server_ca, pki.revoked))) == 400
    assert await status_of(_via(port, client_context(pki.server_ca, pki.wrong_cn))) == 403
    assert await status_of(_via(port, client_context(pki.server_ca, pki.wrong_o))) == 403
    # A client without a certificate cannot smuggle one in a header of its own.
    forged = _forged(pki.good)
    assert await status_of(_via(port, client_context(pki.server_ca), headers=forged)) == 401
    no_cert = client_context(pki.server_ca)
    assert await status_of(_via(port, no_cert, KEY, headers=forged)) == 403  # a downgrade
    assert not rt.gateway.is_connected(CHARGER_ID)


def test_the_documented_block_is_the_one_run() -> None:
    """The config names the four OCPP suites and forwards the verified certificate only."""
    block = documented_nginx()
    for suite in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ):
        assert suite in block
    assert "proxy_set_header X-Client-Cert $ssl_client_escaped_cert;" in block
