"""Vendor and model profiles: what evota knows about how a charger model behaves.

A profile applies to a vendor, optionally narrowed to one model and a firmware range.  Jobs,
campaigns, playbooks and delivery read the *effective* profile of a charger (``resolve``): the
most specific matching profile wins (vendor + model + range > vendor + model > vendor +
range > vendor), and a charger whose vendor has no profile gets ``DEFAULT`` -- the documented
defaults, which change nothing about today's behaviour.  Fields left ``None`` mean "unknown":
evota then decides as it would without a profile.

Pure: no I/O.  ``validate`` turns operator input into a profile or raises ``ProfileError``
naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args

from evota import versions

__all__ = [
    "DEFAULT",
    "DOWNLOAD_PROTOCOLS",
    "TRIGGER_MESSAGES",
    "DownloadProtocol",
    "ProfileError",
    "VendorProfile",
    "config_key",
    "matches",
    "resolve",
    "specificity",
    "standard_keys",
    "to_dict",
    "trigger_refusal",
    "validate",
    "with_changes",
]

_T = TypeVar("_T")

DownloadProtocol = Literal["http", "https", "ftp", "ftps"]
DOWNLOAD_PROTOCOLS: tuple[str, ...] = get_args(DownloadProtocol)

#: TriggerMessage values of OCPP 1.6 (with ExtendedTriggerMessage's) and 2.0.1, the vocabulary
#: of ``trigger_messages`` (evota.control.catalog's ``trigger`` command takes the same).
TRIGGER_MESSAGES: frozenset[str] = frozenset(
    {
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
        "LogStatusNotification",
        "SignChargingStationCertificate",
        "SignV2GCertificate",
        "SignCombinedCertificate",
        "PublishFirmwareStatusNotification",
        "TransactionEvent",
        "SignChargePointCertificate",
    }
)

# Bounds on operator input: a profile is small, and a typo must not make a timeout absurd.
MAX_SECONDS = 7 * 24 * 3600
MAX_TEXT = 200
MAX_IDENT = 50  # vendor, model and firmware version as chargers report them (CiString50)
MAX_NOTES = 4000
MAX_CONFIG_KEYS = 200


class ProfileError(ValueError):
    """Invalid profile input; ``field`` names the offending field (dotted for nested ones)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _empty_keys() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class VendorProfile:
    """Known behaviour of a vendor's chargers (optionally one model, one firmware range)."""

    vendor: str = ""  # "" only in DEFAULT, the profile of an unknown vendor
    model: str | None = None  # None: every model of the vendor
    firmware_min: str | None = None  # inclusive, evota.versions ordering
    firmware_max: str | None = None  # inclusive
    # None = unknown: a job sends the signed method when the image has a signature (as today).
    signed_updates: bool | None = None
    # Does the charger report Installed before it reboots (True) or after (False)?
    installed_before_reboot: bool | None = None
    # Typical durations in seconds; a job's phase timeout is at least a margin over these.
    download_seconds: float | None = None
    install_seconds: float | None = None
    reboot_seconds: float | None = None
    download_protocol: DownloadProtocol = "http"
    max_image_bytes: int | None = None  # larger images are refused before sending
    # standard key -> the vendor's name for it; not hashed (a mapping is not hashable)
    config_keys: Mapping[str, str] = field(default_factory=_empty_keys, hash=False)
    trigger_messages: frozenset[str] | None = None  # None = unknown = all supported
    max_per_site: int | None = None  # safe concurrent updates per site
    notes: str = ""

    @property
    def is_default(self) -> bool:
        return self.vendor == ""


#: The effective profile of a charger whose vendor has no profile: nothing known, so every
#: decision is made as without profiles, and downloads use HTTP(S) as the image URL says.
DEFAULT = VendorProfile()


def _fold(text: str | None) -> str:
    return (text or "").strip().casefold()


def matches(
    profile: VendorProfile, vendor: str | None, model: str | None, firmware_version: str | None
) -> bool:
    """Does ``profile`` apply to a charger of this vendor/model running this firmware?

    Vendor and model compare case-insensitively; a profile with a firmware range applies only
    to a charger that reported a version inside it.
    """
    if profile.is_default or _fold(profile.vendor) != _fold(vendor):
        return False
    if profile.model is not None and _fold(profile.model) != _fold(model):
        return False
    if profile.firmware_min is None and profile.firmware_max is None:
        return True
    if not firmware_version:
        return False
    key = versions.version_key(firmware_version)
    if profile.firmware_min is not None and key < versions.version_key(profile.firmware_min):
        return False
    return not (
        profile.firmware_max is not None and key > versions.version_key(profile.firmware_max)
    )


def specificity(profile: VendorProfile) -> int:
    """3 = vendor+model+range, 2 = vendor+model, 1 = vendor+range, 0 = vendor."""
    ranged = profile.firmware_min is not None or profile.firmware_max is not None
    return (2 if profile.model is not None else 0) + (1 if ranged else 0)


def _tie_break(profile: VendorProfile) -> tuple[str, ...]:
    """A total order among equally specific matches (overlapping ranges, or profiles that
    differ only in case), so ``resolve`` never depends on the order of its input."""
    return (
        _fold(profile.vendor),
        _fold(profile.model),
        profile.firmware_min or "",
        profile.firmware_max or "",
        json.dumps(to_dict(profile), sort_keys=True, default=str),
    )


def resolve(
    profiles: Iterable[VendorProfile],
    vendor: str | None,
    model: str | None,
    firmware_version: str | None,
) -> VendorProfile:
    """The effective profile: the most specific match, else ``DEFAULT``.

    Among equally specific matches (two overlapping ranges) the one with the highest
    ``firmware_min`` wins -- the narrower, newer knowledge -- then the lowest key, so the result
    never depends on the order of ``profiles``.
    """
    candidates = sorted(
        (p for p in profiles if matches(p, vendor, model, firmware_version)), key=_tie_break
    )
    if not candidates:
        return DEFAULT
    # max() keeps the first of equal ranks: the lowest tie-break key, as candidates are sorted.
    return max(candidates, key=_rank)


def _rank(profile: VendorProfile) -> tuple[int, versions.VersionKey]:
    low = versions.version_key(profile.firmware_min) if profile.firmware_min else ()
    return (specificity(profile), low)


def config_key(profile: VendorProfile, standard: str) -> str:
    """The vendor's name for a standard configuration key (the standard name if not mapped)."""
    return profile.config_keys.get(standard, standard)


def trigger_refusal(profile: VendorProfile, message: str) -> str | None:
    """Why a TriggerMessage for ``message`` must not be sent to this model, or None."""
    if profile.trigger_messages is None or message in profile.trigger_messages:
        return None
    supported = ", ".join(sorted(profile.trigger_messages)) or "none"
    who = profile.vendor + (f" {profile.model}" if profile.model else "")
    return f"the {who} profile does not support TriggerMessage {message} (supported: {supported})"


# -- validation -------------------------------------------------------------------------------


def _text(
    data: Mapping[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT
) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ProfileError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ProfileError(name, "must be a string")
    value = value.strip()
    if not value:
        if required:
            raise ProfileError(name, "must not be empty")
        return None
    if len(value) > limit:
        raise ProfileError(name, f"must be at most {limit} characters")
    if not value.isprintable():
        raise ProfileError(name, "must not contain control characters")
    return value


def _flag(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise ProfileError(name, "must be true, false or null")


def _seconds(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(name, "must be a number of seconds")
    if not 0 < value <= MAX_SECONDS:
        raise ProfileError(name, f"must be more than 0 and at most {MAX_SECONDS} seconds")
    return float(value)


def _count(data: Mapping[str, Any], name: str, *, upper: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(name, "must be a whole number")
    if not 1 <= value <= upper:
        raise ProfileError(name, f"must be between 1 and {upper}")
    return value


def _config_keys(data: Mapping[str, Any]) -> Mapping[str, str]:
    value = data.get("config_keys")
    if value is None:
        return _empty_keys()
    if not isinstance(value, Mapping):
        raise ProfileError("config_keys", "must be an object of standard key -> vendor key")
    if len(value) > MAX_CONFIG_KEYS:
        raise ProfileError("config_keys", f"must have at most {MAX_CONFIG_KEYS} entries")
    keys: dict[str, str] = {}
    for standard, vendor_key in value.items():
        if not isinstance(standard, str) or not standard.strip() or len(standard) > MAX_TEXT:
            raise ProfileError("config_keys", f"key {str(standard)[:50]!r} is not a key name")
        name = f"config_keys.{standard}"
        if not isinstance(vendor_key, str) or not vendor_key.strip():
            raise ProfileError(name, "must be a non-empty string")
        if len(vendor_key) > MAX_TEXT or not vendor_key.isprintable():
            raise ProfileError(name, f"must be printable, at most {MAX_TEXT} characters")
        keys[standard.strip()] = vendor_key.strip()
    return MappingProxyType(dict(sorted(keys.items())))


def _triggers(data: Mapping[str, Any]) -> frozenset[str] | None:
    value = data.get("trigger_messages")
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ProfileError("trigger_messages", "must be a list of TriggerMessage values or null")
    unknown = sorted(str(v)[:50] for v in value if v not in TRIGGER_MESSAGES)
    if unknown:
        raise ProfileError(
            "trigger_messages", f"unknown TriggerMessage value(s): {', '.join(unknown[:5])}"
        )
    return frozenset(value)


_FIELDS = frozenset(f.name for f in fields(VendorProfile))


def validate(data: Mapping[str, Any]) -> VendorProfile:
    """A profile from operator input (JSON-like), or ``ProfileError`` naming the field."""
    if not isinstance(data, Mapping):
        raise ProfileError("profile", "must be an object")
    unknown = sorted(str(k)[:50] for k in data if k not in _FIELDS)
    if unknown:
        raise ProfileError(unknown[0], "is not a vendor profile field")
    vendor = _text(data, "vendor", required=True, limit=MAX_IDENT)
    assert vendor is not None
    low = _text(data, "firmware_min", limit=MAX_IDENT)
    high = _text(data, "firmware_max", limit=MAX_IDENT)
    if low is not None and high is not None and versions.compare(low, high) > 0:
        raise ProfileError("firmware_max", f"must not be older than firmware_min ({low})")
    protocol = data.get("download_protocol", "http")
    if protocol is None:
        protocol = "http"
    if protocol not in DOWNLOAD_PROTOCOLS:
        raise ProfileError("download_protocol", f"must be one of {', '.join(DOWNLOAD_PROTOCOLS)}")
    notes = data.get("notes") or ""
    if not isinstance(notes, str):
        raise ProfileError("notes", "must be a string")
    if len(notes) > MAX_NOTES:
        raise ProfileError("notes", f"must be at most {MAX_NOTES} characters")
    return VendorProfile(
        vendor=vendor,
        model=_text(data, "model", limit=MAX_IDENT),
        firmware_min=low,
        firmware_max=high,
        signed_updates=_flag(data, "signed_updates"),
        installed_before_reboot=_flag(data, "installed_before_reboot"),
        download_seconds=_seconds(data, "download_seconds"),
        install_seconds=_seconds(data, "install_seconds"),
        reboot_seconds=_seconds(data, "reboot_seconds"),
        download_protocol=protocol,
        max_image_bytes=_count(data, "max_image_bytes", upper=2**53),
        config_keys=_config_keys(data),
        trigger_messages=_triggers(data),
        max_per_site=_count(data, "max_per_site", upper=100_000),
        notes=notes,
    )


def to_dict(profile: VendorProfile) -> dict[str, Any]:
    """JSON-ready form; ``validate(to_dict(p)) == p`` for every valid profile."""
    return {
        "vendor": profile.vendor,
        "model": profile.model,
        "firmware_min": profile.firmware_min,
        "firmware_max": profile.firmware_max,
        "signed_updates": profile.signed_updates,
        "installed_before_reboot": profile.installed_before_reboot,
        "download_seconds": profile.download_seconds,
        "install_seconds": profile.install_seconds,
        "reboot_seconds": profile.reboot_seconds,
        "download_protocol": profile.download_protocol,
        "max_image_bytes": profile.max_image_bytes,
        "config_keys": dict(profile.config_keys),
        "trigger_messages": (
            None if profile.trigger_messages is None else sorted(profile.trigger_messages)
        ),
        "max_per_site": profile.max_per_site,
        "notes": profile.notes,
    }


def with_changes(profile: VendorProfile, **changes: Any) -> VendorProfile:
    """A validated copy with ``changes`` applied (e.g. an accepted suggestion)."""
    return validate({**to_dict(profile), **changes})


def standard_keys(profile: VendorProfile, reported: Mapping[str, _T]) -> dict[str, _T]:
    """A charger's reported configuration with the vendor's key names turned back into the
    standard ones (``config_keys`` reversed), so drift compares like with like."""
    if not profile.config_keys:
        return dict(reported)
    out = dict(reported)
    for standard, vendor_key in profile.config_keys.items():
        if vendor_key in reported:
            out.pop(vendor_key, None)
            out[standard] = reported[vendor_key]
    return out
