"""The nginx and HAProxy configurations in docs/security-profiles.md ("Behind a proxy"), run
as written in front of evota: Debian's nginx / haproxy terminates TLS and forwards the
verified client certificate.

Only the paths and ports of the documented blocks are replaced; if the documentation
changes, this test runs the new text. Both are Debian packages .ci/run and scripts/test
install.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import websockets

from evota.runtime import Runtime
from tests import pki_fixtures
from tests.conftest import basic, provision, start_runtime
from tests.gateway.test_tls import HANDSHAKE_REFUSED, client_context, status_of
from tests.pki_fixtures import CHARGER_ID, CPO, Credential, Pki
from tests.proxies import binary, nginx_command, running
from tests.support import free_port

pki = pki_fixtures.pki
ROOT = Path(__file__).resolve().parents[2]
KEY = "proxy-key-0123456789ab"


def documented(kind: str) -> str:
    """The ```nginx or ```haproxy block of the "Behind a proxy" section."""
    text = (ROOT / "docs" / "security-profiles.md").read_text()
    section = text.split("## Behind a proxy", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{kind}\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"docs/security-profiles.md: one {kind} block under Behind a proxy"
    return str(blocks[0])


def _nginx(work: Path, port: int, pki: Pki, evota_port: int) -> list[str]:
    """nginx's command line, with the documented block in a minimal configuration."""
    block = (
        documented("nginx")
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        .replace("/etc/evota/tls/server.pem", str(pki.server.cert_path))
        .replace("/etc/evota/tls/server.key", str(pki.server.key_path))
        .replace("/etc/evota/tls/charger-ca.pem", str(pki.charger_ca))
        .replace("/etc/evota/tls/charger-ca.crl.pem", str(pki.crl))
        .replace("127.0.0.1:9000", f"127.0.0.1:{evota_port}")
    )
    assert "/etc/evota" not in block and "9000" not in block
    return nginx_command(work, f"    access_log off;\n{block}")


def _haproxy(work: Path, port: int, pki: Pki, evota_port: int) -> list[str]:
    """haproxy's command line (foreground), with the documented block after a global part."""
    both = work / "server-and-key.pem"
    both.write_bytes(pki.server.cert_path.read_bytes() + pki.server.key_path.read_bytes())
    block = (
        documented("haproxy")
        .replace("bind :443 ssl", f"bind 127.0.0.1:{port} ssl")
        .replace("/etc/evota/tls/server-and-key.pem", str(both))
        .replace("/etc/evota/tls/charger-ca.pem", str(pki.charger_ca))
        .replace("/etc/evota/tls/charger-ca.crl.pem", str(pki.crl))
        .replace("127.0.0.1:9000", f"127.0.0.1:{evota_port}")
    )
    assert "/etc/evota" not in block and "9000" not in block
    conf = work / "haproxy.cfg"
    conf.write_text(f"global\n    maxconn 64\n\n{block}")
    return [binary("haproxy"), "-db", "-f", str(conf)]


PROXIES = {"nginx": _nginx, "haproxy": _haproxy}


@pytest.fixture(params=sorted(PROXIES))
async def evota_behind_proxy(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_url: str,
    pki: Pki,
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
    work = tmp_path / request.param
    work.mkdir()
    argv = PROXIES[request.param](work, port, pki, rt.ocpp_port)
    try:
        async with running(argv, work, port, request.param):
            yield rt, port
    finally:
        await rt.stop()


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


async def test_the_documented_proxy_configs_carry_profiles_2_and_3(
    evota_behind_proxy: tuple[Runtime, int],
    pki: Pki,
) -> None:
    rt, port = evota_behind_proxy
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    await provision(rt, "CP-P2", KEY, security_profile=2)
    # Profile 3: the proxy verifies, forwards the certificate, evota checks it again.
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
    # The proxy refuses what it cannot verify, evota what does not identify the charger.
    for bad in (pki.wrong_ca, pki.revoked, pki.expired):
        await refused_by_proxy(_via(port, client_context(pki.server_ca, bad)))
    assert await status_of(_via(port, client_context(pki.server_ca, pki.wrong_cn))) == 403
    assert await status_of(_via(port, client_context(pki.server_ca, pki.wrong_o))) == 403
    # A client without a certificate cannot smuggle one in a header of its own.
    forged = _forged(pki.good)
    assert await status_of(_via(port, client_context(pki.server_ca), headers=forged)) == 401
    no_cert = client_context(pki.server_ca)
    assert await status_of(_via(port, no_cert, KEY, headers=forged)) == 403  # a downgrade
    assert not rt.gateway.is_connected(CHARGER_ID)


async def refused_by_proxy(connecting: Any) -> None:
    """nginx answers 400; HAProxy ends the handshake (or its deny rule answers 403)."""
    try:
        async with await connecting:
            pass
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code in (400, 403)
    except HANDSHAKE_REFUSED:
        pass
    else:
        pytest.fail("the proxy let an unverifiable certificate through")


@pytest.mark.parametrize("kind", sorted(PROXIES))
def test_the_documented_blocks_use_the_ocpp_suites_and_forward_only_verified(kind: str) -> None:
    block = documented(kind)
    for suite in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ):
        assert suite in block
    assert "X-Client-Cert" in block and "X-Forwarded-Proto https" in block
