"""Chargers that are not evota's gateway code talk to evota's wss:// listener (issue 16): the
fleet simulator (1.6 and 2.0.1, profiles 2 and 3, minted certificates, its faults) and the
Node ``ocpp-rpc`` client with a client certificate, plus ``openssl s_client``. The refusals
each client meets are the ones a real charger would: the handshake or an HTTP status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec, FaultProfile, fleet_from_flags
from evota.sim.runner import Fleet
from tests.conftest import provision, start_runtime
from tests.node_clients import run_client, same_worker
from tests.pki_fixtures import CHARGER_ID, CPO, Credential, Pki, openssl
from tests.sim.conftest import fast
from tests.support import until

KEY = "tls-clients-key-0123456789"


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str, pki: Pki) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        ocpp_charger_ca=pki.charger_ca,
        ocpp_crl=pki.crl,
        cpo_name=CPO,
    )
    yield runtime
    await runtime.stop()


def wss(rt: Runtime) -> str:
    return f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp"


def pem(path: Path) -> str:
    return path.read_text()


def sim(rt: Runtime, pki: Pki, identity: str = CHARGER_ID, **kw: Any) -> SimulatedCharger:
    spec = ChargerSpec(identity, KEY, ocpp_ca=(pem(pki.server_ca),), **kw)
    return SimulatedCharger(spec, wss(rt), fast())


def own(credential: Credential) -> dict[str, str]:
    return {"client_cert": pem(credential.cert_path), "client_key": pem(credential.key_path)}


# -- the simulator --------------------------------------------------------------------------------


async def test_a_mixed_profile_3_fleet_with_minted_certificates_is_served(
    rt: Runtime, pki: Pki
) -> None:
    spec = fleet_from_flags(
        6,
        prefix="MTLS-",
        v201_fraction=0.5,
        ocpp_ca=pki.server_ca,
        client_ca=pki.charger_ca,
        client_ca_key=pki.charger_ca_key,
        organization=CPO,
    )
    for charger in spec.chargers:
        await provision(rt, charger.identity, charger.auth_key, security_profile=3)
    async with Fleet.from_spec(spec, wss(rt), config=fast()) as fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 15)
        assert {c.spec.protocol for c in fleet} == {"ocpp1.6", "ocpp2.0.1"}
        assert all(c.security_profile == 3 and rt.gateway.is_connected(c.identity) for c in fleet)


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_profile_2_simulator_checks_evota_and_sends_its_password(
    rt: Runtime, pki: Pki, protocol: str
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=2)
    charger = sim(rt, pki, protocol=protocol)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        assert charger.security_profile == 2
    finally:
        await charger.stop()


@pytest.mark.parametrize(
    "bad", ["expired_certificate fault", "wrong_ca", "wrong_cn", "wrong_o", "revoked"]
)
async def test_a_simulator_with_a_bad_certificate_never_gets_in(
    rt: Runtime, pki: Pki, bad: str
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    if bad == "expired_certificate fault":
        options: dict[str, Any] = {
            "client_ca": (pem(pki.charger_ca), pem(pki.charger_ca_key)),
            "faults": FaultProfile(expired_certificate=1),
            "organization": CPO,
        }
    else:
        options = own(getattr(pki, bad))
    charger = sim(rt, pki, **options)
    charger.start()
    try:
        await until(lambda: charger.stats.connect_failures >= 2)
        assert charger.stats.connects == 0 and not rt.gateway.is_connected(CHARGER_ID)
    finally:
        await charger.stop()


@pytest.mark.parametrize("stored", [2, 3])
async def test_a_downgrading_simulator_is_refused(rt: Runtime, pki: Pki, stored: int) -> None:
    """Stored profile 2: the simulator comes over plain ws://; stored 3: over wss:// but
    without a certificate. Either way evota answers 403 and the charger stays out."""
    await provision(rt, CHARGER_ID, KEY, security_profile=stored)
    url = f"ws://127.0.0.1:{rt.ocpp_port}/ocpp" if stored == 2 else wss(rt)
    spec = ChargerSpec(CHARGER_ID, KEY, ocpp_ca=(pem(pki.server_ca),), security_profile=2)
    charger = SimulatedCharger(spec, url, fast())
    charger.start()
    try:
        await until(lambda: charger.stats.connect_failures >= 2)
        assert charger.stats.last_http_status == 403 and charger.stats.connects == 0
    finally:
        await charger.stop()


# -- the Node ocpp-rpc client ---------------------------------------------------------------------


@same_worker
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_node_client_profile_3_accepted_and_a_wrong_certificate_refused(
    rt: Runtime, pki: Pki, protocol: str
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)

    async def node(credential: Credential) -> dict[str, Any]:
        summary, log = await run_client(
            "tls_client.js",
            "--endpoint", wss(rt), "--identity", CHARGER_ID, "--protocol", protocol,
            "--ca", str(pki.server_ca),
            "--cert", str(credential.cert_path), "--key", str(credential.key_path),
        )  # fmt: skip
        assert summary["error"] is None and summary["strict_validation_failures"] == [], log
        return summary

    good = await node(pki.good)
    assert good["connect"] == {"ok": True, "protocol": protocol}
    assert good["boot"]["status"] == "Accepted"
    for bad in (pki.wrong_ca, pki.expired, pki.wrong_cn):
        refused = await node(bad)
        assert refused["connect"]["ok"] is False and refused["boot"] is None, bad.cert_path.name
    assert not rt.gateway.is_connected(CHARGER_ID)


@same_worker
async def test_node_client_profile_2_with_its_password(rt: Runtime, pki: Pki) -> None:
    await provision(rt, "NODE-P2", KEY, security_profile=2)
    args = ["--endpoint", wss(rt), "--identity", "NODE-P2", "--ca", str(pki.server_ca)]
    summary, log = await run_client("tls_client.js", *args, "--password", KEY)
    assert summary["error"] is None and summary["boot"]["status"] == "Accepted", log
    wrong, log = await run_client("tls_client.js", *args, "--password", "wrong-key-0123456789")
    assert wrong["connect"]["ok"] is False and wrong["connect"]["code"] == 401, log


# -- openssl s_client -----------------------------------------------------------------------------


async def _s_client(rt: Runtime, pki: Pki, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        openssl(), "s_client", "-connect", f"127.0.0.1:{rt.ocpp_tls_port}",
        "-CAfile", str(pki.server_ca), "-verify_return_error", "-brief", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(20):
        out, _ = await proc.communicate(b"")
    return proc.returncode or 0, out.decode(errors="replace")


async def test_openssl_s_client_handshakes_only_on_the_ocpp_terms(rt: Runtime, pki: Pki) -> None:
    cert = ["-cert", str(pki.good.cert_path), "-key", str(pki.good.key_path)]
    rc, out = await _s_client(rt, pki, "-tls1_2", *cert)
    assert rc == 0 and "Verification: OK" in out and "Protocol version: TLSv1.2" in out, out
    rc, out = await _s_client(rt, pki, "-tls1_3", *cert)
    assert rc == 0 and "Protocol version: TLSv1.3" in out, out
    # The client offers TLS 1.1 at OpenSSL's lowest security level: the server must say no.
    rc, out = await _s_client(rt, pki, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", *cert)
    assert rc != 0 and "Protocol version" not in out, out
    rc, out = await _s_client(rt, pki, "-tls1_2", "-cipher", "AES128-SHA", *cert)
    assert rc != 0 and "Protocol version" not in out, out  # no suite outside the OCPP list
