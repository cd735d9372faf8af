"""What the simulator simulates: a fleet file (or a few flags) expanded into charger specs.

Keys are derived from a seed (HMAC-SHA-256 over the identity), so a restarted simulator
reconnects with the same keys without storing any, and a fleet of 10,000 chargers fits in a
ten-line file. Every problem in a fleet file is reported as one :class:`FleetFileError` that
names the line and the field; nothing in here lets a YAML or Python traceback escape.

Format (all keys except ``groups``/``chargers`` entries' ``prefix``/``count``/``identity``
are optional)::

    seed: demo-2026            # keys = HMAC-SHA-256(seed, identity); change it to re-key
    protocol: ocpp1.6          # default for every charger: ocpp1.6 or ocpp2.0.1
    defaults:                  # inherited by every group and charger below
      vendor: Evota
      model: Sim-AC22
      firmware_version: "1.0.0"
      connectors: 2
      tags: [sim]
    sites:
      - {id: berlin-hbf, name: Berlin Hbf, timezone: Europe/Berlin, region: DE-BE, tags: [rail]}
    groups:                    # identities PREFIX0001 .. PREFIX{count}
      - prefix: ACME-
        count: 50
        start: 1               # first number (default 1)
        digits: 4              # zero padding (default: at least 4)
        vendor: Acme
        model: AC22
        firmware_version: "1.4.2"
        sites: [berlin-hbf, munich-ost]   # spread round-robin; or `site: berlin-hbf`
        connectors: 2
        tags: [ac, pilot]      # replaces defaults.tags
        protocol: ocpp2.0.1    # any group or charger may speak the other version
    chargers:                  # one-off chargers, every field explicit if you like
      - identity: LAB-1
        auth_key: an-explicit-key-of-16-to-40-chars
        serial_number: SN-LAB-1
        site: berlin-hbf

Firmware update behaviour (``defaults``, groups and chargers; each replaces what it inherits)::

      firmware_update: both    # plain (UpdateFirmware), signed (SignedUpdateFirmware) or both
      firmware_roots: [roots/acme-root.pem]   # trusted manufacturer roots, relative to the file
      download_protocols: [ftp]   # URL schemes it downloads from [http, https]; ftp/ftps: ftplib
      download_ca: ca.pem         # CA that signs the FTPS/HTTPS server (default: system CAs)
      faults: {link_drop: 0.5, power_loss: 0.1, bad_versions: ["2.0.1"]}
      faults: {certificate_status: revoked, refuse_cancel: 1, install_verification_fails: 0.1}

Security profiles (docs/security-profiles.md, "Simulator"; ``defaults``, groups and chargers)::

      security_profile: 3      # what the charger believes it is on (default: 3 with a client
                               # certificate, 2 on a wss:// URL, else 1)
      ocpp_ca: csms-root.pem   # CSMS root(s) it checks the server with (default: system CAs)
      organization: acme-cpo   # O of its CSR and minted certificate (the CpoName key)
      client_ca: charger-ca.pem          # mint each charger a client certificate (CN = id)
      client_ca_key: charger-ca.key      #   with this CA (large fleets)
      client_cert: cp-1.pem    # chargers: only: its own certificate (chain) and key
      client_key: cp-1.key
      faults: {reject_certificate: 1, no_reconnect_after_profile_switch: 1, expired_certificate: 1}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1")
DEFAULT_SEED = "evota-sim"
DEFAULT_VENDOR = "Evota"
DEFAULT_MODEL = "Sim-AC22"
DEFAULT_FIRMWARE = "1.0.0"
DEFAULT_CONNECTORS = 2
DEFAULT_TIMEZONE = "Europe/Berlin"
KEY_LENGTH = 32

MAX_IDENTITY_LENGTH = 48  # the gateway's limit (and 2.0.1's)
MAX_CHARGERS = 100_000
MAX_CONNECTORS = 100
# BootNotification.req field limits in OCPP 1.6: a spec that passes here always boots.
MAX_VENDOR = 20
MAX_MODEL = 20
MAX_SERIAL = 25
MAX_FIRMWARE = 50
MAX_TAG = 64
MAX_SITE_ID = 64
MAX_NAME = 200
MAX_ORGANIZATION = 64  # X.509's upper bound for O
# Bounds the work a hostile file can cause (alias bombs, deep nesting).
_MAX_NODES = 1_000_000
_MAX_DEPTH = 32

FIRMWARE_UPDATE_MODES = ("plain", "signed", "both")
DOWNLOAD_PROTOCOLS = ("http", "https", "ftp", "ftps")
DEFAULT_DOWNLOAD_PROTOCOLS = ("http", "https")  # a legacy FTP-only model says [ftp]
#: Per-update probabilities (0..1), drawn with the charger's rng when a request arrives.
FAULT_RATES = (
    "download_fails",
    "link_drop",
    "power_loss",
    "install_fails",
    "invalid_signature",
    "silent",
    "reject",
    "install_verification_fails",
    "refuse_cancel",
    "defer_download",
)
#: Security-profile probabilities (0..1): per CertificateSigned, per profile switch, and once
#: per charger when its client certificate is minted.
SECURITY_FAULT_RATES = (
    "reject_certificate",
    "no_reconnect_after_profile_switch",
    "expired_certificate",
    "reject_password",
    "keep_old_password",
)
#: Fault fields that list firmware versions.
VERSION_LISTS = ("bad_versions", "unavailable_versions", "degraded_versions")
#: Fault fields that list connectors (Faulted from power-up; see FaultProfile).
CONNECTOR_LISTS = ("faulted_connectors", "stuck_connectors")
FAULT_NAMES = (
    *FAULT_RATES,
    *SECURITY_FAULT_RATES,
    "slow_link_bps",
    *VERSION_LISTS,
    "certificate_status",
    *CONNECTOR_LISTS,
)
#: The errorCode a faulted or stuck connector reports (1.6 ErrorCode).
CONNECTOR_FAULT_CODE = "InternalError"
CERTIFICATE_STATUSES = ("invalid", "revoked")
MAX_SLOW_LINK_BPS = 10**12
_PEM_START = "-----BEGIN"


class FleetError(ValueError):
    """A fleet description (file or flags) that cannot be simulated."""


class FleetFileError(FleetError):
    """A fleet file problem, located: ``fleet.yaml line 7, groups[0].count: must be ...``."""

    def __init__(
        self, problem: str, *, line: int | None = None, field: str = "", source: str = ""
    ) -> None:
        self.problem = problem
        self.line = line
        self.field = field
        self.source = source
        where = " ".join(p for p in (source, f"line {line}" if line else "") if p)
        prefix = ", ".join(p for p in (where, field) if p)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


@dataclass(frozen=True, slots=True)
class SiteSpec:
    id: str
    name: str
    timezone: str = DEFAULT_TIMEZONE
    region: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """How a charger misbehaves during firmware updates; rates are drawn once per update.

    ``slow_link_bps`` (bits per second) throttles every download; a charger that boots into
    one of ``bad_versions`` reports Faulted and its sessions fail; one that boots into one of
    ``unavailable_versions`` reports every connector Unavailable and starts no session (it
    came up, but cannot charge: what a health gate must not take for success).
    One on a ``degraded_versions`` version passes every health check, but each of its
    sessions fails (stopped ``Other``, the connector Faulted ``GroundFailure`` for a
    moment): the subtle regression only post-rollout KPIs catch.
    ``faulted_connectors`` report Faulted from power-up until the charger's next reboot (a
    Reset clears them: a software fault); ``stuck_connectors`` stay Faulted whatever is
    done remotely (a hardware fault: a truck must roll).
    """

    download_fails: float = 0.0  # every download attempt fails -> DownloadFailed
    link_drop: float = 0.0  # the link drops once mid-download; the download resumes (Range)
    slow_link_bps: int | None = None
    power_loss: float = 0.0  # power lost while installing: back on the previous version
    install_fails: float = 0.0  # the install fails cleanly: InstallationFailed, old version
    bad_versions: tuple[str, ...] = ()
    unavailable_versions: tuple[str, ...] = ()
    degraded_versions: tuple[str, ...] = ()
    invalid_signature: float = 0.0  # the signature check fails even for a valid signature
    silent: float = 0.0  # accepts the request, then never reports and never updates
    reject: float = 0.0  # answers Rejected (signed) / {} and does nothing (plain)
    # the pre-install check of the downloaded image fails: InstallVerificationFailed
    install_verification_fails: float = 0.0
    # a second request while one runs is answered Rejected instead of cancelling it
    refuse_cancel: float = 0.0
    # with sessions running, the download waits for them to end (DownloadScheduled)
    defer_download: float = 0.0
    # the signing certificate is found invalid / revoked whatever it is (None: checked)
    certificate_status: str | None = None
    # security profiles (evota.sim.tls): CertificateSigned is answered Rejected; after
    # accepting a higher SecurityProfile the charger never connects again; its minted client
    # certificate has expired (drawn once per charger)
    reject_certificate: float = 0.0
    no_reconnect_after_profile_switch: float = 0.0
    expired_certificate: float = 0.0
    # passwords (1.6 AuthorizationKey, 2.0.1 BasicAuthPassword): a new one is answered
    # Rejected; a new one is answered Accepted but the charger keeps connecting with the old
    reject_password: float = 0.0
    keep_old_password: float = 0.0
    faulted_connectors: tuple[int, ...] = ()  # Faulted until the next reboot (Reset)
    stuck_connectors: tuple[int, ...] = ()  # Faulted whatever is done remotely

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            problem = fault_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"{name}: {problem}")

    def active(self) -> dict[str, Any]:
        """The fields that differ from the defaults (for fleet files and summaries)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in FAULT_NAMES
            if (value := getattr(self, name)) != getattr(NO_FAULTS, name)
        }


def fault_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be fault ``name`` (None if it can)."""
    if name in FAULT_RATES or name in SECURITY_FAULT_RATES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return f"must be a number from 0 to 1 (got {value!r})"
    elif name == "slow_link_bps":
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_SLOW_LINK_BPS
        ):
            return f"must be a whole number of bits per second, 1-{MAX_SLOW_LINK_BPS}, or null"
    elif name == "certificate_status":
        if value is not None and value not in CERTIFICATE_STATUSES:
            return f"must be invalid, revoked or null (got {value!r})"
    elif name in VERSION_LISTS:
        if not isinstance(value, tuple):
            return "must be a list of firmware versions"
        for version in value:
            if not isinstance(version, str):
                return f"versions must be text (got {version!r})"
            if problem := _text_problem(version, MAX_FIRMWARE):
                return f"version {version!r} {problem}"
    elif name in CONNECTOR_LISTS:
        if not isinstance(value, tuple) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_CONNECTORS
            for c in value
        ):
            return f"must be a list of connector numbers, 1-{MAX_CONNECTORS}"
    else:
        return f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})"
    return None


def parse_fault_flag(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from ``--fault`` as a typed value; raises ValueError with the problem."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep:
        raise ValueError(f"expected NAME=VALUE (got {text!r})")
    value: Any = raw
    if name in FAULT_RATES or name in SECURITY_FAULT_RATES:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name}: must be a number from 0 to 1 (got {raw!r})") from None
    elif name == "slow_link_bps":
        if raw.lower() in ("", "none", "null"):
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                value = raw
    elif name in VERSION_LISTS:
        value = tuple(v.strip() for v in raw.split(",") if v.strip())
    elif name in CONNECTOR_LISTS:
        try:
            value = tuple(int(v) for v in raw.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{name}: must be a list of connector numbers (got {raw!r})") from None
    elif name == "certificate_status" and raw.lower() in ("", "none", "null"):
        value = None
    problem = fault_problem(name, value)
    if problem:
        raise ValueError(problem if problem.startswith("unknown") else f"{name}: {problem}")
    return name, value


NO_FAULTS = FaultProfile()


def read_root(entry: str, base_dir: Path | None = None) -> str:
    """A trusted root's PEM text: ``entry`` is PEM text itself or a path (relative to base_dir).

    Raises ValueError naming the problem; the certificate is parsed, so junk fails early.
    """
    from cryptography import x509  # imported here: only fleets with roots pay for it

    if entry.lstrip().startswith(_PEM_START):
        text, what = entry, "the inline root"
    else:
        path = Path(entry)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        what = repr(entry)
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            raise ValueError(f"cannot read {what}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not a PEM X.509 certificate") from None
    try:
        x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        raise ValueError(f"{what} is not a PEM X.509 certificate") from None
    return text


@dataclass(frozen=True, slots=True)
class ChargerSpec:
    identity: str
    auth_key: str = field(repr=False)
    vendor: str = DEFAULT_VENDOR
    model: str = DEFAULT_MODEL
    serial_number: str = ""
    firmware_version: str = DEFAULT_FIRMWARE
    site_id: str | None = None
    connectors: int = DEFAULT_CONNECTORS
    tags: tuple[str, ...] = ()
    protocol: str = "ocpp1.6"
    firmware_update: str = "both"  # plain, signed or both (see FIRMWARE_UPDATE_MODES)
    firmware_roots: tuple[str, ...] = field(default=(), repr=False)  # trusted roots, PEM text
    faults: FaultProfile = NO_FAULTS
    download_protocols: tuple[str, ...] = DEFAULT_DOWNLOAD_PROTOCOLS  # URL schemes it fetches
    download_ca: str | None = field(default=None, repr=False)  # PEM: trusted by FTPS downloads
    # security profiles (evota.sim.tls); None: 3 with a client certificate, 2 on wss://, else 1
    security_profile: int | None = None
    ocpp_ca: tuple[str, ...] = field(default=(), repr=False)  # CSMS roots it trusts, PEM each
    organization: str = ""  # O of its CSRs and minted certificate; the CpoName key's value
    client_cert: str | None = field(default=None, repr=False)  # PEM chain, leaf first
    client_key: str | None = field(default=None, repr=False)  # PEM
    client_ca: tuple[str, str] | None = field(default=None, repr=False)  # (cert, key) to mint

    def __post_init__(self) -> None:
        if problem := tls_problem(self):
            raise ValueError(problem)


def tls_problem(spec: ChargerSpec) -> str | None:
    """Why a charger's security-profile settings cannot work together (None if they can)."""
    if spec.security_profile is not None and spec.security_profile not in (1, 2, 3):
        return f"security_profile must be 1, 2 or 3 (got {spec.security_profile!r})"
    if (spec.client_cert is None) != (spec.client_key is None):
        return "client_cert and client_key go together"
    has_certificate = spec.client_cert is not None or spec.client_ca is not None
    if spec.security_profile == 3 and not has_certificate:
        return "security_profile 3 needs a client certificate (client_cert or client_ca)"
    if spec.faults.expired_certificate and spec.client_ca is None:
        return "the expired_certificate fault needs client_ca (the simulator mints it)"
    return None


def read_pem_bundle(entry: str, base_dir: Path | None = None) -> tuple[str, ...]:
    """The certificates of a PEM file (or PEM text), one PEM text each; ValueError naming the
    problem."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    text, what = _read_pem(entry, base_dir)
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise ValueError(f"{what} is not a PEM X.509 certificate") from None
    return tuple(c.public_bytes(Encoding.PEM).decode() for c in certs)


def read_key_pair(cert_entry: str, key_entry: str, base_dir: Path | None = None) -> tuple[str, str]:
    """A certificate (chain) and its private key, checked to belong together."""
    from evota.sim.tls import pair_problem

    cert, _ = _read_pem(cert_entry, base_dir)
    key, _ = _read_pem(key_entry, base_dir)
    if problem := pair_problem(cert, key):
        raise ValueError(problem)
    return cert, key


def _read_pem(entry: str, base_dir: Path | None) -> tuple[str, str]:
    if entry.lstrip().startswith(_PEM_START):
        return entry, "the inline PEM"
    path = Path(entry)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        return path.read_text(encoding="ascii"), repr(entry)
    except OSError as exc:
        raise ValueError(f"cannot read {entry!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{entry!r} is not a PEM file") from None


@dataclass(frozen=True, slots=True)
class FleetSpec:
    seed: str
    sites: tuple[SiteSpec, ...]
    chargers: tuple[ChargerSpec, ...]


# -- deterministic secrets -------------------------------------------------------------------


def derive_key(seed: str, identity: str) -> str:
    """The charger's AuthorizationKey: HMAC-SHA-256(seed, identity), 32 printable characters."""
    digest = hmac.new(seed.encode(), b"key:" + identity.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:KEY_LENGTH]


def derive_serial(seed: str, identity: str) -> str:
    """A stable serial number, so the CSMS inventory does not change between runs."""
    digest = hmac.new(seed.encode(), b"serial:" + identity.encode(), hashlib.sha256).hexdigest()
    return "SN" + digest[:14].upper()


# -- value checks shared by files and flags ---------------------------------------------------


def identity_problem(identity: str) -> str | None:
    """Why ``identity`` cannot be a charger identity (URL path segment and Basic-auth user)."""
    if not 1 <= len(identity) <= MAX_IDENTITY_LENGTH:
        return f"must be 1-{MAX_IDENTITY_LENGTH} characters (got {len(identity)})"
    if any(not 33 <= ord(c) < 127 for c in identity):
        return "must be printable ASCII without spaces"
    if ":" in identity or "/" in identity:
        return "must not contain ':' or '/'"
    return None


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid OCPP AuthorizationKey (16-40 printable ASCII characters)."""
    if not 16 <= len(key) <= 40:
        return f"must be 16-40 characters (got {len(key)})"
    if any(not 33 <= ord(c) < 127 for c in key):
        return "must be printable ASCII without spaces"
    return None


def _text_problem(value: str, max_length: int) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters (got {len(value)})"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain control characters"
    return None


@cache
def _have_tz_database() -> bool:
    try:
        zoneinfo.ZoneInfo("Europe/Berlin")
    except Exception:
        return False
    return True


def timezone_problem(name: str) -> str | None:
    if not _have_tz_database():
        return None  # cannot check here; the CSMS will
    try:
        zoneinfo.ZoneInfo(name)
    except Exception:
        return f"unknown IANA timezone {name!r}"
    return None


def group_identities(
    prefix: str, count: int, start: int = 1, digits: int | None = None
) -> list[str]:
    width = digits if digits is not None else max(4, len(str(start + count - 1)))
    return [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]


# -- flags ------------------------------------------------------------------------------------


def fleet_from_flags(
    count: int,
    *,
    prefix: str = "SIM-",
    vendor: str = DEFAULT_VENDOR,
    model: str = DEFAULT_MODEL,
    firmware_version: str = DEFAULT_FIRMWARE,
    connectors: int = DEFAULT_CONNECTORS,
    seed: str = DEFAULT_SEED,
    site_id: str | None = None,
    sites: Sequence[SiteSpec] = (),
    tags: Sequence[str] = (),
    firmware_update: str = "both",
    firmware_roots: Sequence[str | Path] = (),
    faults: FaultProfile | Sequence[str] = NO_FAULTS,
    protocol: str = PROTOCOLS[0],
    v201_fraction: float | None = None,
    download_protocols: Sequence[str] = DEFAULT_DOWNLOAD_PROTOCOLS,
    download_ca: str | Path | None = None,
    security_profile: int | None = None,
    ocpp_ca: str | Path | None = None,
    organization: str = "",
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    client_ca: str | Path | None = None,
    client_ca_key: str | Path | None = None,
) -> FleetSpec:
    """``count`` identical chargers ``{prefix}0001..``; raises :class:`FleetError` on bad values.

    ``site_id`` puts them all at one site; ``sites`` spreads them round-robin (demo fleets).
    ``firmware_roots`` are paths or PEM texts; ``faults`` a profile or ``NAME=VALUE`` strings.
    ``protocol`` is every charger's, unless ``v201_fraction`` (0..1) makes that share of them,
    spread evenly through the fleet, speak ``ocpp2.0.1`` and the rest ``ocpp1.6``.
    The security-profile arguments are the fleet file's keys (paths or PEM texts).
    """
    problems: list[str] = []
    if protocol not in PROTOCOLS:
        problems.append(f"--protocol: must be {' or '.join(PROTOCOLS)} (got {protocol!r})")
    if v201_fraction is not None and (
        isinstance(v201_fraction, bool)
        or not isinstance(v201_fraction, int | float)
        or not 0 <= v201_fraction <= 1
    ):
        problems.append(f"--v201-fraction: must be a number from 0 to 1 (got {v201_fraction!r})")
    if firmware_update not in FIRMWARE_UPDATE_MODES:
        problems.append(
            f"--firmware-update: must be plain, signed or both (got {firmware_update!r})"
        )
    if not download_protocols or any(p not in DOWNLOAD_PROTOCOLS for p in download_protocols):
        problems.append(
            f"--download-protocol: must be {', '.join(DOWNLOAD_PROTOCOLS)} "
            f"(got {', '.join(download_protocols) or 'none'})"
        )
    ca: str | None = None
    if download_ca is not None:
        try:
            ca = read_root(str(download_ca))
        except ValueError as exc:
            problems.append(f"--download-ca: {exc}")
    roots: list[str] = []
    for entry in firmware_roots:
        try:
            roots.append(read_root(str(entry)))
        except ValueError as exc:
            problems.append(f"--firmware-root: {exc}")
    profile = NO_FAULTS
    if isinstance(faults, FaultProfile):
        profile = faults
    else:
        values: dict[str, Any] = {}
        for text in faults:
            try:
                name, value = parse_fault_flag(text)
            except ValueError as exc:
                problems.append(f"--fault: {exc}")
            else:
                values[name] = value
        if not problems:
            profile = FaultProfile(**values)
    if site_id is not None and sites:
        problems.append("give site_id or sites, not both")
    roots_ca: tuple[str, ...] = ()
    if ocpp_ca is not None:
        try:
            roots_ca = read_pem_bundle(str(ocpp_ca))
        except ValueError as exc:
            problems.append(f"--ca: {exc}")
    own = mint_ca = None
    for flags, cert_entry, key_entry in (
        (("--client-cert", "--client-key"), client_cert, client_key),
        (("--client-ca", "--client-ca-key"), client_ca, client_ca_key),
    ):
        if cert_entry is None and key_entry is None:
            continue
        if cert_entry is None or key_entry is None:
            problems.append(f"{flags[0]} and {flags[1]} go together")
            continue
        try:
            pair = read_key_pair(str(cert_entry), str(key_entry))
        except ValueError as exc:
            problems.append(f"{flags[0]}: {exc}")
            continue
        if flags[0] == "--client-cert":
            own = pair
        else:
            mint_ca = pair
    if own is not None and count != 1:
        problems.append(
            "--client-cert is one charger's certificate: use --count 1, or --client-ca to "
            "mint one per charger"
        )
    if organization and (problem := _text_problem(organization, MAX_ORGANIZATION)):
        problems.append(f"--organization: {problem}")
    if security_profile is not None and security_profile not in (1, 2, 3):
        problems.append(f"--security-profile: must be 1, 2 or 3 (got {security_profile!r})")
    elif security_profile == 3 and own is None and mint_ca is None:
        problems.append(
            "--security-profile 3 needs --client-cert/--client-key or --client-ca/--client-ca-key"
        )
    if profile.expired_certificate and mint_ca is None:
        problems.append(
            "--fault expired_certificate needs --client-ca/--client-ca-key (the simulator "
            "mints the expired certificate)"
        )
    if not 1 <= count <= MAX_CHARGERS:
        problems.append(f"--count: must be 1-{MAX_CHARGERS} (got {count})")
    if not 1 <= connectors <= MAX_CONNECTORS:
        problems.append(f"--connectors: must be 1-{MAX_CONNECTORS} (got {connectors})")
    for flag, value, limit in (
        ("--vendor", vendor, MAX_VENDOR),
        ("--model", model, MAX_MODEL),
        ("--firmware", firmware_version, MAX_FIRMWARE),
        ("--seed", seed, 1000),
    ):
        problem = _text_problem(value, limit)
        if problem:
            problems.append(f"{flag}: {problem}")
    if site_id is not None and (problem := _text_problem(site_id, MAX_SITE_ID)):
        problems.append(f"--site: {problem}")
    if not problems:
        last = group_identities(prefix, 1, start=count)[0]
        if problem := identity_problem(last):
            problems.append(f"--prefix: identities like {last!r} {problem}")
    if problems:
        raise FleetError(problems[0])
    if site_id is not None:
        sites = (SiteSpec(id=site_id, name=site_id),)
    spread: list[str | None] = [s.id for s in sites] or [None]
    chargers = tuple(
        ChargerSpec(
            identity=identity,
            auth_key=derive_key(seed, identity),
            vendor=vendor,
            model=model,
            serial_number=derive_serial(seed, identity),
            firmware_version=firmware_version,
            site_id=spread[i % len(spread)],
            connectors=connectors,
            tags=tuple(tags),
            firmware_update=firmware_update,
            firmware_roots=tuple(roots),
            faults=profile,
            protocol=protocol if v201_fraction is None else mixed_protocol(i, v201_fraction),
            download_protocols=tuple(dict.fromkeys(download_protocols)),
            download_ca=ca,
            security_profile=security_profile,
            ocpp_ca=roots_ca,
            organization=organization,
            client_cert=own[0] if own else None,
            client_key=own[1] if own else None,
            client_ca=mint_ca,
        )
        for i, identity in enumerate(group_identities(prefix, count))
    )
    return FleetSpec(seed=seed, sites=tuple(sites), chargers=chargers)


def mixed_protocol(index: int, v201_fraction: float) -> str:
    """The protocol of charger ``index`` when ``v201_fraction`` of a fleet speaks 2.0.1: the
    2.0.1 chargers are spread evenly (0.25: every fourth), so any prefix has its share."""
    if int((index + 1) * v201_fraction + 1e-9) > int(index * v201_fraction + 1e-9):
        return "ocpp2.0.1"
    return "ocpp1.6"


# -- fleet files: YAML nodes -> located values ------------------------------------------------


@dataclass(slots=True)
class _Val:
    """A YAML value with where it came from, so every error can name its line and field."""

    value: Any  # scalar, list[_Val] or dict[str, _Val]
    line: int
    path: str
    raw: str | None = None  # the scalar's source text, so `1.10` can be a version string


_STR_TAG = "tag:yaml.org,2002:str"


class _Reader:
    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.nodes = 0

    def error(self, problem: str, line: int | None, path: str) -> FleetFileError:
        return FleetFileError(problem, line=line, field=path, source=self.source)

    def build(self, node: Node, path: str, depth: int = 0) -> _Val:
        self.nodes += 1
        line = node.start_mark.line + 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            where = path if len(path) <= 60 else path[:57] + "..."
            raise self.error("file is too large or too deeply nested", line, where)
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:  # the common case, without the constructor's bookkeeping
                return _Val(node.value, line, path, raw=node.value)
            try:
                value = self.loader.construct_object(node, deep=True)
            except Exception as exc:  # bad !!tags, `!!int abc`, ...
                problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
                raise self.error(f"cannot read value: {problem}", line, path) from None
            return _Val(value, line, path, raw=str(node.value))
        if isinstance(node, SequenceNode):
            items = [self.build(n, f"{path}[{i}]", depth + 1) for i, n in enumerate(node.value)]
            return _Val(items, line, path)
        if isinstance(node, MappingNode):
            out: dict[str, _Val] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    raise self.error("keys must be plain words", key_line, path)
                key = str(key_node.value)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    raise self.error(f"duplicate key {key!r}", key_line, path or "(top level)")
                out[key] = self.build(value_node, sub, depth + 1)
            return _Val(out, line, path)
        raise self.error("unsupported YAML node", line, path)  # pragma: no cover


# libyaml when available: ten times faster on explicit 20,000-charger files.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, source: str) -> _Val:
    try:
        loader = _Loader(text)
    except Exception as exc:
        raise FleetFileError(f"not readable as text: {exc}", source=source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise FleetFileError("the file is empty", source=source)
        return _Reader(loader, source).build(node, "")
    except FleetFileError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FleetFileError(f"invalid YAML: {problem}", line=line, source=source) from None
    except RecursionError:
        raise FleetFileError("the file is nested too deeply", source=source) from None
    finally:
        loader.dispose()


# -- fleet files: located values -> specs -----------------------------------------------------

_TOP_KEYS = {"seed", "protocol", "defaults", "sites", "groups", "chargers"}
_SITE_KEYS = {"id", "name", "timezone", "region", "tags"}
_COMMON_KEYS = {
    "vendor",
    "model",
    "firmware_version",
    "connectors",
    "tags",
    "protocol",
    "firmware_update",
    "firmware_roots",
    "faults",
    "download_protocols",
    "download_ca",
    "security_profile",
    "ocpp_ca",
    "organization",
    "client_ca",
    "client_ca_key",
}
_GROUP_KEYS = _COMMON_KEYS | {"prefix", "count", "start", "digits", "site", "sites"}
_CHARGER_KEYS = _COMMON_KEYS | {
    "identity",
    "auth_key",
    "serial_number",
    "site",
    "client_cert",
    "client_key",
}


class _Builder:
    def __init__(self, reader_source: str, base_dir: Path | None = None) -> None:
        self.source = reader_source
        self.base_dir = base_dir

    def error(self, problem: str, val: _Val) -> FleetFileError:
        return FleetFileError(problem, line=val.line, field=val.path, source=self.source)

    def mapping(self, val: _Val, allowed: set[str], what: str) -> dict[str, _Val]:
        if not isinstance(val.value, dict):
            raise self.error(f"{what} must be a mapping of key: value", val)
        for key, item in val.value.items():
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(f"unknown key {key!r} (known: {known})", item)
        return val.value

    def seq(self, val: _Val, what: str) -> list[_Val]:
        if val.value is None:
            return []
        if not isinstance(val.value, list):
            raise self.error(f"{what} must be a list", val)
        return val.value

    def text(self, val: _Val, max_length: int, *, allow_empty: bool = False) -> str:
        value = val.value
        if isinstance(value, str):
            text = value
        elif value is not None and val.raw is not None:
            text = val.raw  # unquoted `1.10`, `42` or `yes`: keep what was written
        else:
            raise self.error("must be a text value", val)
        if allow_empty and not text:
            return text
        problem = _text_problem(text, max_length)
        if problem:
            raise self.error(problem, val)
        return text

    def integer(self, val: _Val, low: int, high: int) -> int:
        value = val.value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"must be a whole number {low}-{high} (got {val.raw!r})", val)
        if not low <= value <= high:
            raise self.error(f"must be {low}-{high} (got {value})", val)
        return value

    def tags(self, val: _Val) -> tuple[str, ...]:
        return tuple(self.text(t, MAX_TAG) for t in self.seq(val, "tags"))

    def protocol(self, val: _Val) -> str:
        text = self.text(val, 20)
        if text not in PROTOCOLS:
            known = ", ".join(PROTOCOLS)
            raise self.error(f"protocol {text!r} is not simulated (use {known})", val)
        return text

    def common(self, fields: dict[str, _Val], base: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        if "vendor" in fields:
            out["vendor"] = self.text(fields["vendor"], MAX_VENDOR)
        if "model" in fields:
            out["model"] = self.text(fields["model"], MAX_MODEL)
        if "firmware_version" in fields:
            out["firmware_version"] = self.text(fields["firmware_version"], MAX_FIRMWARE)
        if "connectors" in fields:
            out["connectors"] = self.integer(fields["connectors"], 1, MAX_CONNECTORS)
        if "tags" in fields:
            out["tags"] = self.tags(fields["tags"])
        if "protocol" in fields:
            out["protocol"] = self.protocol(fields["protocol"])
        if "firmware_update" in fields:
            val = fields["firmware_update"]
            mode = self.text(val, 20)
            if mode not in FIRMWARE_UPDATE_MODES:
                raise self.error(f"must be plain, signed or both (got {mode!r})", val)
            out["firmware_update"] = mode
        if "firmware_roots" in fields:
            out["firmware_roots"] = tuple(
                self.root(v) for v in self.seq(fields["firmware_roots"], "firmware_roots")
            )
        if "faults" in fields:
            out["faults"] = self.faults(fields["faults"])
        if "download_protocols" in fields:
            val = fields["download_protocols"]
            chosen = tuple(self.text(v, 10) for v in self.seq(val, "download_protocols"))
            if not chosen or any(p not in DOWNLOAD_PROTOCOLS for p in chosen):
                known = ", ".join(DOWNLOAD_PROTOCOLS)
                raise self.error(f"must be a non-empty list of {known}", val)
            out["download_protocols"] = tuple(dict.fromkeys(chosen))
        if "download_ca" in fields:
            out["download_ca"] = self.root(fields["download_ca"])
        if "security_profile" in fields:
            out["security_profile"] = self.integer(fields["security_profile"], 1, 3)
        if "ocpp_ca" in fields:
            val = fields["ocpp_ca"]
            entries = self.seq(val, "ocpp_ca") if isinstance(val.value, list) else [val]
            out["ocpp_ca"] = tuple(pem for v in entries for pem in self.bundle(v))
        if "organization" in fields:
            out["organization"] = self.text(fields["organization"], MAX_ORGANIZATION)
        if pair := self.key_pair(fields, "client_ca", "client_ca_key"):
            out["client_ca"] = pair
        return out

    def bundle(self, val: _Val) -> tuple[str, ...]:
        entry = val.value
        if not isinstance(entry, str) or not entry.strip():
            raise self.error("must be a path to a PEM file (or PEM text)", val)
        try:
            return read_pem_bundle(entry, self.base_dir)
        except ValueError as exc:
            raise self.error(str(exc), val) from None

    def key_pair(
        self, fields: dict[str, _Val], cert_key: str, key_key: str
    ) -> tuple[str, str] | None:
        """A certificate and its key, given side by side (``client_cert``/``client_key``)."""
        if cert_key not in fields and key_key not in fields:
            return None
        if cert_key not in fields or key_key not in fields:
            present = fields.get(cert_key) or fields[key_key]
            raise self.error(f"{cert_key} and {key_key} go together", present)
        cert, key = fields[cert_key], fields[key_key]
        for val in (cert, key):
            if not isinstance(val.value, str) or not val.value.strip():
                raise self.error("must be a path to a PEM file (or PEM text)", val)
        try:
            return read_key_pair(cert.value, key.value, self.base_dir)
        except ValueError as exc:
            raise self.error(str(exc), cert) from None

    def spec(self, where: _Val, **values: Any) -> ChargerSpec:
        """A ChargerSpec; its cross-field rules (:func:`tls_problem`) located at ``where``."""
        try:
            return ChargerSpec(**values)
        except ValueError as exc:
            raise self.error(str(exc), where) from None

    def root(self, val: _Val) -> str:
        entry = val.value
        if not isinstance(entry, str) or not entry.strip():
            raise self.error("must be a path to a PEM file (or PEM text)", val)
        try:
            return read_root(entry, self.base_dir)
        except ValueError as exc:
            raise self.error(str(exc), val) from None

    def faults(self, val: _Val) -> FaultProfile:
        values: dict[str, Any] = {}
        for name, item in self.mapping(val, set(FAULT_NAMES), "faults").items():
            value = item.value
            if name in VERSION_LISTS:
                value = tuple(self.text(v, MAX_FIRMWARE) for v in self.seq(item, name))
            elif name in CONNECTOR_LISTS:
                value = tuple(v.value for v in self.seq(item, name))
            problem = fault_problem(name, value)
            if problem:
                raise self.error(problem, item)
            values[name] = value
        return FaultProfile(**values)

    def site_ref(self, val: _Val, sites: dict[str, SiteSpec]) -> str:
        site_id = self.text(val, MAX_SITE_ID)
        if site_id not in sites:
            raise self.error(f"unknown site {site_id!r} (declare it under sites:)", val)
        return site_id

    def identity(self, val: _Val, identity: str) -> str:
        problem = identity_problem(identity)
        if problem:
            raise self.error(f"identity {identity!r} {problem}", val)
        return identity


def parse_fleet(text: str, *, source: str = "", base_dir: str | Path | None = None) -> FleetSpec:
    """Parse a fleet file's text; raises :class:`FleetFileError` and nothing else on bad input.

    ``base_dir`` anchors relative ``firmware_roots`` paths (the fleet file's directory).
    """
    root = _parse_yaml(text, source)
    b = _Builder(source, Path(base_dir) if base_dir is not None else None)
    top = b.mapping(root, _TOP_KEYS, "a fleet file")
    seed = b.text(top["seed"], 1000) if "seed" in top else DEFAULT_SEED
    base: dict[str, Any] = {
        "vendor": DEFAULT_VENDOR,
        "model": DEFAULT_MODEL,
        "firmware_version": DEFAULT_FIRMWARE,
        "connectors": DEFAULT_CONNECTORS,
        "tags": (),
        "protocol": b.protocol(top["protocol"]) if "protocol" in top else PROTOCOLS[0],
    }
    if "defaults" in top:
        base = b.common(b.mapping(top["defaults"], _COMMON_KEYS, "defaults"), base)

    sites: dict[str, SiteSpec] = {}
    for item in b.seq(top["sites"], "sites") if "sites" in top else []:
        f = b.mapping(item, _SITE_KEYS, "a site")
        if "id" not in f:
            raise b.error("a site needs an id", item)
        site_id = b.text(f["id"], MAX_SITE_ID)
        if site_id in sites:
            raise b.error(f"duplicate site id {site_id!r}", f["id"])
        tz = b.text(f["timezone"], 64) if "timezone" in f else DEFAULT_TIMEZONE
        if "timezone" in f and (problem := timezone_problem(tz)):
            raise b.error(problem, f["timezone"])
        sites[site_id] = SiteSpec(
            id=site_id,
            name=b.text(f["name"], MAX_NAME) if "name" in f else site_id,
            timezone=tz,
            region=b.text(f["region"], MAX_NAME) if "region" in f else None,
            tags=b.tags(f["tags"]) if "tags" in f else (),
        )

    chargers: list[ChargerSpec] = []
    seen: dict[str, _Val] = {}

    def add(identity: str, where: _Val, spec: ChargerSpec) -> None:
        if identity in seen:
            first = seen[identity].line
            raise b.error(f"identity {identity!r} also defined at line {first}", where)
        if len(chargers) >= MAX_CHARGERS:
            raise b.error(f"more than {MAX_CHARGERS} chargers", where)
        seen[identity] = where
        chargers.append(spec)

    for item in b.seq(top["groups"], "groups") if "groups" in top else []:
        f = b.mapping(item, _GROUP_KEYS, "a group")
        for required in ("prefix", "count"):
            if required not in f:
                raise b.error(f"a group needs {required}", item)
        prefix = b.text(f["prefix"], MAX_IDENTITY_LENGTH, allow_empty=True)
        count = b.integer(f["count"], 1, MAX_CHARGERS)
        start = b.integer(f["start"], 0, 10**12) if "start" in f else 1
        digits = b.integer(f["digits"], 1, 12) if "digits" in f else None
        if "site" in f and "sites" in f:
            raise b.error("use either site or sites, not both", f["sites"])
        spread: list[str | None] = [None]
        if "site" in f:
            spread = [b.site_ref(f["site"], sites)]
        elif "sites" in f:
            spread = [b.site_ref(s, sites) for s in b.seq(f["sites"], "sites")] or [None]
        values = b.common(f, base)
        for i, identity in enumerate(group_identities(prefix, count, start, digits)):
            b.identity(f["prefix"], identity)
            spec = b.spec(
                item,
                identity=identity,
                auth_key=derive_key(seed, identity),
                serial_number=derive_serial(seed, identity),
                site_id=spread[i % len(spread)],
                **values,
            )
            add(identity, item, spec)

    for item in b.seq(top["chargers"], "chargers") if "chargers" in top else []:
        f = b.mapping(item, _CHARGER_KEYS, "a charger")
        if "identity" not in f:
            raise b.error("a charger needs an identity", item)
        identity = b.identity(f["identity"], b.text(f["identity"], MAX_IDENTITY_LENGTH))
        auth_key = derive_key(seed, identity)
        if "auth_key" in f:
            auth_key = b.text(f["auth_key"], 40)
            if problem := key_problem(auth_key):
                raise b.error(f"auth_key {problem}", f["auth_key"])
        own = b.key_pair(f, "client_cert", "client_key")
        spec = b.spec(
            item,
            identity=identity,
            auth_key=auth_key,
            serial_number=(
                b.text(f["serial_number"], MAX_SERIAL)
                if "serial_number" in f
                else derive_serial(seed, identity)
            ),
            site_id=b.site_ref(f["site"], sites) if "site" in f else None,
            client_cert=own[0] if own else None,
            client_key=own[1] if own else None,
            **b.common(f, base),
        )
        add(identity, item, spec)

    if not chargers:
        raise FleetFileError("the fleet has no chargers (add groups: or chargers:)", source=source)
    return FleetSpec(seed=seed, sites=tuple(sites.values()), chargers=tuple(chargers))


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and parse a fleet file; unreadable files are a :class:`FleetFileError` too."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FleetFileError(f"cannot read the file: {exc.strerror or exc}", source=name) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FleetFileError(f"not UTF-8 text (byte {exc.start})", source=name) from None
    return parse_fleet(text, source=name, base_dir=Path(path).parent)


def dump_fleet(fleet: FleetSpec) -> str:
    """The fleet as an explicit file (one entry per charger) that parses back to ``fleet``.

    Keys equal to the seed-derived ones are left out: the file then holds no secrets.
    """
    doc: dict[str, Any] = {"seed": fleet.seed}
    if fleet.sites:
        doc["sites"] = [site_document(s) for s in fleet.sites]
    doc["chargers"] = [_charger_doc(fleet.seed, c) for c in fleet.chargers]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def site_document(site: SiteSpec) -> dict[str, Any]:
    """A site as the fleet file and the REST API both spell it."""
    out: dict[str, Any] = {"id": site.id, "name": site.name, "timezone": site.timezone}
    if site.region is not None:
        out["region"] = site.region
    if site.tags:
        out["tags"] = list(site.tags)
    return out


def _charger_doc(seed: str, c: ChargerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"identity": c.identity}
    if c.auth_key != derive_key(seed, c.identity):
        out["auth_key"] = c.auth_key
    out |= {
        "vendor": c.vendor,
        "model": c.model,
        "serial_number": c.serial_number,
        "firmware_version": c.firmware_version,
        "connectors": c.connectors,
        "protocol": c.protocol,
    }
    if c.site_id is not None:
        out["site"] = c.site_id
    out["tags"] = list(c.tags)
    if c.firmware_update != "both":
        out["firmware_update"] = c.firmware_update
    if c.firmware_roots:
        out["firmware_roots"] = list(c.firmware_roots)  # inline PEM: the file stands alone
    if faults := c.faults.active():
        out["faults"] = faults
    if c.download_protocols != DEFAULT_DOWNLOAD_PROTOCOLS:
        out["download_protocols"] = list(c.download_protocols)
    if c.download_ca is not None:
        out["download_ca"] = c.download_ca
    if c.security_profile is not None:
        out["security_profile"] = c.security_profile
    if c.ocpp_ca:
        out["ocpp_ca"] = list(c.ocpp_ca)
    if c.organization:
        out["organization"] = c.organization
    # Inline PEM, keys included: a fleet with its own certificates is a secret file.
    if c.client_cert is not None and c.client_key is not None:
        out["client_cert"], out["client_key"] = c.client_cert, c.client_key
    if c.client_ca is not None:
        out["client_ca"], out["client_ca_key"] = c.client_ca
    return out


def site_ids(chargers: Iterable[ChargerSpec]) -> set[str]:
    return {c.site_id for c in chargers if c.site_id is not None}
