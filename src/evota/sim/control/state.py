"""What remote commands change on one simulated charger, and the helpers every functional
block's handlers share. The state survives reconnects and reboots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any

from evota.ocpp.errors import ErrorKind, RpcError
from evota.sim.charger import CallFailed, SimulatedCharger
from evota.sim.control.keys import ConfigKey, core_configuration, digits
from evota.sim.control.locallist import LocalList
from evota.sim.control.schedules import StoredProfile, prevailing_kw


@dataclass(slots=True)
class Upload:
    """One diagnostics or log upload (kept for tests and the summary)."""

    kind: str
    file_name: str
    location: str
    request_id: int | None = None
    sha256: str = ""  # of the generated content, so tests can check what arrived
    size: int = 0
    status: str = "Uploading"
    attempts: int = 0
    error: str | None = None


@dataclass
class ControlState:
    """What remote commands change on one charger; survives reconnects and reboots."""

    charger: SimulatedCharger
    configuration: dict[str, ConfigKey]
    local_list: LocalList = field(default_factory=LocalList)
    auth_cache: dict[str, str] = field(default_factory=dict)
    profiles: dict[int, StoredProfile] = field(default_factory=dict)
    certificates: list[tuple[str, str]] = field(default_factory=list)  # (use, PEM)
    uploads: list[Upload] = field(default_factory=list)
    unlocked: list[int] = field(default_factory=list)  # connectors unlocked, in order
    data_transfers: list[dict[str, Any]] = field(default_factory=list)
    diagnostics_task: asyncio.Task[None] | None = None
    log_task: asyncio.Task[None] | None = None
    log_request_id: int | None = None

    def setting(self, key: str) -> str:
        entry = self.configuration.get(key)
        return entry.value if entry is not None else ""

    def flag(self, key: str) -> bool:
        return self.setting(key).lower() == "true"

    def number(self, key: str, default: int) -> int:
        value = self.setting(key)
        return int(value) if digits(value) else default

    @property
    def diagnostics_status(self) -> str:
        busy = self.diagnostics_task is not None and not self.diagnostics_task.done()
        return "Uploading" if busy else "Idle"

    @property
    def log_status(self) -> str:
        return "Uploading" if self.log_task is not None and not self.log_task.done() else "Idle"

    def power_kw(self, connector: int, configured: float) -> float:
        """The power a session on ``connector`` may draw now under the installed profiles: a
        ChargePointMaxProfile is shared by the sessions running, a TxProfile (while a
        transaction runs) overrides a TxDefaultProfile (the connector's over connector 0's)."""
        c = self.charger
        now = c.clock.now()
        by_purpose: dict[tuple[str, int], list[StoredProfile]] = {}
        for stored in self.profiles.values():
            by_purpose.setdefault((stored.purpose, stored.connector_id), []).append(stored)
        limits = [configured]
        site = prevailing_kw(by_purpose.get(("ChargePointMaxProfile", 0), []), now)
        if site is not None:
            limits.append(site / max(1, len(c.transactions)))
        tx = None
        if connector in c.transactions:
            tx = prevailing_kw(by_purpose.get(("TxProfile", connector), []), now)
        if tx is None:
            tx = prevailing_kw(by_purpose.get(("TxDefaultProfile", connector), []), now)
        if tx is None:
            tx = prevailing_kw(by_purpose.get(("TxDefaultProfile", 0), []), now)
        if tx is not None:
            limits.append(tx)
        return max(0.0, min(limits))


def state(charger: SimulatedCharger) -> ControlState:
    """The charger's control state, created on first use."""
    if charger.control is None:
        v16 = charger.spec.protocol == "ocpp1.6"
        security = not v16 or charger.spec.firmware_update != "plain"
        st = ControlState(
            charger,
            core_configuration(
                charger.spec.connectors,
                int(charger.heartbeat_interval),
                int(charger.config.meter_interval),
                security=security,
            )
            | charger.wire.extra_configuration(charger),
        )
        st.certificates = [
            ("ManufacturerRootCertificate", pem) for pem in charger.spec.firmware_roots
        ]
        # The CSMS roots it checks the server with are installed certificates too.
        csms_root = "CentralSystemRootCertificate" if v16 else "CSMSRootCertificate"
        st.certificates += [(csms_root, pem) for pem in charger.spec.ocpp_ca]
        for key, value in (
            ("SecurityProfile", str(charger.security_profile)),
            ("CpoName", charger.spec.organization),
        ):
            if key in st.configuration:
                st.configuration[key] = replace(st.configuration[key], value=value)
        charger.control = st
    return charger.control


def security_only(charger: SimulatedCharger, action: str) -> None:
    if charger.spec.protocol == "ocpp1.6" and charger.spec.firmware_update == "plain":
        # a 1.6 charger without the Security Whitepaper extension
        raise RpcError(ErrorKind.NOT_IMPLEMENTED, f"unknown action {action!r}")


def connectors(charger: SimulatedCharger) -> range:
    return range(1, charger.spec.connectors + 1)


async def quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(CallFailed):
        await call
