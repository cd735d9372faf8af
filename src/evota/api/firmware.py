"""The firmware repository's routes: upload, list, show, lifecycle, vendor policy, trusted roots.

An upload is read as it arrives (:mod:`evota.api.multipart`): the file part streams into the
content-addressed store, which hashes it on the way, and the text fields are collected
within fixed limits, in any order. :mod:`evota.firmware.intake` then judges the image (the
trust policy) and adds it; its refusals, like the repository's, become problem responses
here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from evota.api import leader_calls
from evota.api.approvals import AWAITING, awaiting
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require
from evota.api.firmware_schemas import (
    FeedCheckOut,
    FeedIn,
    FeedOut,
    FeedPage,
    FirmwareDetail,
    FirmwareOut,
    FirmwarePage,
    ImportIn,
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
from evota.api.multipart import (
    MAX_PARTS,
    Body,
    MultipartError,
    MultipartParser,
    NotFormData,
    PartStart,
    PartTooLarge,
    form_boundary,
)
from evota.api.params import BigLimit, IntId, Limit, Name, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.files import safe_filename
from evota.firmware import feeds, import_policy, importer, intake, lifecycle, state_changes
from evota.firmware import repository as repo
from evota.firmware.intake import IntakeError, Refusal
from evota.firmware.storage import StoredBlob, StoreUnavailable, TooLarge
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1/firmware", tags=["firmware"], responses=AUTHENTICATED)

_MAX_FIELD_BYTES: Final = 64 * 1024  # one text field (release notes are the longest)
_MAX_TEXT_BYTES: Final = 1024 * 1024  # all text fields together
_BODY_OVERHEAD: Final = _MAX_TEXT_BYTES + MAX_PARTS * 1024  # body size beyond the file

_REPEATABLE: Final = frozenset({"models", "hardware_revisions", "supersedes"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- receiving an upload ---------------------------------------------------------------------


@dataclasses.dataclass
class _Upload:
    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    blob: StoredBlob | None = None
    filename: str | None = None


def _boundary(content_type: str | None) -> bytes:
    try:
        return form_boundary(content_type)
    except NotFormData as exc:
        detail = str(exc) if exc.no_boundary else "upload firmware as multipart/form-data"
        raise Problem(415, "Unsupported media type", detail, "Content-Type") from None


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "Firmware too large", f"the file exceeds the limit of {limit} bytes", "file"
    )


async def _text(body: Body, name: str, budget: int) -> str:
    """One text field, within its own limit and what is left of all fields' budget."""
    try:
        data = await body.read_part(min(_MAX_FIELD_BYTES, budget))
    except PartTooLarge as exc:
        if exc.size > budget:
            raise Problem(413, "Form fields too large", "", "(body)") from None
        raise Problem(422, "Invalid field", f"longer than {_MAX_FIELD_BYTES} bytes", name) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(422, "Invalid field", f"{name} is not valid UTF-8", name) from None


async def _receive(request: Request, rt: Runtime, boundary: bytes, upload: _Upload) -> None:
    """Stream the file part into the store and collect the text fields, in any order."""
    limit = rt.settings.firmware_max_bytes
    body = Body(request.stream(), MultipartParser(boundary))
    text_budget = _MAX_TEXT_BYTES
    try:
        while (event := await body.next()) is not None:
            if not isinstance(event, PartStart):  # pragma: no cover - data follows a start
                continue
            if event.name == "file":
                if upload.blob is not None:
                    raise Problem(422, "Invalid upload", "send exactly one file part", "file")
                upload.filename = safe_filename(event.filename)
                upload.blob = await rt.firmware_store.put(body.file_data(), max_bytes=limit)
            else:
                value = await _text(body, event.name, text_budget)
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


_REFUSALS: Final[dict[Refusal, tuple[int, str]]] = {
    Refusal.EMPTY_FILE: (422, "Empty file"),
    Refusal.EXISTS: (409, "Firmware exists"),
    Refusal.UNSIGNED: (422, "Unsigned firmware"),
    Refusal.INCOMPLETE_SIGNATURE: (422, "Invalid field"),
    Refusal.INVALID_SIGNATURE: (422, "Invalid signature"),
    Refusal.INVALID_CERTIFICATE: (422, "Invalid certificate"),
    Refusal.UNTRUSTED_CERTIFICATE: (422, "Untrusted certificate"),
    Refusal.RACED: (409, "Upload raced"),
}


async def _accept(rt: Runtime, upload: _Upload) -> repo.FirmwareRecord:
    blob = upload.blob
    if blob is None:
        raise Problem(422, "Missing file", "send the image as a part named file", "file")
    submission = intake.Submission(**_fields(upload).model_dump(), filename=upload.filename)
    try:
        return await intake.accept(rt.engine, rt.firmware_store, submission, blob, rt.clock.now())
    except IntakeError as exc:
        status, title = _REFUSALS[exc.refusal]
        raise Problem(status, title, exc.detail, exc.field) from None
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
    data["source"] = dataclasses.asdict(record.source) if record.source else None
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
            with contextlib.suppress(StoreUnavailable):  # the first failure is the answer
                await intake.discard(rt.engine, rt.firmware_store, upload.blob)
        raise
    note(request, "firmware", record.id, None, _audited(record))
    return await _detail(rt, record)


_FETCH_PROBLEMS: Final[dict[importer.FetchProblem, tuple[int, str]]] = {
    importer.FetchProblem.SCHEME: (422, "Scheme not allowed"),
    importer.FetchProblem.URL: (422, "Invalid URL"),
    importer.FetchProblem.ADDRESS: (422, "Address not allowed"),
    importer.FetchProblem.REDIRECTS: (422, "Too many redirects"),
    importer.FetchProblem.TOO_LARGE: (413, "Firmware too large"),
    importer.FetchProblem.TIMEOUT: (422, "Fetch timed out"),
    importer.FetchProblem.STATUS: (422, "Fetch failed"),
    importer.FetchProblem.UNREACHABLE: (422, "Fetch failed"),
    importer.FetchProblem.ENCODING: (422, "Fetch failed"),
    importer.FetchProblem.SHA256: (422, "Digest mismatch"),
    importer.FetchProblem.BUSY: (429, "Too many imports"),
    importer.FetchProblem.UNAVAILABLE: (503, "Imports unavailable"),  # cluster: Redis down
}


@router.post(
    "/import",
    status_code=201,
    response_model=FirmwareDetail,
    responses=problems(409, 413, 429, 503),
)
async def import_firmware(
    body: ImportIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("firmware.write"),
) -> FirmwareDetail:
    """Fetch an image from a vendor's https URL and add it like an upload.

    Private, loopback, link-local and other non-public addresses are refused (SSRF), also
    after a redirect; the signature is verified against the vendor's trusted roots as for an
    upload; the image records where it came from (``source``). Fetch failures are 4xx
    problems naming ``url`` (or ``sha256`` for a digest that does not match).
    """
    fields = body.model_dump(exclude={"url", "sha256", "filename"})
    submission = intake.Submission(**fields, filename=safe_filename(body.filename))
    try:
        record = await importer.import_firmware(
            rt.engine,
            rt.firmware_store,
            submission,
            body.url.strip(),
            rt.settings.firmware_fetch_policy(),
            rt.clock.now,
            by=who.name,
            expected_sha256=body.sha256,
            slots=rt.shared_limits.imports if rt.shared_limits is not None else None,
        )
    except importer.FetchError as exc:
        status, title = _FETCH_PROBLEMS[exc.problem]
        retry = {"Retry-After": "30"} if status == 503 else None
        raise Problem(status, title, exc.detail, exc.field, headers=retry) from None
    except IntakeError as exc:
        status, title = _REFUSALS[exc.refusal]
        raise Problem(status, title, exc.detail, exc.field) from None
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
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


def _feed_out(feed: feeds.FeedRecord) -> FeedOut:
    data = dataclasses.asdict(feed)
    data["url"] = import_policy.record_url(feed.url)
    data["last_result"] = feed.last_result or None
    return FeedOut.model_validate(data)


@router.get("/feeds", response_model=FeedPage)
async def list_feeds(rt: RuntimeDep, _who: Principal = require("firmware.read")) -> FeedPage:
    """Vendors' release feeds, with each one's last check."""
    items = [_feed_out(f) for f in await feeds.list_feeds(rt.engine)]
    return FeedPage(items=items, total=len(items))


@router.post("/feeds", status_code=201, response_model=FeedOut, responses=problems(409))
async def add_feed(
    body: FeedIn, request: Request, rt: RuntimeDep, who: Principal = require("firmware.write")
) -> FeedOut:
    """Watch a vendor's release feed: new versions are imported as drafts when it is
    checked (``POST …/check``, or every ``EVOTA_FIRMWARE_FEED_INTERVAL_HOURS``)."""
    try:
        feed = await feeds.add_feed(
            rt.engine,
            body.vendor,
            body.url.strip(),
            who.name,
            rt.clock.now(),
            allow_http=rt.settings.firmware_import_allow_http,
        )
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
    out = _feed_out(feed)
    note(request, "firmware_feed", str(feed.id), None, {"vendor": out.vendor, "url": out.url})
    return out


@router.delete(
    "/feeds/{feed_id}", status_code=204, response_class=Response, responses=problems(404)
)
async def delete_feed(
    feed_id: IntId, request: Request, rt: RuntimeDep, _who: Principal = require("firmware.write")
) -> Response:
    """Stop watching a feed; the images it imported stay."""
    if not await feeds.delete_feed(rt.engine, feed_id):
        raise Problem(404, "Not found", f"no feed with id {feed_id}", "id")
    note(request, "firmware_feed", str(feed_id))
    return Response(status_code=204)


@router.post("/feeds/{feed_id}/check", response_model=FeedCheckOut, responses=problems(404))
async def check_feed(
    feed_id: IntId,
    request: Request,
    rt: RuntimeDep,
    _who: Principal = require("firmware.write"),
    retry: bool = False,
) -> FeedCheckOut:
    """Check a feed now: import (as drafts) at most ``EVOTA_FIRMWARE_FEED_MAX_NEW`` versions
    the repository lacks. ``retry=true`` tries entries refused before again."""
    note(request, "firmware_feed", str(feed_id))
    try:
        result = await leader_calls.call(rt, "firmware_feeds.check", feed_id=feed_id, retry=retry)
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
    return FeedCheckOut.model_validate(result)


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
    try:
        record = await state_changes.change_state(
            rt.engine, firmware_id, target, reason, rt.clock.now(), rt.on_firmware_revoked
        )
    except repo.RepositoryError as exc:
        raise _problem(exc) from None
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
    data = {k: v for k, v in _out(record).items() if k not in skip}
    if record.source is not None:  # when and by whom are the entry's own time and actor
        source = record.source
        data["source"] = {
            "url": source.url,
            "host": source.host,
            "address": source.address,
            "certificate_sha256": source.certificate_sha256,
        }
    return data


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
    if body.state == lifecycle.FirmwareState.REVOKED:
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
    reason = body.reason if body else None
    return await _noted(request, rt, firmware_id, lifecycle.FirmwareState.DEPRECATED, reason)


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
        if record.state == lifecycle.FirmwareState.REVOKED:
            raise Problem(409, "Already revoked", f"{firmware_id} is revoked", "firmware_id")
        return await awaiting(
            rt,
            who,
            "firmware.revoke",
            f"revoke {record.vendor} {record.version} ({firmware_id})",
            {"firmware_id": firmware_id, "reason": body.reason},
            body.reason,
        )
    return await _noted(request, rt, firmware_id, lifecycle.FirmwareState.REVOKED, body.reason)


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
