"""The firmware repository: images and their metadata, vendor policy, trusted roots.

Database functions take an ``AsyncEngine`` and plain values and raise the typed errors below
(the error's class is its kind; the REST layer maps kinds to problem responses). The
lifecycle table and the compatibility check are pure and live in
:mod:`evota.firmware.lifecycle`, so the API, the update path and campaigns decide the same way
without the database; the root-certificate check is pure too. Vendors compare
case-insensitively everywhere (chargers report them with inconsistent case); models,
hardware revisions and versions compare exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, literal, or_, select
from sqlalchemy import column as sql_column
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evota.firmware import signing
from evota.firmware.lifecycle import UPLOAD_STATES, FirmwareState, transition_problem
from evota.store.models import Charger, Firmware, FirmwareVendor, TrustedRoot

__all__ = [
    "AmbiguousFirmware",
    "Conflict",
    "FirmwareRecord",
    "InvalidInput",
    "NewFirmware",
    "NotFound",
    "RepositoryError",
    "Source",
    "TrustedRootRecord",
    "VendorPolicy",
    "add_firmware",
    "add_trusted_root",
    "allows_unsigned",
    "chargers_running",
    "delete_trusted_root",
    "find_firmware",
    "get_firmware",
    "inspect_root_certificate",
    "list_firmware",
    "list_trusted_roots",
    "list_vendor_policies",
    "set_state",
    "set_vendor_policy",
    "sha256_in_use",
    "trusted_root_pems",
    "version_exists",
]

# --- errors ----------------------------------------------------------------------------------


class RepositoryError(Exception):
    """Base class: ``detail`` is one sentence for the user, ``field`` the input it is about."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(RepositoryError):
    """No such firmware or trusted root."""


class Conflict(RepositoryError):
    """A duplicate, or a lifecycle transition the table forbids."""


class InvalidInput(RepositoryError):
    """A value that can never be accepted, e.g. a root certificate that is not a CA."""


class AmbiguousFirmware(Conflict):
    """A version matches images of several vendors: the caller must use the id."""


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where an imported image came from (uploads have none): the URL without its query,
    the host named and the address connected to, the TLS server certificate's SHA-256
    (hex, of the DER; None over plain http), when and by whom it was fetched."""

    url: str
    host: str
    address: str
    certificate_sha256: str | None
    fetched_at: dt.datetime
    fetched_by: str | None


def _source(m: Any) -> Source | None:
    if m["source_url"] is None:
        return None
    return Source(
        url=m["source_url"],
        host=m["source_host"] or "",
        address=m["source_address"] or "",
        certificate_sha256=m["source_certificate_sha256"],
        fetched_at=m["fetched_at"],
        fetched_by=m["fetched_by"],
    )


@dataclass(frozen=True, slots=True)
class FirmwareRecord:
    """One row of ``firmware``; lists become tuples so the record is really immutable."""

    id: str
    vendor: str
    version: str
    models: tuple[str, ...]
    hardware_revisions: tuple[str, ...]
    sha256: str
    size: int
    filename: str | None
    state: str
    state_reason: str | None
    signature: str | None
    signing_certificate: str | None
    release_notes: str
    min_current_version: str | None
    supersedes: tuple[str, ...]
    created_at: dt.datetime
    updated_at: dt.datetime
    source: Source | None = None

    @classmethod
    def from_row(cls, row: Any) -> FirmwareRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            vendor=m["vendor"],
            version=m["version"],
            models=tuple(m["models"] or ()),
            hardware_revisions=tuple(m["hardware_revisions"] or ()),
            sha256=m["sha256"],
            size=m["size"],
            filename=m["filename"],
            state=m["state"],
            state_reason=m["state_reason"],
            signature=m["signature"],
            signing_certificate=m["signing_certificate"],
            release_notes=m["release_notes"] or "",
            min_current_version=m["min_current_version"],
            supersedes=tuple(m["supersedes"] or ()),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            source=_source(m),
        )

    @property
    def signed(self) -> bool:
        return self.signature is not None


@dataclass(frozen=True, slots=True)
class NewFirmware:
    """What an upload adds: validated metadata plus the stored blob's digest and size."""

    vendor: str
    version: str
    sha256: str
    size: int
    models: Sequence[str] = ()
    hardware_revisions: Sequence[str] = ()
    filename: str | None = None
    state: str = FirmwareState.DRAFT
    signature: str | None = None
    signing_certificate: str | None = None
    release_notes: str = ""
    min_current_version: str | None = None
    supersedes: Sequence[str] = ()
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class VendorPolicy:
    vendor: str
    allow_unsigned: bool
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TrustedRootRecord:
    id: int
    vendor: str
    certificate: str
    fingerprint: str
    subject: str
    not_after: dt.datetime
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RootInfo:
    """What is stored about a root certificate besides its PEM."""

    fingerprint: str
    subject: str
    not_after: dt.datetime


# --- root certificates, pure ----------------------------------------------------------------


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # any failure means: not a valid self-signature
        return False
    return True


def inspect_root_certificate(pem: str, at: dt.datetime) -> RootInfo:
    """Check that ``pem`` can serve as a trusted root at ``at``; raise ``InvalidInput``.

    A root must be one PEM X.509 certificate within the OCPP size limit, a CA
    (basicConstraints CA=true) or a self-signed signing certificate (pinned: it trusts only
    itself), and not expired; otherwise every signature it "vouches" for would later fail
    verification for a reason nobody sees at configuration time.
    """
    field = "certificate"
    if len(pem) > signing.MAX_CERTIFICATE_PEM_CHARS:
        raise InvalidInput(
            f"certificate is {len(pem)} chars, over the limit of "
            f"{signing.MAX_CERTIFICATE_PEM_CHARS}",
            field,
        )
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, UnicodeError, x509.InvalidVersion):  # InvalidVersion: no ValueError
        raise InvalidInput("certificate is not a PEM X.509 certificate", field) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except ValueError:  # malformed extensions
        raise InvalidInput("certificate has malformed extensions", field) from None
    if not is_ca and not _self_signed(cert):
        raise InvalidInput(
            "certificate is not a CA certificate (basicConstraints CA=true) "
            "or a self-signed signing certificate",
            field,
        )
    not_after = cert.not_valid_after_utc
    if not_after <= at:
        raise InvalidInput(f"certificate expired at {not_after.isoformat()}", field)
    der = cert.public_bytes(serialization.Encoding.DER)
    return RootInfo(
        fingerprint=hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string()[:500],
        not_after=not_after,
    )


# --- firmware --------------------------------------------------------------------------------


def _same_vendor(column: Any, vendor: str) -> ColumnElement[bool]:
    return func.lower(column) == vendor.lower()


def _list_contains(conn: AsyncConnection, column: Any, value: str) -> ColumnElement[bool]:
    """``value`` is an element of a JSON list column (dialect-specific, both indexed-free)."""
    if conn.dialect.name == "postgresql":
        return column.cast(JSONB).contains([value])  # type: ignore[no-any-return]
    each = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(sql_column("value") == value))


async def get_firmware(engine: AsyncEngine, firmware_id: str) -> FirmwareRecord | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(Firmware).where(Firmware.id == firmware_id))).first()
    return FirmwareRecord.from_row(row) if row is not None else None


async def find_firmware(
    engine: AsyncEngine, id_or_version: str, vendor: str | None
) -> FirmwareRecord | None:
    """By id, else by exact version (of ``vendor`` if given, case-insensitively).

    Raises ``AmbiguousFirmware`` when no vendor is given and several vendors have that version.
    """
    found = await get_firmware(engine, id_or_version)
    if found is not None:
        return found
    query = select(Firmware).where(Firmware.version == id_or_version)
    if vendor is not None:
        query = query.where(_same_vendor(Firmware.vendor, vendor))
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(Firmware.created_at).limit(2))).all()
    if len(rows) > 1:
        raise AmbiguousFirmware(
            f"version {id_or_version!r} exists for several vendors: use the firmware id",
            "firmware",
        )
    return FirmwareRecord.from_row(rows[0]) if rows else None


async def list_firmware(
    engine: AsyncEngine,
    *,
    vendor: str | None = None,
    model: str | None = None,
    state: str | None = None,
    version: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[FirmwareRecord], int]:
    """One page, newest first, and the total. ``model`` also matches images for any model."""
    async with engine.connect() as conn:
        query = select(Firmware)
        if vendor is not None:
            query = query.where(_same_vendor(Firmware.vendor, vendor))
        if state is not None:
            query = query.where(Firmware.state == state)
        if version is not None:
            query = query.where(Firmware.version == version)
        if model is not None:
            any_model = func.json_array_length(Firmware.models) == 0
            query = query.where(or_(_list_contains(conn, Firmware.models, model), any_model))
        total = (
            await conn.execute(select(func.count()).select_from(query.subquery()))
        ).scalar_one()
        rows = (
            await conn.execute(
                query.order_by(Firmware.created_at.desc(), Firmware.id).limit(limit).offset(offset)
            )
        ).all()
    return [FirmwareRecord.from_row(r) for r in rows], int(total)


async def version_exists(engine: AsyncEngine, vendor: str, version: str) -> bool:
    """Whether the vendor (any case) already has this exact version."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Firmware.id).where(
                    _same_vendor(Firmware.vendor, vendor), Firmware.version == version
                )
            )
        ).first()
    return row is not None


async def sha256_in_use(engine: AsyncEngine, sha256: str) -> bool:
    """Whether any image (in any state) is backed by this blob, so it must not be deleted."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(Firmware.id).where(Firmware.sha256 == sha256))).first()
    return row is not None


async def add_firmware(engine: AsyncEngine, new: NewFirmware, now: dt.datetime) -> FirmwareRecord:
    """Insert an image; ``Conflict`` (field ``version``) if the vendor already has it."""
    if new.state not in UPLOAD_STATES:
        raise InvalidInput(f"state must be one of {', '.join(UPLOAD_STATES)}", "state")
    duplicate = Conflict(f"{new.vendor} firmware {new.version} already exists", "version")
    if await version_exists(engine, new.vendor, new.version):
        raise duplicate
    firmware_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": firmware_id,
        "vendor": new.vendor,
        "version": new.version,
        "models": list(new.models),
        "hardware_revisions": list(new.hardware_revisions),
        "sha256": new.sha256,
        "size": new.size,
        "filename": new.filename,
        "state": new.state,
        "state_reason": None,
        "signature": new.signature,
        "signing_certificate": new.signing_certificate,
        "release_notes": new.release_notes,
        "min_current_version": new.min_current_version,
        "supersedes": list(new.supersedes),
        "created_at": now,
        "updated_at": now,
    }
    if new.source is not None:
        values |= {
            "source_url": new.source.url,
            "source_host": new.source.host,
            "source_address": new.source.address,
            "source_certificate_sha256": new.source.certificate_sha256,
            "fetched_at": new.source.fetched_at,
            "fetched_by": new.source.fetched_by,
        }
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Firmware).values(**values))
    except IntegrityError:
        raise duplicate from None
    record = await get_firmware(engine, firmware_id)
    assert record is not None
    return record


async def set_state(
    engine: AsyncEngine,
    firmware_id: str,
    target: str,
    reason: str | None,
    now: dt.datetime,
) -> FirmwareRecord:
    """Move an image through the lifecycle; ``NotFound``, or ``Conflict`` (field ``state``).

    The update is conditional on the state read, so two concurrent transitions cannot both
    pass the table check against a stale state.
    """
    async with engine.begin() as conn:
        current = (
            await conn.execute(select(Firmware.state).where(Firmware.id == firmware_id))
        ).scalar_one_or_none()
        if current is None:
            raise NotFound(f"no firmware with id {firmware_id!r}", "id")
        problem = transition_problem(current, target)
        if problem:
            raise Conflict(problem, "state")
        result = await conn.execute(
            sql_update(Firmware)
            .where(Firmware.id == firmware_id, Firmware.state == current)
            .values(state=target, state_reason=reason, updated_at=now)
        )
        if result.rowcount != 1:
            raise Conflict("the firmware state changed concurrently; try again", "state")
    record = await get_firmware(engine, firmware_id)
    assert record is not None
    return record


async def charger_ids_running(
    engine: AsyncEngine, firmware: FirmwareRecord, *, limit: int = 1000, offset: int = 0
) -> list[str]:
    """Which chargers run the image (after a revocation: the ones to update or watch)."""
    async with engine.connect() as conn:
        ids = (
            await conn.execute(
                select(Charger.id)
                .where(
                    _same_vendor(Charger.vendor, firmware.vendor),
                    Charger.firmware_version == firmware.version,
                )
                .order_by(Charger.id)
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
        return list(ids)


async def chargers_running(engine: AsyncEngine, firmware: FirmwareRecord) -> int:
    """Chargers of the image's vendor (any case) that report exactly its version."""
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(Charger)
                .where(
                    _same_vendor(Charger.vendor, firmware.vendor),
                    Charger.firmware_version == firmware.version,
                )
            )
        ).scalar_one()
    return int(count)


# --- vendor policy ---------------------------------------------------------------------------


def _policy(row: Any) -> VendorPolicy:
    return VendorPolicy(row.vendor, bool(row.allow_unsigned), row.updated_at)


async def allows_unsigned(engine: AsyncEngine, vendor: str) -> bool:
    """A vendor without a policy row refuses unsigned images."""
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                select(FirmwareVendor.allow_unsigned).where(
                    _same_vendor(FirmwareVendor.vendor, vendor)
                )
            )
        ).first()
    return bool(value and value[0])


async def set_vendor_policy(
    engine: AsyncEngine, vendor: str, allow_unsigned: bool, now: dt.datetime
) -> VendorPolicy:
    """Create or update the vendor's policy (an existing row of another case is updated)."""
    async with engine.begin() as conn:
        existing = (
            await conn.execute(
                select(FirmwareVendor.vendor).where(_same_vendor(FirmwareVendor.vendor, vendor))
            )
        ).scalar_one_or_none()
        if existing is None:
            await conn.execute(
                insert(FirmwareVendor).values(
                    vendor=vendor, allow_unsigned=allow_unsigned, updated_at=now
                )
            )
            existing = vendor
        else:
            await conn.execute(
                sql_update(FirmwareVendor)
                .where(FirmwareVendor.vendor == existing)
                .values(allow_unsigned=allow_unsigned, updated_at=now)
            )
    return VendorPolicy(existing, allow_unsigned, now)


async def list_vendor_policies(engine: AsyncEngine) -> list[VendorPolicy]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(FirmwareVendor).order_by(FirmwareVendor.vendor))).all()
    return [_policy(r) for r in rows]


# --- trusted roots ---------------------------------------------------------------------------


def _root(row: Any) -> TrustedRootRecord:
    return TrustedRootRecord(
        id=row.id,
        vendor=row.vendor,
        certificate=row.certificate,
        fingerprint=row.fingerprint,
        subject=row.subject,
        not_after=row.not_after,
        created_at=row.created_at,
    )


async def add_trusted_root(
    engine: AsyncEngine, vendor: str, certificate_pem: str, now: dt.datetime
) -> TrustedRootRecord:
    """Trust a CA for a vendor's signing certificates; ``InvalidInput`` or ``Conflict``."""
    info = inspect_root_certificate(certificate_pem, now)
    duplicate = Conflict(f"this certificate is already a trusted root for {vendor}", "certificate")
    async with engine.begin() as conn:
        taken = (
            await conn.execute(
                select(TrustedRoot.id).where(
                    and_(
                        _same_vendor(TrustedRoot.vendor, vendor),
                        TrustedRoot.fingerprint == info.fingerprint,
                    )
                )
            )
        ).first()
        if taken is not None:
            raise duplicate
        try:
            root_id = (
                await conn.execute(
                    insert(TrustedRoot)
                    .values(
                        vendor=vendor,
                        certificate=certificate_pem,
                        fingerprint=info.fingerprint,
                        subject=info.subject,
                        not_after=info.not_after,
                        created_at=now,
                    )
                    .returning(TrustedRoot.id)
                )
            ).scalar_one()
        except IntegrityError:
            raise duplicate from None
    return TrustedRootRecord(
        root_id, vendor, certificate_pem, info.fingerprint, info.subject, info.not_after, now
    )


async def list_trusted_roots(
    engine: AsyncEngine, vendor: str | None = None
) -> list[TrustedRootRecord]:
    query = select(TrustedRoot).order_by(TrustedRoot.vendor, TrustedRoot.id)
    if vendor is not None:
        query = query.where(_same_vendor(TrustedRoot.vendor, vendor))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_root(r) for r in rows]


async def trusted_root_pems(engine: AsyncEngine, vendor: str) -> list[bytes]:
    """The vendor's roots as PEM bytes, for ``signing.verify_certificate``."""
    return [r.certificate.encode("utf-8") for r in await list_trusted_roots(engine, vendor)]


async def delete_trusted_root(engine: AsyncEngine, root_id: int) -> bool:
    """Stop trusting a root (images already accepted stay); True if it existed."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(TrustedRoot).where(TrustedRoot.id == root_id))
    return bool(result.rowcount)
