"""The wss:// listener (security profiles 2 and 3): real TLS on loopback, real certificates.

What is proven here: OCPP 1.6 and 2.0.1 over TLS; TLS 1.1 and suites outside the OCPP list
refused; the certificate reloaded without a restart (and a bad one not); every mutual-TLS
refusal; a trusted proxy's forwarded client certificate accepted and anyone else's ignored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID
from websockets.asyncio.client import ClientConnection

from evota.gateway.tls import CIPHERS_TLS12
from evota.runtime import Runtime
from tests import pki_fixtures
from tests.conftest import TOKEN, ShiftedClock, api_client, basic, provision, start_runtime
from tests.pki_fixtures import CHARGER_ID, CPO, Credential, Pki, make_pki
from tests.support import free_port, serving, until

pki = pki_fixtures.pki  # the fixture: fresh test certificates per test
KEY = "tls-key-0123456789abcdef"
BOOT = {
    "ocpp1.6": {"chargePointVendor": "Evota", "chargePointModel": "TLS"},
    "ocpp2.0.1": {"reason": "PowerUp", "chargingStation": {"model": "TLS", "vendorName": "Evota"}},
}


def tls_settings(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {
        "ocpp_tls_port": 0,
        "ocpp_tls_cert": pki.server.cert_path,
        "ocpp_tls_key": pki.server.key_path,
        "ocpp_charger_ca": pki.charger_ca,
        "ocpp_crl": pki.crl,
        "cpo_name": CPO,
        **extra,
    }


@pytest.fixture
async def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def rt(
    tmp_path: Path, sqlite_url: str, pki: Pki, clock: ShiftedClock
) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(tmp_path, sqlite_url, clock=clock, **tls_settings(pki))
    yield runtime
    await runtime.stop()


def client_context(
    ca: Path, cred: Credential | None = None, **versions: ssl.TLSVersion
) -> ssl.SSLContext:
    """What a charger uses: the CSMS root to verify the server, its own certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cred is not None:
        ctx.load_cert_chain(cred.cert_path, cred.key_path)
    for name, version in versions.items():
        setattr(ctx, name, version)
    return ctx


async def wss(
    rt: Runtime,
    ctx: ssl.SSLContext,
    charger_id: str = CHARGER_ID,
    key: str | None = None,
    subprotocol: str = "ocpp1.6",
) -> ClientConnection:
    headers = {"Authorization": basic(charger_id, key)} if key is not None else {}
    return await websockets.connect(
        f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp/{charger_id}",
        ssl=ctx,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        additional_headers=headers,
        compression=None,
        open_timeout=5,
    )


async def status_of(connecting: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        await connecting
    return info.value.response.status_code


#: How a TLS handshake the server refuses surfaces on the client (an alert, or the reset).
HANDSHAKE_REFUSED = (ssl.SSLError, websockets.InvalidMessage, ConnectionError, EOFError)


async def boot(ws: ClientConnection, subprotocol: str) -> dict[str, Any]:
    await ws.send(orjson.dumps([2, "b1", "BootNotification", BOOT[subprotocol]]).decode())
    answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer[0] == 3, answer
    return answer[2]


@pytest.mark.parametrize("subprotocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_profile_2_over_wss(rt: Runtime, pki: Pki, subprotocol: str) -> None:
    await provision(rt, "CP-P2", KEY, security_profile=2)
    async with await wss(rt, client_context(pki.server_ca), "CP-P2", KEY, subprotocol) as ws:
        assert ws.subprotocol == subprotocol
        tls = ws.transport.get_extra_info("ssl_object")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert (await boot(ws, subprotocol))["status"] == "Accepted"
        assert rt.gateway.is_connected("CP-P2")
    assert rt.server_certificate_not_after() == pki.server.not_after


async def test_only_the_ocpp_cipher_suites_and_tls_12_or_newer(rt: Runtime, pki: Pki) -> None:
    await provision(rt, "CP-P2", KEY, security_profile=2)
    # TLS 1.2: the server picks one of the four suites the OCPP security rules list.
    tls12 = client_context(pki.server_ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    async with await wss(rt, tls12, "CP-P2", KEY) as ws:
        name, version, _ = ws.transport.get_extra_info("ssl_object").cipher()
        assert version == "TLSv1.2" and name in CIPHERS_TLS12
    # A client that offers only TLS 1.1 (its own floor lowered, so the refusal is the server's).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of the test
        old = client_context(
            pki.server_ca,
            minimum_version=ssl.TLSVersion.TLSv1_1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
        )
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(HANDSHAKE_REFUSED):
        await wss(rt, old, "CP-P2", KEY)
    # TLS 1.2 with suites outside the list: no forward secrecy, CBC, SHA-1 MACs.
    for weak in (
        "AES128-GCM-SHA256",
        "AES256-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
    ):
        ctx = client_context(pki.server_ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(weak)
        with pytest.raises(HANDSHAKE_REFUSED):
            await wss(rt, ctx, "CP-P2", KEY)
    assert not rt.gateway.is_connected("CP-P2")


async def test_the_certificate_is_reloaded_without_a_restart(
    tmp_path: Path,
    sqlite_url: str,
    pki: Pki,
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    cert.write_bytes(pki.server.cert_path.read_bytes())
    key.write_bytes(pki.server.key_path.read_bytes())
    rt = await start_runtime(
        tmp_path, sqlite_url, **tls_settings(pki, ocpp_tls_cert=cert, ocpp_tls_key=key)
    )
    try:
        await provision(rt, "CP-P2", KEY, security_profile=2)
        old_client = client_context(pki.server_ca)
        open_before = await wss(rt, old_client, "CP-P2", KEY)
        new = make_pki(tmp_path / "new")
        cert.write_bytes(new.server.cert_path.read_bytes())
        key.write_bytes(new.server.key_path.read_bytes())
        assert rt.gateway.tls is not None and rt.gateway.tls.changed()  # what the sweep sees
        assert rt.reload_tls() is None  # what SIGHUP calls
        assert rt.server_certificate_not_after() == new.server.not_after
        async with await wss(rt, client_context(new.server_ca), "CP-P2", KEY) as ws:
            assert ws.transport.get_extra_info("ssl_object").getpeercert()["notAfter"]
        with pytest.raises(ssl.SSLCertVerificationError):
            await wss(rt, old_client, "CP-P2", KEY)  # the old certificate is gone
        await open_before.close()  # the connection from before the reload was not cut
        # A broken new file: the certificate in use stays, and one alert says why.
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        problem = rt.reload_tls()
        assert problem is not None
        assert not rt.gateway.tls.changed()  # the same bad file is not retried on every sweep
        async with await wss(rt, client_context(new.server_ca), "CP-P2", KEY):
            pass
        async with api_client(rt) as api:
            alerts = await until(
                lambda: _alerts(api, "tls_reload_failed"), lambda items: len(items) == 1
            )
        assert "previous certificate stays in use" in alerts[0]["message"]
    finally:
        await rt.stop()


async def _alerts(api: Any, rule: str, subject: str | None = None) -> list[dict[str, Any]]:
    params = {"rule": rule} | ({"subject": subject} if subject else {})
    r = await api.get("/api/v1/alerts", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.mark.parametrize("subprotocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_profile_3_with_a_client_certificate_and_no_password(
    rt: Runtime,
    pki: Pki,
    subprotocol: str,
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    ctx = client_context(pki.server_ca, pki.good)
    async with await wss(rt, ctx, subprotocol=subprotocol) as ws:
        assert (await boot(ws, subprotocol))["status"] == "Accepted"
    # With the Basic password too it must be the right one.
    async with await wss(rt, ctx, key=KEY):
        pass
    assert await status_of(wss(rt, ctx, key="wrong-key-0123456789")) == 401


async def test_each_client_certificate_refusal(
    rt: Runtime,
    pki: Pki,
    clock: ShiftedClock,
    capfd: pytest.CaptureFixture[str],
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    for bad in ("wrong_cn", "wrong_o", "revoked"):
        cred = getattr(pki, bad)
        assert await status_of(wss(rt, client_context(pki.server_ca, cred))) == 403, bad
    # Refused by OpenSSL in the handshake: a look-alike CA, a self-signed one, out of date.
    for bad in ("wrong_ca", "self_signed", "expired", "not_yet_valid"):
        ctx = client_context(pki.server_ca, getattr(pki, bad))
        with pytest.raises(HANDSHAKE_REFUSED):
            await wss(rt, ctx)
    # evota's clock, not only OpenSSL's: a year on, the good certificate has expired.
    clock.advance(days=400)
    assert await status_of(wss(rt, client_context(pki.server_ca, pki.good))) == 403
    clock.advance(days=-400)
    # No certificate: without the password 401, with it a downgrade (403).
    assert await status_of(wss(rt, client_context(pki.server_ca))) == 401
    assert await status_of(wss(rt, client_context(pki.server_ca), key=KEY)) == 403
    assert not rt.gateway.is_connected(CHARGER_ID)
    # Another charger's valid certificate does not open this one.
    other = pki.mint("TLS-CP-2")
    assert await status_of(wss(rt, client_context(pki.server_ca, other))) == 403
    async with await wss(rt, client_context(pki.server_ca, pki.good)):
        pass


async def test_a_charger_ca_reload_takes_a_new_crl(rt: Runtime, pki: Pki) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.pki_fixtures import make_crl

    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    ctx = client_context(pki.server_ca, pki.good)
    async with await wss(rt, ctx):
        pass
    crl = make_crl(pki.charger_root, [pki.revoked.serial, pki.good.serial], pki.now)
    pki.crl.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    assert rt.reload_tls() is None
    assert await status_of(wss(rt, ctx)) == 403
    # A CRL the charger CA did not sign is not taken (and the old list stays).
    forged = make_crl(pki.forged_root, [], pki.now)
    pki.crl.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    assert "not signed by a configured charger CA" in (rt.reload_tls() or "")
    assert await status_of(wss(rt, ctx)) == 403


# -- behind a TLS-terminating proxy ----------------------------------------------------------


def _malformed_extension(pki: Pki) -> x509.Certificate:
    """Signed by the charger CA, with a basicConstraints value that is not DER."""
    now = pki.now
    return (
        x509.CertificateBuilder()
        .subject_name(pki.good.cert.subject)
        .issuer_name(pki.charger_root.name)
        .public_key(pki.good.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02\x03"),
            critical=True,
        )
        .sign(pki.charger_root.key, hashes.SHA256())
    )


async def test_a_trusted_proxy_forwards_the_client_certificate(
    tmp_path: Path,
    sqlite_url: str,
    pki: Pki,
) -> None:
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_trusted_proxies=["127.0.0.1"],
        ocpp_client_cert_header="X-Client-Cert",
        ocpp_charger_ca=pki.charger_ca,
        ocpp_crl=pki.crl,
        cpo_name=CPO,
    )

    def via(source: str, cred: Credential | None, key: str | None = None, https: bool = True):
        headers = {"X-Forwarded-Proto": "https"} if https else {}
        if cred is not None:  # nginx's $ssl_client_escaped_cert: URL-encoded PEM
            headers["X-Client-Cert"] = quote(cred.cert_path.read_text())
        if key is not None:
            headers["Authorization"] = basic(CHARGER_ID, key)
        return websockets.connect(
            f"ws://127.0.0.1:{rt.ocpp_port}/ocpp/{CHARGER_ID}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=5,
            local_addr=(source, 0),
        )

    try:
        await provision(rt, CHARGER_ID, KEY, security_profile=3)
        async with await via("127.0.0.1", pki.good):  # the proxy vouches: profile 3
            assert rt.gateway.is_connected(CHARGER_ID)
        assert await status_of(via("127.0.0.1", pki.wrong_cn)) == 403
        assert await status_of(via("127.0.0.1", pki.revoked)) == 403
        assert await status_of(via("127.0.0.1", pki.wrong_ca)) == 403  # checked again here
        # A CA-signed certificate whose extension cannot be parsed: a 403, not a dead task.
        malformed = tmp_path / "malformed.pem"
        malformed.write_bytes(_malformed_extension(pki).public_bytes(serialization.Encoding.PEM))
        odd = Credential(malformed, pki.good.key_path, pki.good.cert, pki.good.key)
        assert await status_of(via("127.0.0.1", odd)) == 403
        assert await status_of(via("127.0.0.1", None, https=True)) == 401
        # Anyone else sending the headers: ignored (no certificate, no TLS).
        assert await status_of(via("127.0.0.2", pki.good)) == 401
        assert await status_of(via("127.0.0.2", pki.good, KEY)) == 403  # a downgrade
        assert not rt.gateway.is_connected(CHARGER_ID)
    finally:
        await rt.stop()


async def test_sighup_reloads_the_certificate_of_a_running_evota_serve(
    tmp_path: Path,
    pki: Pki,
) -> None:
    """``evota serve`` as a process: SIGHUP loads the new certificate and does not end it
    (SIGHUP's default action would)."""
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    cert.write_bytes(pki.server.cert_path.read_bytes())
    key.write_bytes(pki.server.key_path.read_bytes())
    ports = {name: free_port() for name in ("http", "ocpp", "tls", "download")}
    env = {
        **os.environ,
        "EVOTA_DATA_DIR": str(tmp_path / "data"),
        "EVOTA_ADMIN_TOKEN": TOKEN,
        "EVOTA_HTTP_PORT": str(ports["http"]),
        "EVOTA_OCPP_PORT": str(ports["ocpp"]),
        "EVOTA_DOWNLOAD_PORT": str(ports["download"]),
        "EVOTA_OCPP_TLS_PORT": str(ports["tls"]),
        "EVOTA_OCPP_TLS_CERT": str(cert),
        "EVOTA_OCPP_TLS_KEY": str(key),
        "EVOTA_LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "evota", "serve"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def served_by(ca: Path) -> bool:
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", ports["tls"], ssl=client_context(ca)
            )
        except (OSError, ssl.SSLError):
            return False
        writer.close()
        return True

    try:
        await serving(f"http://127.0.0.1:{ports['http']}")
        assert await served_by(pki.server_ca)
        new = make_pki(tmp_path / "new")
        cert.write_bytes(new.server.cert_path.read_bytes())
        key.write_bytes(new.server.key_path.read_bytes())
        proc.send_signal(signal.SIGHUP)
        await until(lambda: served_by(new.server_ca), timeout=15)
        assert proc.returncode is None  # still serving after the signal
        assert not await served_by(pki.server_ca)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
