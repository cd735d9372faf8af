"""A charger's hardware revision, where a charger reports one at all (pure).

Firmware images may be restricted to hardware revisions (``firmware.hardware_revisions``),
so evota must know each charger's. OCPP 1.6 has no such field (``chargePointSerialNumber``
is a serial number, not a revision) and neither has the 2.0.1 BootNotification, so the
operator sets it (``PATCH /api/v1/chargers/{id}``, ``evota charger update
--hardware-revision``). A 2.0.1 charger that reports one in its device model (NotifyReport,
the answer to a GetBaseReport) overrides it: the standardized ``ChargingStation.ECVariant``
(engineering change variant), or a vendor's ``ChargingStation.HardwareRevision``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: (component, variable) that carry the revision, in order of preference.
REVISION_VARIABLES = (("ChargingStation", "ECVariant"), ("ChargingStation", "HardwareRevision"))
MAX_LENGTH = 50  # chargers.hardware_revision
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


def reported_revision(items: Iterable[Mapping[str, Any]]) -> str | None:
    """The revision in one part of a NotifyReport (items as :mod:`evota.ocpp.v201` stores
    them), or None. Only the station-wide variable counts (no EVSE, no instance), and only a
    printable value of at most 50 characters: a longer one is not a revision, and cutting it
    could make it match an image it does not fit."""
    found: dict[tuple[str, str], str] = {}
    for item in items:
        key = (item.get("component"), item.get("variable"))
        if key not in REVISION_VARIABLES or key in found:
            continue
        if any(
            item.get(k) is not None for k in ("evse_id", "component_instance", "variable_instance")
        ):
            continue
        value = item.get("value")
        if not isinstance(value, str):
            continue
        value = value.strip()
        if value and len(value) <= MAX_LENGTH and _PRINTABLE.match(value):
            found[key] = value  # type: ignore[index]
    return next((found[k] for k in REVISION_VARIABLES if k in found), None)
