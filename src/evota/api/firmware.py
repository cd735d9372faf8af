"""The firmware repository: upload, list, show, lifecycle, vendor policy, trusted roots.

Uploads are parsed here, chunk by chunk, rather than with FastAPI's ``UploadFile``/``Form``:
Starlette spools the whole file to a temp file before the handler runs and the store would
then copy it a second time. Here the request body goes through python-multipart's streaming
parser straight into the content-addressed store, which hashes it on the
way, so an image of any size costs one write and a bounded amount of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final

import python_multipart
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from evota.api.approvals import AWAITING, awaiting
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require
from evota.api.firmware_schemas import (
    FirmwareDetail,
    FirmwareOut,
    FirmwarePage,
    OptionalReasonIn,
    ReasonIn,
    State,
    StateIn,
    TrustedRootIn,
    TrustedRootOut,
    TrustedRootPage,
    UploadFields,
    VendorPolicyIn,
    VendorPolicyOut,
    VendorPolicyPage,
)
from evota.api.params import BigLimit, IntId, Limit, Name, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.audit.log import Actor
from evota.firmware import lifecycle
from evota.firmware import repository as repo
from evota.firmware import signing
from evota.firmware.storage import LocalFirmwareStore, StoredBlob, TooLarge
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1/firmware", tags=["firmware"], responses=AUTHENTICATED)

_MAX_FIELD_BYTES: Final = 64 * 1024  # one text field (release notes are the longest)
_MAX_TEXT_BYTES: Final = 1024 * 1024  # all text fields together
_MAX_PARTS: Final = 256
_MAX_HEADER_BYTES: Final = 16 * 1024  # the header block of one part
_BODY_OVERHEAD: Final = _MAX_TEXT_BYTES + _MAX_PARTS * 1024  # body size beyond the file
_DRAIN_BYTES: Final = 64 * 1024 * 1024
"""After refusing mid-body, read (and drop) up to this much more of it: a server that closes
with unread request data resets the connection, and the client never sees the problem."""

_REPEATABLE: Final = frozenset({"models", "hardware_revisions", "supersedes"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


# --- multipart/form-data, sans I/O ------------------------------------------------------------


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (the message says where)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _PartStart:
    name: str
    filename: str | None


class _PartEnd:
    pass


_END: Final = _PartEnd()
_Event = _PartStart | bytes | _PartEnd


class MultipartParser:
    """Turns body chunks into events: a part's start, its data in pieces, its end.

    A thin adapter over python-multipart's streaming parser (which buffers nothing of a
    part's data), adding the limits evota wants: parts per body, header bytes per part.
    """

    def __init__(self, boundary: bytes, *, max_parts: int = _MAX_PARTS) -> None:
        self._events: list[_Event] = []
        self._parts = 0
        self._max_parts = max_parts
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._ended = False
        callbacks: Any = {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": lambda: self._events.append(_END),
            "on_header_field": lambda d, a, b: self._header(self._header_name, d[a:b]),
            "on_header_value": lambda d, a, b: self._header(self._header_value, d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        self._parser = python_multipart.MultipartParser(
            boundary, callbacks, max_header_count=16, max_header_size=_MAX_HEADER_BYTES
        )

    def feed(self, data: bytes) -> list[_Event]:
        try:
            self._parser.write(data)
        except python_multipart.exceptions.MultipartParseError as exc:
            raise MultipartError(str(exc) or "malformed multipart body") from None
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """The body has ended: complain unless it ended with the closing boundary."""
        if not self._ended:
            if self._parts == 0:
                raise MultipartError("the body holds no multipart parts (wrong boundary?)")
            raise MultipartError("the body ended before the closing boundary")

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise MultipartError(f"more than {self._max_parts} parts")
        self._headers = {}
        self._header_bytes = 0

    def _data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(bytes(data[start:end]))

    def _header(self, into: bytearray, chunk: bytes) -> None:
        self._header_bytes += len(chunk)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise MultipartError("a part's headers are too long")
        into += chunk

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = _text(bytes(self._header_value)).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        self._events.append(_part_start(self._headers))

    def _end(self) -> None:
        self._ended = True


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _part_start(headers: dict[str, str]) -> _PartStart:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise MultipartError("a part has no Content-Disposition header")
    kind, raw_params = parse_options_header(disposition.encode("utf-8"))
    if kind.lower() != b"form-data":
        raise MultipartError("a part is not form-data")
    params = {k.decode("latin-1").lower(): _text(v) for k, v in raw_params.items()}
    part_name = params.get("name")
    if not part_name:
        raise MultipartError("a part has no name")
    return _PartStart(part_name, params.get("filename"))  # the file name is only a label


def _safe_filename(raw: str | None) -> str | None:
    """The basename only, no control characters, at most 255 characters (or None)."""
    if raw is None:
        return None
    name = _CONTROL.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if name in ("", ".", ".."):
        return None
    return name[:255]


# --- receiving an upload ---------------------------------------------------------------------


class _Body:
    """Pulls request chunks through the parser on demand, one event at a time."""

    def __init__(self, stream: AsyncIterator[bytes], parser: MultipartParser) -> None:
        self._stream = stream
        self._parser = parser
        self._events: deque[_Event] = deque()
        self._ended = False

    async def next(self) -> _Event | None:
        while not self._events:
            if self._ended:
                return None
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._ended = True
                self._parser.close()
                continue
            if chunk:
                self._events.extend(self._parser.feed(chunk))
        return self._events.popleft()

    async def file_data(self) -> AsyncIterator[bytes]:
        """The current part's data, for ``FirmwareStore.put``."""
        while True:
            event = await self.next()
            if isinstance(event, bytes):
                yield event
            elif event is _END:
                return
            else:  # pragma: no cover - the parser always ends a part before the body ends
                raise MultipartError("the file part did not end")

    async def text(self, name: str, budget: int) -> str:
        data = bytearray()
        while True:
            event = await self.next()
            if isinstance(event, bytes):
                data += event
                if len(data) > min(_MAX_FIELD_BYTES, budget):
                    if len(data) > budget:
                        raise Problem(413, "Form fields too large", "", "(body)")
                    raise Problem(
                        422, "Invalid field", f"longer than {_MAX_FIELD_BYTES} bytes", name
                    )
            elif event is _END:
                break
            else:  # pragma: no cover
                raise MultipartError(f"the part {name!r} did not end")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(422, "Invalid field", f"{name} is not valid UTF-8", name) from None

    async def drain(self) -> None:
        """Read what the client still sends (bounded), so it can read our answer."""
        if self._ended:
            return
        seen = 0
        with contextlib.suppress(Exception):
            async for chunk in self._stream:
                seen += len(chunk)
                if seen > _DRAIN_BYTES:
                    return
        self._ended = True


@dataclasses.dataclass
class _Upload:
    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    blob: StoredBlob | None = None
    filename: str | None = None


def _boundary(content_type: str | None) -> bytes:
    kind, _, params = (content_type or "").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise Problem(
            415,
            "Unsupported media type",
            "upload firmware as multipart/form-data",
            "Content-Type",
        )
    match = _BOUNDARY.search(";" + params)
    boundary = (match.group(1) or match.group(2)) if match else None
    if not boundary or not boundary.isascii():
        raise Problem(
            415,
            "Unsupported media type",
            "multipart/form-data needs a boundary parameter of 1 to 70 ASCII characters",
            "Content-Type",
        )
    return boundary.encode("ascii")


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "Firmware too large", f"the file exceeds the limit of {limit} bytes", "file"
    )


async def _receive(request: Request, rt: Runtime, boundary: bytes, upload: _Upload) -> None:
    """Stream the file part into the store and collect the text fields, in any order."""
    limit = rt.settings.firmware_max_bytes
    body = _Body(request.stream(), MultipartParser(boundary))
    text_budget = _MAX_TEXT_BYTES
    try:
        while (event := await body.next()) is not None:
            if not isinstance(event, _PartStart):  # pragma: no cover - data follows a start
                continue
            if event.name == "file":
                if upload.blob is not None:
                    raise Problem(422, "Invalid upload", "send exactly one file part", "file")
                upload.filename = _safe_filename(event.filename)
                upload.blob = await rt.firmware_store.put(body.file_data(), max_bytes=limit)
            else:
                value = await body.text(event.name, text_budget)
                text_budget -= len(value.encode("utf-8"))
                upload.fields.setdefault(event.name, []).append(value)
    except ClientDisconnect:
        raise Problem(400, "Upload interrupted", "the client disconnected", "file") from None
    except TooLarge:
        await body.drain()
        raise _too_large(limit) from None
    except MultipartError as exc:
        await body.drain()
        raise Problem(400, "Malformed multipart body", str(exc), "(body)") from None
    except Problem:
        await body.drain()
        raise


_blob_locks: weakref.WeakKeyDictionary[LocalFirmwareStore, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _blob_lock(rt: Runtime) -> asyncio.Lock:
    """Serialises "is this blob still referenced? then delete it" against new references."""
    lock = _blob_locks.get(rt.firmware_store)
    if lock is None:
        lock = _blob_locks[rt.firmware_store] = asyncio.Lock()
    return lock


async def _discard(rt: Runtime, blob: StoredBlob) -> None:
    """Remove a blob this refused upload created, unless an image references it by now."""
    if not blob.created:
        return
    async with _blob_lock(rt):
        if not await repo.sha256_in_use(rt.engine, blob.sha256):
            await rt.firmware_store.delete(blob.sha256)


def _fields(upload: _Upload) -> UploadFields:
    data: dict[str, Any] = {}
    for name, values in upload.fields.items():
        if name in _REPEATABLE:
            data[name] = values
        elif len(values) > 1:
            raise Problem(422, "Invalid field", f"{name} is given more than once", name)
        else:
            data[name] = values[0]
    try:
        return UploadFields.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc") or ("(body)",)
        field = str(loc[0])
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "unknown field"
        raise Problem(422, "Invalid field", f"{field}: {message}", field) from None


async def _check_signature(rt: Runtime, fields: UploadFields, blob: StoredBlob) -> None:
    vendor = fields.vendor
    if fields.signature is None and fields.signing_certificate is None:
        if not await repo.allows_unsigned(rt.engine, vendor):
            raise Problem(
                422,
                "Unsigned firmware",
                f"unsigned firmware is refused for vendor {vendor}: send signature and "
                "signing_certificate, or allow unsigned images with "
                f"PUT /api/v1/firmware/vendors/{vendor}",
                "signature",
            )
        return
    if fields.signature is None:
        raise Problem(422, "Invalid field", "signature is required with a certificate", "signature")
    if fields.signing_certificate is None:
        raise Problem(
            422,
            "Invalid field",
            "signing_certificate is required with a signature",
            "signing_certificate",
        )
    cert_pem = fields.signing_certificate.encode("utf-8")
    try:
        signing.decode_signature(fields.signature)
    except signing.SignatureError as exc:
        raise Problem(422, "Invalid signature", exc.reason, "signature") from None
    try:
        signing.public_key_pem(cert_pem)
    except signing.CertificateError as exc:
        raise Problem(422, "Invalid certificate", exc.reason, "signing_certificate") from None
    roots = await repo.trusted_root_pems(rt.engine, vendor)
    if not roots:
        raise Problem(
            422,
            "Untrusted certificate",
            f"no trusted roots are configured for vendor {vendor}: add one with "
            "POST /api/v1/firmware/trusted-roots",
            "signing_certificate",
        )
    now = rt.clock.now()
    try:
        await asyncio.to_thread(signing.verify_certificate, cert_pem, roots, now)
    except signing.CertificateError as exc:
        raise Problem(
            422,
            "Untrusted certificate",
            f"certificate is not issued by a trusted root for vendor {vendor}: {exc.reason}",
            "signing_certificate",
        ) from None
    path = rt.firmware_store.path_of(blob.sha256)
    if path is None:
        raise Problem(409, "Upload raced", "the stored file vanished; upload again", "file")
    try:
        await asyncio.to_thread(signing.verify_file, path, fields.signature, cert_pem, at=now)
    except signing.SignatureError as exc:
        raise Problem(
            422,
            "Invalid signature",
            f"signature does not match the file: {exc.reason}",
            "signature",
        ) from None


async def _accept(rt: Runtime, upload: _Upload) -> repo.FirmwareRecord:
    blob = upload.blob
    if blob is None:
        raise Problem(422, "Missing file", "send the image as a part named file", "file")
    fields = _fields(upload)
    if blob.size == 0:
        raise Problem(422, "Empty file", "the firmware file is empty", "file")
    if await repo.version_exists(rt.engine, fields.vendor, fields.version):
        raise Problem(
            409, "Firmware exists", f"{fields.vendor} firmware {fields.version} exists", "version"
        )
    await _check_signature(rt, fields, blob)
    new = repo.NewFirmware(
        vendor=fields.vendor,
        version=fields.version,
        sha256=blob.sha256,
        size=blob.size,
        models=fields.models,
        hardware_revisions=fields.hardware_revisions,
        filename=upload.filename,
        state=fields.state,
        signature="".join(fields.signature.split()) if fields.signature else None,
        signing_certificate=fields.signing_certificate,
        release_notes=fields.release_notes,
        min_current_version=fields.min_current_version,
        supersedes=fields.supersedes,
    )
    async with _blob_lock(rt):
        # A concurrent refused upload of the same bytes may have deleted the blob after our
        # put found it already stored; never insert an image without its file.
        if not await rt.firmware_store.exists(blob.sha256):
            raise Problem(409, "Upload raced", "the stored file vanished; upload again", "file")
        try:
            return await repo.add_firmware(rt.engine, new, rt.clock.now())
        except repo.RepositoryError as exc:
            raise _problem(exc) from None


_UPLOAD_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "vendor", "version", "models"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "vendor": {"type": "string", "maxLength": 50},
                        "version": {"type": "string", "maxLength": 50},
                        "models": {"type": "array", "items": {"type": "string"}},
                        "hardware_revisions": {"type": "array", "items": {"type": "string"}},
                        "signature": {"type": "string", "description": "Base64, <= 800 chars"},
                        "signing_certificate": {"type": "string", "description": "PEM"},
                        "release_notes": {"type": "string"},
                        "state": {"type": "string", "enum": list(lifecycle.UPLOAD_STATES)},
                        "min_current_version": {"type": "string"},
                        "supersedes": {"type": "array", "items": {"type": "string"}},
                    },
                }
            }
        },
    }
}


# --- routes ----------------------------------------------------------------------------------


_PROBLEM_TITLES: Final = {
    repo.NotFound: (404, "Not found"),
    repo.AmbiguousFirmware: (409, "Ambiguous firmware"),
    repo.Conflict: (409, "Conflict"),
    repo.InvalidInput: (422, "Invalid field"),
}


def _problem(exc: repo.RepositoryError) -> Problem:
    for kind, (status, title) in _PROBLEM_TITLES.items():
        if isinstance(exc, kind):
            return Problem(status, title, exc.detail, exc.field)
    return Problem(400, "Bad request", exc.detail, exc.field)  # pragma: no cover


def _out(record: repo.FirmwareRecord) -> dict[str, Any]:
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    data["signed"] = record.signed
    return data


async def _detail(rt: Runtime, record: repo.FirmwareRecord) -> FirmwareDetail:
    running = await repo.chargers_running(rt.engine, record)
    return FirmwareDetail.model_validate({**_out(record), "chargers_running": running})


@router.post(
    "",
    status_code=201,
    response_model=FirmwareDetail,
    openapi_extra=_UPLOAD_DOC,
    responses=problems(400, 409, 413, 415),
)
async def upload_firmware(
    request: Request, rt: RuntimeDep, _who: Principal = require("firmware.write")
) -> FirmwareDetail:
    """Upload an image (multipart/form-data, streamed to disk) with its metadata.

    The file is hashed (SHA-256) while it is stored; a signature is verified against the
    vendor's trusted roots, and unsigned images are refused unless the vendor allows them.
    """
    boundary = _boundary(request.headers.get("content-type"))
    limit = rt.settings.firmware_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _BODY_OVERHEAD:
        raise _too_large(limit)  # before reading: Expect: 100-continue clients send nothing
    upload = _Upload()
    try:
        await _receive(request, rt, boundary, upload)
        record = await _accept(rt, upload)
    except BaseException:
        if upload.blob is not None:
            await _discard(rt, upload.blob)
        raise
    note(request, "firmware", record.id, None, _audited(record))
    return await _detail(rt, record)


@router.get("", response_model=FirmwarePage)
async def list_firmware(
    rt: RuntimeDep,
    _who: Principal = require("firmware.read"),
    vendor: str | None = text("case-insensitive", 50),
    model: str | None = text("images for this model (or for any model)", 50),
    state: State | None = None,
    version: str | None = text("exact version", 50),
    limit: Limit = 100,
    offset: Offset = 0,
) -> FirmwarePage:
    """Images, newest first."""
    records, total = await repo.list_firmware(
        rt.engine,
        vendor=vendor,
        model=model,
        state=state,
        version=version,
        limit=limit,
        offset=offset,
    )
    items = [FirmwareOut.model_validate(_out(r)) for r in records]
    return FirmwarePage(items=items, total=total, limit=limit, offset=offset)


# /vendors and /trusted-roots come before /{firmware_id}, which would otherwise capture them.


def _vendor_path(vendor: str) -> str:
    vendor = vendor.strip()
    if not 1 <= len(vendor) <= 50 or _CONTROL.search(vendor):
        raise Problem(422, "Invalid vendor", "1 to 50 printable characters", "vendor")
    return vendor


@router.get("/vendors", response_model=VendorPolicyPage)
async def list_vendor_policies(
    rt: RuntimeDep, _who: Principal = require("firmware.read")
) -> VendorPolicyPage:
    """Per-vendor policy; vendors not listed refuse unsigned images."""
    policies = await repo.list_vendor_policies(rt.engine)
    items = [VendorPolicyOut.model_validate(dataclasses.asdict(p)) for p in policies]
    return VendorPolicyPage(items=items, total=len(items))


@router.put("/vendors/{vendor}", response_model=VendorPolicyOut)
async def set_vendor_policy(
    vendor: Name,
    body: VendorPolicyIn,
    request: Request,
    rt: RuntimeDep,
    _who: Principal = require("firmware.trust"),
) -> VendorPolicyOut:
    """Allow (or refuse again) unsigned images of this vendor."""
    old = {p.vendor: p.allow_unsigned for p in await repo.list_vendor_policies(rt.engine)}.get(
        _vendor_path(vendor), False
    )
    policy = await repo.set_vendor_policy(
        rt.engine, _vendor_path(vendor), body.allow_unsigned, rt.clock.now()
    )
    note(
        request,
        "vendor_policy",
        policy.vendor,
        {"allow_unsigned": old},
        {"allow_unsigned": policy.allow_unsigned},
    )
    return VendorPolicyOut.model_validate(dataclasses.asdict(policy))


@router.get("/trusted-roots", response_model=TrustedRootPage)
async def list_trusted_roots(
    rt: RuntimeDep,
    _who: Principal = require("firmware.read"),
    vendor: str | None = text("case-insensitive", 50),
) -> TrustedRootPage:
    """Trusted roots, by vendor."""
    roots = await repo.list_trusted_roots(rt.engine, vendor)
    items = [TrustedRootOut.model_validate(dataclasses.asdict(r)) for r in roots]
    return TrustedRootPage(items=items, total=len(items))


@router.post(
    "/trusted-roots", status_code=201, response_model=TrustedRootOut, responses=problems(409)
)
async def add_trusted_root(
    body: TrustedRootIn,
    request: Request,
    rt: RuntimeDep,
    _who: Principal = require("firmware.trust"),
) -> TrustedRootOut:
    """Trust a CA certificate to issue the vendor's firmware signing certificates."""
    note(request, "trusted_root", None, vendor=body.vendor)
    try:
        root = await repo.add_trusted_root(rt.engine, body.vendor, body.certificate, rt.clock.now())
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
    after = {k: v for k, v in dataclasses.asdict(root).items() if k != "certificate"}
    note(request, "trusted_root", str(root.id), None, after)
    return TrustedRootOut.model_validate(dataclasses.asdict(root))


@router.delete(
    "/trusted-roots/{root_id}", status_code=204, response_class=Response, responses=problems(404)
)
async def delete_trusted_root(
    root_id: IntId, rt: RuntimeDep, _who: Principal = require("firmware.trust")
) -> Response:
    """Stop trusting a root; images accepted with it stay in the repository."""
    if not await repo.delete_trusted_root(rt.engine, root_id):
        raise Problem(404, "Not found", f"no trusted root with id {root_id}", "id")
    return Response(status_code=204)


async def _get(rt: Runtime, firmware_id: str) -> repo.FirmwareRecord:
    record = await repo.get_firmware(rt.engine, firmware_id)
    if record is None:
        raise Problem(404, "Unknown firmware", f"no firmware with id {firmware_id!r}", "id")
    return record


@router.get("/{firmware_id}", response_model=FirmwareDetail, responses=problems(404))
async def show_firmware(
    firmware_id: Uuid, rt: RuntimeDep, _who: Principal = require("firmware.read")
) -> FirmwareDetail:
    """One image, with how many chargers report running it."""
    return await _detail(rt, await _get(rt, firmware_id))


async def _transition(
    rt: Runtime, firmware_id: str, target: str, reason: str | None
) -> FirmwareDetail:
    if target == "revoked" and not reason:
        raise Problem(422, "Invalid field", "a reason is required to revoke", "reason")
    try:
        record = await repo.set_state(rt.engine, firmware_id, target, reason, rt.clock.now())
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
    if target == "revoked":
        await rt.on_firmware_revoked(firmware_id)
    return await _detail(rt, record)


async def _noted(
    request: Request, rt: Runtime, firmware_id: str, target: str, reason: str | None
) -> FirmwareDetail:
    """``_transition`` with the state change in the request's audit entry."""
    old = await _get(rt, firmware_id)
    out = await _transition(rt, firmware_id, target, reason)
    before = {"state": old.state, "state_reason": old.state_reason}
    note(request, "firmware", firmware_id, before, {"state": out.state, "state_reason": reason})
    return out


def _audited(record: repo.FirmwareRecord) -> dict[str, Any]:
    """An image as its audit entry shows it (no signature or certificate blobs)."""
    skip = ("signature", "signing_certificate", "release_notes", "created_at", "updated_at")
    return {k: v for k, v in _out(record).items() if k not in skip}


_CHANGE = problems(404, 409)


@router.post("/{firmware_id}/state", response_model=FirmwareDetail, responses=_CHANGE)
async def change_state(
    firmware_id: Uuid,
    body: StateIn,
    request: Request,
    rt: RuntimeDep,
    _who: Principal = require("firmware.write"),
) -> FirmwareDetail:
    """Move an image through its lifecycle (see docs/firmware.md for the allowed moves).

    Revoking has its own route, ``POST /firmware/{id}/revoke``, which waits for a second
    operator: one path per action, so four eyes cannot be sidestepped here (422).
    """
    if body.state == "revoked":
        raise Problem(
            422,
            "Use the revoke route",
            f"revoke with POST /api/v1/firmware/{firmware_id}/revoke (it may need a second "
            "operator's approval)",
            "state",
        )
    return await _noted(request, rt, firmware_id, body.state, body.reason)


@router.post("/{firmware_id}/deprecate", response_model=FirmwareDetail, responses=_CHANGE)
async def deprecate(
    firmware_id: Uuid,
    request: Request,
    rt: RuntimeDep,
    _who: Principal = require("firmware.write"),
    body: OptionalReasonIn | None = None,
) -> FirmwareDetail:
    """A released image that should no longer be chosen for new updates."""
    return await _noted(request, rt, firmware_id, "deprecated", body.reason if body else None)


@router.post(
    "/{firmware_id}/revoke", response_model=FirmwareDetail, responses={**AWAITING, **_CHANGE}
)
async def revoke(
    firmware_id: Uuid,
    body: ReasonIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("firmware.write"),
) -> Any:
    """Withdraw an image for good: downloads stop and its pending jobs are cancelled.

    Waits for a second operator (202) when ``firmware.revoke`` needs approval (the default).
    """
    if rt.approvals.required("firmware.revoke"):
        record = await _get(rt, firmware_id)
        if record.state == "revoked":
            raise Problem(409, "Already revoked", f"{firmware_id} is revoked", "firmware_id")
        return await awaiting(
            rt,
            who,
            "firmware.revoke",
            f"revoke {record.vendor} {record.version} ({firmware_id})",
            {"firmware_id": firmware_id, "reason": body.reason},
            body.reason,
        )
    return await _noted(request, rt, firmware_id, "revoked", body.reason)


def register_approvals(rt: Runtime) -> None:
    async def execute(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        await _transition(rt, payload["firmware_id"], "revoked", payload["reason"])
        return {"firmware_id": payload["firmware_id"], "revoked": True}

    rt.approvals.register("firmware.revoke", execute)


@router.get("/{firmware_id}/chargers", response_model=Page[str], responses=problems(404))
async def chargers_running_image(
    firmware_id: Uuid,
    rt: RuntimeDep,
    _who: Principal = require("firmware.read"),
    limit: BigLimit = 1000,
    offset: Offset = 0,
) -> dict[str, Any]:
    """The chargers that report this image's version (e.g. the ones a revocation leaves)."""
    record = await _get(rt, firmware_id)
    ids = await repo.charger_ids_running(rt.engine, record, limit=limit, offset=offset)
    total = await repo.chargers_running(rt.engine, record)
    return {"items": ids, "total": total, "limit": limit, "offset": offset}
