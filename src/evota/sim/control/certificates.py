"""Certificates (security extension): InstallCertificate, DeleteCertificate and
GetInstalledCertificateIds over the charger's store, identified by OCPP's CertificateHashData
(:func:`certificate_hash`, pure); :func:`csr` makes the request SignCertificate carries."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from evota.ocpp import rpc
from evota.sim.charger import Reply, SimulatedCharger
from evota.sim.control.state import security_only, state

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
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, charger.identity),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, charger.spec.vendor),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


async def on_install_certificate(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "InstallCertificate")
    st = state(charger)
    use, pem = call.payload["certificateType"], call.payload["certificate"]
    try:
        new = certificate_hash(pem)
    except ValueError:
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
    for i, (_use, pem) in enumerate(st.certificates):
        if same_certificate(certificate_hash(pem, algorithm), wanted):
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
