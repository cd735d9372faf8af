"""CSMS root rotation, the pure rules (issue 16 §7; docs/security-profiles.md "Rotating the
CSMS root"). The shell is :mod:`evota.control.rotation`.

A rotation must never lock the fleet out: a charger that does not hold the root the server
certificate chains to refuses the TLS handshake and cannot be reached to be told otherwise.
So the phases only move forward when the facts allow it:

``installing`` — the new root goes to every targeted charger (a staged bulk operation that
stops on failure; each charger's step checks its inventory for the root). ``switch`` needs
that operation completed *and* the inventory showing the new root on at least ``min_share``
of the targeted chargers that are connected now. ``switched`` — the server certificate is
one under the new root. ``finish`` (remove the old root) needs the switch *and* every
targeted charger that was on TLS at the switch to have connected again since (it validated
the new chain). ``removing`` — a staged bulk operation deletes the old root; ``finished``.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from evota.pki import inventory as inv


class RotationState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # four eyes on the start (certificate.rotate-root)
    INSTALLING = "installing"
    SWITCHED = "switched"
    REMOVING = "removing"
    FINISHED = "finished"
    STOPPED = "stopped"


#: States a new rotation may not start in parallel with.
ACTIVE = frozenset(
    {
        RotationState.AWAITING_APPROVAL,
        RotationState.INSTALLING,
        RotationState.SWITCHED,
        RotationState.REMOVING,
    }
)

#: InstallCertificate's certificate field holds at most this many characters (OCPP 1.6/2.0.1).
MAX_PEM = 5500

#: The OCPP certificate type of a CSMS root, by protocol.
ROOT_USE = {"ocpp1.6": "CentralSystemRootCertificate", "ocpp2.0.1": "CSMSRootCertificate"}


class RotationError(ValueError):
    """A request the rotation refuses; ``field`` names what to fix (the API's problem)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def load_root(pem: str, field: str) -> x509.Certificate:
    """A self-signed CA certificate from PEM, else RotationError naming ``field``."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, x509.InvalidVersion):
        raise RotationError(field, "not a PEM X.509 certificate") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is None or not constraints.ca:
        raise RotationError(field, "not a CA certificate (basicConstraints CA:TRUE)")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise RotationError(field, "not a self-signed root certificate") from None
    return cert


def chains_to(chain: Sequence[x509.Certificate], root: x509.Certificate) -> bool:
    """Whether the server chain (leaf first, then intermediates) ends in ``root``: each
    certificate issued by the next, the last one by the root."""
    if not chain:
        return False
    for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
    return True


def root_keys(root: x509.Certificate) -> frozenset[inv.Key]:
    """How a charger may name the root in its inventory (every hash OCPP allows)."""
    keys = set()
    for algorithm in ("SHA256", "SHA384", "SHA512"):
        try:
            keys.add(inv.hash_data(root, root, algorithm).key())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            break
    return frozenset(keys)


DELETE_FIELDS = ("hash_algorithm", "issuer_name_hash", "issuer_key_hash", "serial_number")


def delete_params(root: x509.Certificate) -> dict[str, str]:
    """The delete-certificate parameters naming ``root`` (SHA-256 hash data)."""
    data = inv.hash_data(root, root)
    return {
        "hash_algorithm": data.hash_algorithm,
        "issuer_name_hash": data.issuer_name_hash,
        "issuer_key_hash": data.issuer_key_hash,
        "serial_number": data.serial,
    }


def holders(rows: Iterable[tuple[str, inv.Key]], keys: Collection[inv.Key]) -> frozenset[str]:
    """The chargers whose inventory rows (charger id, hash key) include the root."""
    return frozenset(cid for cid, key in rows if key in keys)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the server certificate may switch: ``problem`` is None when it may;
    ``lacking`` are the connected targeted chargers whose inventory lacks the new root."""

    problem: str | None
    holding: int
    connected: int
    lacking: tuple[str, ...]


def switch_readiness(
    state: str,
    install_state: str | None,
    targets: Sequence[str],
    connected: Collection[str],
    holding: Collection[str],
    min_share: float,
) -> Readiness:
    """The switch rule: installing, the install operation completed, and the new root held
    by at least ``min_share`` of the targeted chargers connected now (none connected: no)."""
    online = [cid for cid in targets if cid in connected]
    have = [cid for cid in online if cid in holding]
    lacking = tuple(cid for cid in online if cid not in holding)
    problem: str | None = None
    if state != RotationState.INSTALLING:
        problem = f"the rotation is {state}: only an installing rotation can switch"
    elif install_state != "completed":
        problem = (
            f"the new root's installation is {install_state or 'not started'}: the server "
            "certificate switches only after it completed on every stage"
        )
    elif not online:
        problem = "no targeted charger is connected: nothing shows the new root is installed"
    elif len(have) < min_share * len(online):
        problem = (
            f"the new root is on {len(have)} of {len(online)} connected targeted chargers, "
            f"below the rotation's share {min_share:g}: switching would lock the others out"
        )
    return Readiness(problem, len(have), len(online), lacking)


@dataclass(frozen=True, slots=True)
class Removal:
    """Whether the old root may be removed: ``waiting`` are the chargers that were on TLS
    at the switch and have not connected again since."""

    problem: str | None
    waiting: tuple[str, ...]


def removal_readiness(
    state: str,
    switched_at: datetime | None,
    on_tls_at_switch: Collection[str],
    reconnected: Collection[str],
    lagging: Sequence[str] = (),
) -> Removal:
    """The finish rule: only after the switch, and after every charger that was on TLS at the
    switch reconnected (validating the new chain); else the old root is its only way back.
    ``lagging``: nodes of a cluster whose listener does not serve the new chain yet (a charger
    without the old root could not connect to them)."""
    waiting = tuple(sorted(cid for cid in on_tls_at_switch if cid not in reconnected))
    if state in {RotationState.AWAITING_APPROVAL, RotationState.INSTALLING} or not switched_at:
        return Removal(
            "the server certificate has not been switched: the old root is what chargers "
            "check the server with until then",
            waiting,
        )
    if state != RotationState.SWITCHED:
        return Removal(f"the rotation is {state}: the old root's removal is not pending", waiting)
    if lagging:
        return Removal(
            f"not every node serves the new server certificate yet: {', '.join(lagging)}",
            waiting,
        )
    if waiting:
        return Removal(
            f"{len(waiting)} charger(s) have not reconnected under the new server certificate",
            waiting,
        )
    return Removal(None, ())


def end_state(state: str, operation_state: str | None) -> RotationState | None:
    """The state after the removal operation ended (None: no change): completed is the end;
    stopped (a charger refused, the failure threshold) goes back to ``switched`` so the
    operator can look at the failures and finish again."""
    if state != RotationState.REMOVING:
        return None
    if operation_state == "completed":
        return RotationState.FINISHED
    if operation_state in {"stopped", "cancelled", "rejected", "expired", "failed"}:
        return RotationState.SWITCHED
    return None
