"""Certificates (security extension): InstallCertificate, DeleteCertificate and
GetInstalledCertificateIds over the charger's store, identified by OCPP's CertificateHashData
(:func:`certificate_hash`, pure); :func:`csr` makes the request SignCertificate carries (with
a new key the charger keeps until CertificateSigned answers), :func:`on_certificate_signed`
installs the signed certificate and reconnects with it on profile 3
(:mod:`evota.sim.tls` decides). The CSMS roots in the store are what the charger checks the
server with, so the last one cannot be deleted while the charger uses TLS."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.state import quietly, security_only, state
from evota.sim.tls import CSMS_ROOT_USES, make_csr, new_key, signed_certificate_problem

_HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


def certificate_hash(pem: str, algorithm: str = "SHA256") -> dict[str, str]:
    """OCPP's CertificateHashData: hashes of the issuer's name (DER) and of the issuer's
    public key bits (for a self-signed root: its own), and the serial in hex."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(key, rsa.RSAPublicKey):
        bits = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def digest(data: bytes) -> str:
        return _HASHES[algorithm](data).hexdigest()

    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": digest(cert.issuer.public_bytes()),
        "issuerKeyHash": digest(bits),
        "serialNumber": format(cert.serial_number, "x"),
    }


def same_certificate(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return (
        a["hashAlgorithm"] == b["hashAlgorithm"]
        and a["issuerNameHash"].lower() == b["issuerNameHash"].lower()
        and a["issuerKeyHash"].lower() == b["issuerKeyHash"].lower()
        and a["serialNumber"].lower().lstrip("0") == b["serialNumber"].lower().lstrip("0")
    )


def csr(charger: SimulatedCharger) -> str:
    """A certificate request for a new key pair (kept until CertificateSigned): CN = the
    charger id, O = the CpoName key (2.0.1 OrganizationName), else the vendor."""
    key = charger.tls.pending_key = new_key()
    organization = state(charger).setting("CpoName") or charger.spec.vendor
    return make_csr(key, charger.identity, organization)


async def on_certificate_signed(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    """Install the certificate if it is for our pending request's key, valid now and names
    us (else Rejected and a security event); on profile 3 reconnect with it at once."""
    security_only(charger, "CertificateSigned")
    chain = call.payload["certificateChain"]
    kind = call.payload.get("certificateType", "ChargingStationCertificate")
    problem = None
    if kind != "ChargingStationCertificate":
        problem = f"no {kind} request of ours is waiting"  # 2.0.1 V2GCertificate: no ISO 15118
    problem = problem or signed_certificate_problem(
        chain, charger.tls.pending_key, charger.identity, charger.clock.now()
    )
    if problem is None and charger.draw(charger.spec.faults.reject_certificate):
        problem = "fault profile: reject_certificate"
    if problem is not None or charger.tls.pending_key is None:
        charger.stats.certificates_rejected += 1
        charger.certificate_problem = problem
        event = charger.wire.security_event(
            charger,
            "InvalidChargePointCertificate"
            if charger.spec.protocol == "ocpp1.6"
            else "InvalidChargingStationCertificate",
            problem or "",
        )

        async def report() -> None:
            if event is not None:
                charger.spawn_background(quietly(charger.call(*event)))

        return Reply({"status": "Rejected"}, then=report)
    charger.tls.install(chain, charger.tls.pending_key)
    charger.stats.certificates_installed += 1
    charger.certificate_problem = None

    async def use_it() -> None:
        if charger.security_profile == 3 and charger.connect_url.startswith("wss://"):
            charger.reconnect()

    return Reply({"status": "Accepted"}, then=use_it)


async def on_install_certificate(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "InstallCertificate")
    st = state(charger)
    use, pem = call.payload["certificateType"], call.payload["certificate"]
    try:
        new = certificate_hash(pem)
    except (ValueError, UnsupportedAlgorithm):  # the CSMS controls every byte
        return Reply({"status": "Rejected"})
    if any(u == use and same_certificate(certificate_hash(p), new) for u, p in st.certificates):
        return Reply({"status": "Accepted"})
    if len(st.certificates) >= st.number("CertificateStoreMaxLength", 10):
        return Reply({"status": "Rejected"})
    st.certificates.append((use, pem))
    return Reply({"status": "Accepted"})


async def on_delete_certificate(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "DeleteCertificate")
    st = state(charger)
    wanted = call.payload["certificateHashData"]
    algorithm = wanted["hashAlgorithm"]
    for i, (use, pem) in enumerate(st.certificates):
        if same_certificate(certificate_hash(pem, algorithm), wanted):
            roots = sum(u in CSMS_ROOT_USES for u, _ in st.certificates)
            if use in CSMS_ROOT_USES and roots == 1 and charger.security_profile >= 2:
                return Reply({"status": "Failed"})  # it would lock itself out of the CSMS
            del st.certificates[i]
            return Reply({"status": "Accepted"})
    return Reply({"status": "NotFound"})


async def on_get_installed_certificate_ids(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "GetInstalledCertificateIds")
    st = state(charger)
    use = call.payload["certificateType"]
    found = [certificate_hash(pem) for u, pem in st.certificates if u == use]
    if not found:
        return Reply({"status": "NotFound"})
    return Reply({"status": "Accepted", "certificateHashData": found})
