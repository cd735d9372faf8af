"""The simulator over TLS (issue 16): it checks the server against the CSMS roots it holds,
presents a client certificate on profile 3 (given, or minted from a CA per charger), makes a
CSR when triggered, installs what CertificateSigned brings (or refuses it) and reconnects with
it, reports the roots it holds, raises its security profile only when that cannot lock it
out, and the fault options. Against the throwaway CSMS over real TLS on loopback; the
evota end-to-end flows are in tests/gateway (T) and tests/pki."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.ocpp import rpc
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.control.certificates import certificate_hash
from evota.sim.fleet import (
    FaultProfile,
    FleetFileError,
    dump_fleet,
    fleet_from_flags,
    parse_fleet,
)
from evota.sim.runner import Fleet, wait_until
from evota.sim.tls import (
    client_context,
    new_key,
    profile_change_answer,
    signed_certificate_problem,
)
from tests.pki_fixtures import CPO, Credential, Pki

from .conftest import FakeCsms, fast, server_tls, spec

ID = "TLS-CP-1"


@asynccontextmanager
async def tls_csms(pki: Pki, protocol: str = "ocpp1.6") -> AsyncIterator[FakeCsms]:
    server = FakeCsms(
        protocol=protocol,
        tls=server_tls(pki.server.cert_path, pki.server.key_path, pki.charger_ca),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def charger(
    url: str, config: SimConfig | None = None, *, accepted: bool = True, **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    tls_url = kw.pop("tls_url", None)
    c = SimulatedCharger(spec(ID, **kw), url, config or fast(), tls_url=tls_url)
    c.start()
    try:
        if accepted:
            await wait_until(lambda: c.accepted, 5)
        yield c
    finally:
        await c.stop()


def pem(path: Path) -> str:
    return path.read_text()


def own(credential: Credential) -> dict[str, str]:
    return {"client_cert": pem(credential.cert_path), "client_key": pem(credential.key_path)}


def sign(pki: Pki, csr_pem: str, *, cn: str | None = None, days: int = 30) -> str:
    """What a CSMS's CA does with the CSR (the test's, not evota's): sign it."""
    request = x509.load_pem_x509_csr(csr_pem.encode())
    subject = request.subject
    if cn is not None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(pki.charger_root.name)
        .public_key(request.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.now - timedelta(hours=1))
        .not_valid_after(pki.now + timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(pki.charger_root.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def answer(csms: FakeCsms, action: str, payload: dict[str, Any]) -> Any:
    result = await csms.call(ID, action, payload)
    if isinstance(result, rpc.CallError):
        return result.code
    return result.payload


# -- connecting ---------------------------------------------------------------------------------


async def test_profile_2_checks_the_server_against_its_root_and_sends_basic_auth(
    pki: Pki,
) -> None:
    async with tls_csms(pki) as csms, charger(csms.url, ocpp_ca=(pem(pki.server_ca),)) as c:
        assert c.security_profile == 2
        assert csms.peers == [(ID, None, None)]  # no client certificate on profile 2
        assert csms.authorization[-1] is not None and csms.authorization[-1].startswith("Basic ")


async def test_a_server_the_charger_does_not_trust_is_never_talked_to(pki: Pki) -> None:
    # The forged CA has the real charger CA's name but not its key: the server's
    # certificate does not chain to it, and the charger says why it failed.
    async with (
        tls_csms(pki) as csms,
        charger(csms.url, accepted=False, ocpp_ca=(pem(pki.forged_root.cert_path),)) as c,
    ):
        await wait_until(lambda: c.stats.connect_failures >= 2, 5)
        assert "CERTIFICATE_VERIFY_FAILED" in (c.stats.last_error or "")
        assert not csms.ever_connected and csms.authorization == []  # no password sent


async def test_profile_3_presents_its_certificate_and_no_password(pki: Pki) -> None:
    async with tls_csms(pki) as csms:
        credentials = own(pki.good)
        async with charger(csms.url, ocpp_ca=(pem(pki.server_ca),), **credentials) as c:
            assert c.security_profile == 3
            assert csms.peers == [(ID, ID, pki.good.serial)]
            assert csms.authorization == [None]


async def test_a_fleet_mints_each_charger_its_own_certificate_from_a_ca(pki: Pki) -> None:
    fleet_spec = fleet_from_flags(
        3,
        prefix="TLS-",
        ocpp_ca=pki.server_ca,
        client_ca=pki.charger_ca,
        client_ca_key=pki.charger_ca_key,
        organization=CPO,
    )
    async with tls_csms(pki) as csms, Fleet.from_spec(fleet_spec, csms.url, config=fast()) as f:
        await f.wait_for_all(lambda c: c.accepted, 10)
        assert sorted(cn for _, cn, _ in csms.peers) == ["TLS-0001", "TLS-0002", "TLS-0003"]
        for c in f:
            assert c.tls.cert is not None
            cert = x509.load_pem_x509_certificate(c.tls.cert.encode())
            o = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
            assert o == CPO and cert.not_valid_after_utc > pki.now


async def test_expired_certificate_fault_connects_with_an_expired_one_and_is_refused(
    pki: Pki,
) -> None:
    faults = FaultProfile(expired_certificate=1)
    async with (
        tls_csms(pki) as csms,
        charger(
            csms.url,
            accepted=False,
            ocpp_ca=(pem(pki.server_ca),),
            client_ca=(pem(pki.charger_ca), pem(pki.charger_ca_key)),
            faults=faults,
        ) as c,
    ):
        await wait_until(lambda: c.stats.connect_failures >= 2, 5)
        assert c.tls.cert is not None
        minted = x509.load_pem_x509_certificate(c.tls.cert.encode())
        assert minted.not_valid_after_utc < pki.now
        assert not csms.ever_connected


@pytest.mark.parametrize("memfd", [True, False], ids=["in-memory files", "temporary directory"])
async def test_the_client_certificate_loads_either_way(
    pki: Pki, memfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not memfd:
        monkeypatch.delattr("os.memfd_create", raising=False)
    async with (
        tls_csms(pki) as csms,
        charger(csms.url, ocpp_ca=(pem(pki.server_ca),), **own(pki.good)),
    ):
        assert csms.peers == [(ID, ID, pki.good.serial)]
    with pytest.raises(ssl.SSLError):  # a key that is not the certificate's
        client_context([], pem(pki.good.cert_path), pem(pki.wrong_o.key_path))


# -- CSR and CertificateSigned ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_a_triggered_csr_is_signed_installed_and_used_on_reconnect(
    pki: Pki, protocol: str
) -> None:
    async with (
        tls_csms(pki, protocol) as csms,
        charger(
            csms.url,
            ocpp_ca=(pem(pki.server_ca),),
            protocol=protocol,
            organization=CPO,
            **own(pki.good),
        ) as c,
    ):
        if protocol == "ocpp1.6":
            csms.overrides["SignCertificate"] = lambda i, p: {"status": "Accepted"}
            trigger = ("ExtendedTriggerMessage", "SignChargePointCertificate")
        else:
            trigger = ("TriggerMessage", "SignChargingStationCertificate")
            csms.overrides["SignCertificate"] = lambda i, p: {"status": "Accepted"}
        assert await answer(csms, trigger[0], {"requestedMessage": trigger[1]}) == {
            "status": "Accepted"
        }
        await wait_until(lambda: csms.payloads("SignCertificate"), 3)
        request = x509.load_pem_x509_csr(csms.payloads("SignCertificate")[0]["csr"].encode())
        assert request.is_signature_valid
        assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ID
        assert request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == CPO
        signed = sign(pki, csms.payloads("SignCertificate")[0]["csr"])
        serial = x509.load_pem_x509_certificate(signed.encode()).serial_number
        reply = await answer(csms, "CertificateSigned", {"certificateChain": signed})
        assert reply == {"status": "Accepted"}
        # It reconnects at once and presents the new certificate.
        await wait_until(lambda: len(csms.peers) == 2 and c.accepted, 5)
        assert csms.peers[-1] == (ID, ID, serial)
        assert c.stats.certificates_installed == 1


@pytest.mark.parametrize(
    "case", ["other key", "not a certificate", "other CN", "no request", "fault"]
)
async def test_certificate_signed_is_refused_when_it_cannot_be_ours(pki: Pki, case: str) -> None:
    faults = FaultProfile(reject_certificate=1) if case == "fault" else FaultProfile()
    async with (
        tls_csms(pki) as csms,
        charger(csms.url, ocpp_ca=(pem(pki.server_ca),), faults=faults, **own(pki.good)) as c,
    ):
        csms.overrides["SignCertificate"] = lambda i, p: {"status": "Accepted"}
        if case != "no request":
            await answer(
                csms, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}
            )
            await wait_until(lambda: csms.payloads("SignCertificate"), 3)
            csr = csms.payloads("SignCertificate")[0]["csr"]
        chain = {
            "other key": pem(pki.good.cert_path),  # valid, but for the old key
            "not a certificate": "-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----",
            "other CN": sign(pki, csr, cn="SOMEONE-ELSE") if case == "other CN" else "",
            "no request": pem(pki.good.cert_path),
            "fault": sign(pki, csr) if case == "fault" else "",
        }[case]
        reply = await answer(csms, "CertificateSigned", {"certificateChain": chain})
        assert reply == {"status": "Rejected"}
        await wait_until(lambda: csms.payloads("SecurityEventNotification"), 3)
        assert csms.payloads("SecurityEventNotification")[-1]["type"] == (
            "InvalidChargePointCertificate"
        )
        assert c.tls.cert == pem(pki.good.cert_path)  # still the old one
        assert c.stats.certificates_rejected == 1 and len(csms.peers) == 1  # no reconnect


@settings(max_examples=200)
@given(st.text(max_size=300), st.binary(max_size=300))
def test_whatever_certificate_signed_carries_is_refused_without_a_crash(
    text: str, junk: bytes
) -> None:
    key = new_key()
    wrapped = (
        "-----BEGIN CERTIFICATE-----\n"
        + base64.b64encode(junk).decode()
        + "\n-----END CERTIFICATE-----\n"
    )
    for chain in (text, wrapped, wrapped + text):
        assert signed_certificate_problem(chain, key, ID, datetime.now(UTC)) is not None


def odd_key_certificate(pki: Pki) -> str:
    """A certificate whose key algorithm nobody knows (cryptography parses it, but cannot
    read its key)."""
    der = pki.good.cert.public_bytes(serialization.Encoding.DER)
    ec_public_key = bytes.fromhex("06072A8648CE3D0201")  # OID 1.2.840.10045.2.1
    odd = der.replace(ec_public_key, bytes.fromhex("06072A8648CE3D0209"))
    return x509.load_der_x509_certificate(odd).public_bytes(serialization.Encoding.PEM).decode()


def test_a_certificate_with_a_key_type_nobody_knows_is_refused(pki: Pki) -> None:
    problem = signed_certificate_problem(odd_key_certificate(pki), new_key(), ID, pki.now)
    assert problem == "not a PEM X.509 certificate chain the charger can read"


async def test_installing_a_root_with_a_key_type_nobody_knows_is_rejected(pki: Pki) -> None:
    async with tls_csms(pki) as csms, charger(csms.url, ocpp_ca=(pem(pki.server_ca),)) as c:
        odd = {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": odd_key_certificate(pki),
        }
        assert await answer(csms, "InstallCertificate", odd) == {"status": "Rejected"}
        assert c.csms_roots() == [pem(pki.server_ca)] and c.accepted


# -- the roots it holds -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_installed_roots_are_reported_and_the_last_csms_root_is_kept(
    pki: Pki, protocol: str
) -> None:
    root = pem(pki.server_ca)
    use = "CentralSystemRootCertificate" if protocol == "ocpp1.6" else "CSMSRootCertificate"
    async with (
        tls_csms(pki, protocol) as csms,
        charger(csms.url, ocpp_ca=(root,), protocol=protocol) as c,
    ):
        listed = await answer(
            csms,
            "GetInstalledCertificateIds",
            {"certificateType": use if protocol == "ocpp1.6" else [use]},
        )
        if protocol == "ocpp1.6":
            assert listed["certificateHashData"] == [certificate_hash(root)]
        else:
            assert listed["certificateHashDataChain"] == [
                {"certificateType": use, "certificateHashData": certificate_hash(root)}
            ]
        # The only root it checks the server with: deleting it would lock it out.
        delete = {"certificateHashData": certificate_hash(root)}
        assert await answer(csms, "DeleteCertificate", delete) == {"status": "Failed"}
        # With a second root installed, the first may go; the charger then trusts the second.
        second = pem(pki.charger_ca)
        install = {"certificateType": use, "certificate": second}
        assert await answer(csms, "InstallCertificate", install) == {"status": "Accepted"}
        assert await answer(csms, "DeleteCertificate", delete) == {"status": "Accepted"}
        assert c.csms_roots() == [second]


# -- raising the security profile ---------------------------------------------------------------


def test_profile_change_rules() -> None:
    def answer_for(current: int, wanted: int, **kw: bool) -> str:
        ctx = {"has_root": True, "has_certificate": True, "can_tls": True} | kw
        return profile_change_answer(current, wanted, **ctx)

    assert answer_for(2, 1) == "Rejected"  # never lower
    assert answer_for(1, 4) == "Rejected"
    assert answer_for(2, 2, has_root=False) == "Accepted"  # unchanged: nothing to check
    assert answer_for(1, 2, has_root=False) == "Rejected"  # it could not check the server
    assert answer_for(1, 2, can_tls=False) == "Rejected"  # nowhere to connect over TLS
    assert answer_for(2, 3, has_certificate=False) == "Rejected"
    assert answer_for(1, 2, has_certificate=False) == "Accepted"
    assert answer_for(1, 3) == "Accepted"


@pytest.mark.parametrize("fault", [0.0, 1.0])
async def test_raising_the_profile_needs_the_root_first_then_reconnects_over_tls(
    pki: Pki, csms: FakeCsms, fault: float
) -> None:
    faults = FaultProfile(no_reconnect_after_profile_switch=fault)
    async with tls_csms(pki) as secure, charger(csms.url, tls_url=secure.url, faults=faults) as c:
        assert c.security_profile == 1
        change = {"key": "SecurityProfile", "value": "2"}
        # No CSMS root installed yet: switching would leave it unable to check the server.
        assert await answer(csms, "ChangeConfiguration", change) == {"status": "Rejected"}
        root = {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": pem(pki.server_ca),
        }
        assert await answer(csms, "InstallCertificate", root) == {"status": "Accepted"}
        assert await answer(csms, "ChangeConfiguration", change) == {"status": "Accepted"}
        if fault:
            await wait_until(lambda: c.offline_forever and not c.connected, 5)
            assert not secure.ever_connected and c.security_profile == 2
            return
        await wait_until(lambda: ID in secure.ever_connected and c.accepted, 5)
        assert secure.peers == [(ID, None, None)]
        lower = {"key": "SecurityProfile", "value": "1"}
        result = await secure.call(ID, "ChangeConfiguration", lower)
        assert result.payload == {"status": "Rejected"}
        keys = await secure.call(ID, "GetConfiguration", {"key": ["SecurityProfile"]})
        assert keys.payload["configurationKey"][0]["value"] == "2"


# -- fleet files and flags ----------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_a_fleet_file_names_roots_certificates_and_a_minting_ca(pki: Pki) -> None:
    d = pki.directory
    fleet = parse_fleet(
        f"""
defaults: {{ocpp_ca: {d}/csms-root.pem, organization: {CPO}}}
groups:
  - {{prefix: M-, count: 2, client_ca: {d}/charger-ca.pem, client_ca_key: {d}/charger-ca.key}}
chargers:
  - {{identity: {ID}, client_cert: good.pem, client_key: good.key, security_profile: 3}}
""",
        base_dir=d,
    )
    minted, mine = fleet.chargers[0], fleet.chargers[2]
    assert minted.ocpp_ca == (pem(pki.server_ca),) and minted.client_ca is not None
    assert mine.client_cert == pem(pki.good.cert_path) and mine.security_profile == 3
    assert mine.organization == CPO


def test_a_fleet_with_certificates_round_trips_through_dump(pki: Pki) -> None:
    d = pki.directory
    fleet = parse_fleet(
        f"""
defaults: {{ocpp_ca: {d}/csms-root.pem, organization: {CPO}, faults: {{reject_certificate: 0.5}}}}
groups:
  - {{prefix: M-, count: 2, client_ca: {d}/charger-ca.pem, client_ca_key: {d}/charger-ca.key}}
chargers:
  - {{identity: {ID}, client_cert: good.pem, client_key: good.key, security_profile: 3}}
""",
        base_dir=d,
    )
    assert parse_fleet(dump_fleet(fleet)) == fleet


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("client_cert: good.pem", "client_cert and client_key go together"),
        (
            "client_cert: good.pem, client_key: wrong-o.key",
            "the client key does not belong to the client certificate",
        ),
        ("client_cert: good.key, client_key: good.key", "not a PEM X.509 certificate"),
        ("security_profile: 4", "must be 1-3"),
        ("security_profile: 3", "security_profile 3 needs a client certificate"),
        ("faults: {expired_certificate: 1}", "the expired_certificate fault needs client_ca"),
        ("ocpp_ca: good.key", "is not a PEM X.509 certificate"),
        ("ocpp_ca: missing.pem", "cannot read 'missing.pem'"),
        ("faults: {reject_certificate: 2}", "must be a number from 0 to 1"),
    ],
)
def test_fleet_file_mistakes_are_one_located_line(pki: Pki, entry: str, problem: str) -> None:
    text = f"chargers:\n  - {{identity: {ID}, {entry}}}\n"
    with pytest.raises(FleetFileError) as caught:
        parse_fleet(text, source="fleet.yaml", base_dir=pki.directory)
    message = str(caught.value)
    assert message.startswith("fleet.yaml line 2") and problem in message
    assert "\n" not in message
