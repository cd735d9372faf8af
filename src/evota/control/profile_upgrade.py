"""Raising a charger's security profile without locking it out (issue 16 §4), pure.

1.6 Security Whitepaper, "migrate to a higher security profile": the charger must hold the
CSMS root before it is told to use TLS, and a client certificate before profile 3; evota keeps
the stored (lower) profile — which already admits a connection on a higher one — until the
charger has reconnected on the new profile, and only then enforces it. No reconnection by the
deadline: the stored profile stays, so the charger is never locked out by evota. 2.0.1 (A05)
keeps the old network slot behind the new one, so the charger itself falls back as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from evota.pki import inventory as inv

#: What this upgrade can drive: 1.6 ChangeConfiguration SecurityProfile, 2.0.1 A05
#: (SetNetworkProfile, NetworkConfigurationPriority, Reset).
PROTOCOLS = ("ocpp1.6", "ocpp2.0.1")


def refusal(protocol: str | None, current: int, target: int, has_certificate: bool) -> str | None:
    """Why this upgrade must not start (None: it may)."""
    if protocol is None:
        return "the charger is not connected"
    if protocol not in PROTOCOLS:
        return f"{protocol}: security profile upgrades are not supported on this protocol"
    if target not in (2, 3):
        return "profile: an upgrade goes to 2 or 3"
    if target <= current:
        return f"profile: the charger is already on profile {current}"
    if target == 3 and not has_certificate:
        return "profile 3 needs a valid client certificate evota signed: renew it first"
    return None


def holds(reported: Iterable[Mapping[str, Any]], root: inv.HashData) -> bool:
    """Whether GetInstalledCertificateIds' answer lists ``root`` (hash data, any case)."""
    for item in reported:
        try:
            data = inv.HashData(
                str(item["hash_algorithm"]),
                str(item["issuer_name_hash"]),
                str(item["issuer_key_hash"]),
                str(item["serial_number"]),
            )
        except KeyError:
            continue
        if data.key() == root.key():
            return True
    return False


def reconnected(target: int, channel_profile: int) -> bool:
    """A connection proves the upgrade when it satisfies the new profile."""
    return channel_profile >= target


def network_slots(priority: str | None) -> tuple[int, int] | None:
    """(free slot for the new profile, slot in use now) from 2.0.1's
    ``OCPPCommCtrlr.NetworkConfigurationPriority`` (comma-separated slot numbers, the one in
    use first); None when the charger's value is missing or not such a list."""
    if not priority:
        return None
    try:
        slots = [int(part) for part in priority.split(",")]
    except ValueError:
        return None
    if any(slot < 0 for slot in slots):
        return None
    free = next(n for n in range(len(slots) + 1) if n not in slots)
    return free, slots[0]


def new_priority(new: int, old: int) -> str:
    """The new slot first, the old one kept as the fallback: a charger that cannot connect
    on the new profile comes back on the old one instead of being locked out (A05)."""
    return f"{new},{old}"
