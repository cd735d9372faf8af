"""Certificate renewal end to end over mutual TLS (issue 16 §5 with the simulator and the Node
client): evota triggers, the charger sends a CSR, evota's CA signs, CertificateSigned is
installed and the charger reconnects presenting the new certificate; and a charger that
rejects it keeps its old one. evota's CA is the charger CA mutual TLS trusts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec, FaultProfile
from tests.conftest import api_client, provision, start_runtime
from tests.node_clients import run_client, same_worker
from tests.pki_fixtures import CHARGER_ID, CPO, Credential, Pki, openssl_csr
from tests.sim.conftest import fast
from tests.support import until

KEY = "tls-renewal-key-0123456789"


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str, pki: Pki) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        ocpp_charger_ca=pki.charger_ca,
        cpo_name=CPO,
        ca_cert=pki.charger_ca,  # evota signs with the CA mutual TLS trusts
        ca_key=pki.charger_ca_key,
    )
    yield runtime
    await runtime.stop()


def wss(rt: Runtime) -> str:
    return f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp"


def pem(path: Path) -> str:
    return path.read_text()


def own(credential: Credential) -> dict[str, str]:
    return {"client_cert": pem(credential.cert_path), "client_key": pem(credential.key_path)}


def sim(rt: Runtime, pki: Pki, **kw: Any) -> SimulatedCharger:
    spec = ChargerSpec(CHARGER_ID, KEY, ocpp_ca=(pem(pki.server_ca),), organization=CPO, **kw)
    return SimulatedCharger(spec, wss(rt), fast())


async def renew(rt: Runtime, charger_id: str = CHARGER_ID) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.post(f"/api/v1/chargers/{charger_id}/certificates/renew", json={})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def current_serial(rt: Runtime, charger_id: str = CHARGER_ID) -> str | None:
    async with api_client(rt) as api:
        r = await api.get(f"/api/v1/chargers/{charger_id}/certificates")
        assert r.status_code == 200, r.text
        current = r.json()["current"]
        return None if current is None else str(current["serial"])


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_renewal_end_to_end_the_simulator_reconnects_with_what_evota_signed(
    rt: Runtime, pki: Pki, protocol: str
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    charger = sim(rt, pki, protocol=protocol, **own(pki.good))
    charger.start()
    try:
        await until(lambda: charger.accepted)
        connects = charger.stats.connects
        assert (await renew(rt))["status"] == "Accepted"
        # CSR -> evota's checks and CA -> CertificateSigned -> installed -> reconnected with it.
        await until(lambda: charger.stats.certificates_installed == 1)
        await until(lambda: charger.stats.connects > connects and charger.accepted)
        assert charger.tls.cert is not None and charger.tls.cert != pem(pki.good.cert_path)
        serial = format(
            x509.load_pem_x509_certificate(charger.tls.cert.encode()).serial_number, "x"
        )
        assert await until(lambda: current_serial(rt)) == serial
        assert rt.gateway.is_connected(CHARGER_ID)
    finally:
        await charger.stop()


async def test_a_charger_that_rejects_the_certificate_keeps_its_old_one(
    rt: Runtime, pki: Pki
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    faults = FaultProfile(reject_certificate=1)
    charger = sim(rt, pki, faults=faults, **own(pki.good))
    charger.start()
    try:
        await until(lambda: charger.accepted)
        await renew(rt)
        await until(lambda: charger.stats.certificates_rejected == 1)
        assert charger.tls.cert == pem(pki.good.cert_path) and charger.accepted
        assert await current_serial(rt) is None  # evota recorded no accepted certificate
    finally:
        await charger.stop()


@same_worker
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_node_client_renews_with_an_openssl_csr_and_reconnects_with_the_result(
    rt: Runtime, pki: Pki, protocol: str
) -> None:
    """The whole renewal driven by parties that share no code with evota: the CSR made by
    openssl, the flow and the check of what evota signed by ocpp-rpc and Node's crypto."""
    await provision(rt, CHARGER_ID, KEY, security_profile=3)
    csr, csr_key = openssl_csr(pki.directory, f"node-{protocol}", CHARGER_ID)

    async def on_line(line: str) -> None:
        if line == "READY_FOR_TRIGGER":
            assert (await renew(rt))["status"] == "Accepted"

    summary, log = await run_client(
        "tls_client.js",
        "--endpoint", wss(rt), "--identity", CHARGER_ID, "--protocol", protocol,
        "--ca", str(pki.server_ca),
        "--cert", str(pki.good.cert_path), "--key", str(pki.good.key_path),
        "--csr", str(csr), "--csr-key", str(csr_key),
        on_line=on_line,
    )  # fmt: skip
    assert summary["error"] is None and summary["strict_validation_failures"] == [], log
    assert summary["sign_certificate"] == {"status": "Accepted"}, log
    signed = summary["certificate_signed"]
    assert signed["status"] == "Accepted" and f"CN={CHARGER_ID}" in signed["subject"], log
    assert summary["reconnect"] == {"ok": True, "protocol": protocol}
    assert summary["reboot"]["status"] == "Accepted"
    assert await current_serial(rt) == signed["serial"].lower().lstrip("0")


async def test_a_certificate_from_evotas_built_in_ca_is_trusted_without_a_settings_change(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """The operator's charger CA issued the factory certificate; evota's own built-in CA (no
    EVOTA_CA_CERT) signs the renewal. Mutual TLS trusts both, so the renewed charger gets
    back in: without the built-in CA in the trust, its next connection would be refused."""
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        ocpp_charger_ca=pki.charger_ca,
        cpo_name=CPO,
    )
    try:
        await provision(rt, CHARGER_ID, KEY, security_profile=3)
        charger = sim(rt, pki, **own(pki.good))
        charger.start()
        try:
            await until(lambda: charger.accepted)
            connects = charger.stats.connects
            assert (await renew(rt))["status"] == "Accepted"
            await until(lambda: charger.stats.certificates_installed == 1)
            await until(lambda: charger.stats.connects > connects and charger.accepted)
            assert charger.tls.cert is not None
            issued = x509.load_pem_x509_certificate(charger.tls.cert.encode())
            built_in = x509.load_pem_x509_certificate(
                (tmp_path / "data" / "charger-ca" / "ca.pem").read_bytes()
            )
            assert issued.issuer == built_in.subject  # signed by evota, not the factory CA
            assert rt.gateway.is_connected(CHARGER_ID)
        finally:
            await charger.stop()
    finally:
        await rt.stop()
