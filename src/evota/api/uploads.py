"""Files chargers upload (diagnostics, logs): the upload endpoint and reading them back.

The upload endpoint is the ``location`` evota puts in GetDiagnostics / GetLog. Chargers have
no operator credentials, so it is guarded by the signed token in the path
(:mod:`evota.control.uploads`), not by login: ``PUT {location}/{filename}`` with the raw file
as the body, or ``POST {location}`` as multipart/form-data (the first part with a file name is
the file). Bodies are streamed to disk and cut off at ``EVOTA_UPLOAD_MAX_BYTES`` (413, nothing
kept). One URL stores one file: uploading again with it replaces that file (a retry).
Operators list and download the files with ``fleet.read`` on the charger.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header
from sqlalchemy import select
from starlette.requests import ClientDisconnect

from evota.api.deps import Principal, RuntimeDep, authorize_charger, require, scope_filter
from evota.api.multipart import DRAIN_BYTES, Body, MultipartError, MultipartParser, PartStart
from evota.api.pages import fetch_page
from evota.api.params import PRINTABLE, ChargerId, Limit, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.audit.log import Actor
from evota.control import uploads
from evota.files import safe_filename
from evota.runtime import Runtime
from evota.signed_tokens import TokenError, TokenExpired, TokenInvalid
from evota.store.models import Charger, ChargerFile

router = APIRouter(tags=["files"])

_MAX_OTHER_PARTS_BYTES: Final = 64 * 1024  # text parts next to the file (ignored)
_TOKEN_PROBLEMS: Final = {
    TokenExpired: "the upload URL has expired: request the file again",
    TokenInvalid: "the upload URL is not valid",
}


Token = Annotated[
    str, Path(min_length=1, max_length=512, pattern=PRINTABLE, description="the upload token")
]
FileName = Annotated[
    str, Path(min_length=1, max_length=255, pattern=PRINTABLE, description="the file's name")
]
BINARY: Final = {"type": "string", "format": "binary"}
_UPLOAD = problems(400, 403, 413, 415, 422)


class FileOut(BaseModel):
    id: str
    charger_id: str
    kind: str
    request_id: int | None
    filename: str
    sha256: str
    size: int
    created_at: datetime


def _grant(rt: Runtime, token: str) -> uploads.UploadGrant:
    try:
        return rt.uploads.check(token)
    except TokenError as exc:
        detail = _TOKEN_PROBLEMS.get(type(exc), "the upload URL is not valid")
        raise Problem(403, "Upload refused", detail, "token", reason=exc.reason) from None


def _too_large(limit: int) -> Problem:
    return Problem(413, "File too large", f"the file exceeds the limit of {limit} bytes", "file")


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read (and drop) what the charger still sends, so it gets to read our answer."""
    seen = 0
    with contextlib.suppress(Exception):
        async for chunk in stream:
            seen += len(chunk)
            if seen > DRAIN_BYTES:
                return


def _default_name(grant: uploads.UploadGrant) -> str:
    return f"{grant.kind}-{grant.charger_id}.log"


async def _stored(
    rt: Runtime, request: Request, grant: uploads.UploadGrant, row: dict[str, Any]
) -> FileOut:
    """Audit the upload as the charger's act (the middleware would call it anonymous)."""
    request.state.audited = True
    await rt.audit.record(
        Actor(grant.charger_id, ("charger",), getattr(request.state, "request_id", None)),
        "file.uploaded",
        "ok",
        target=row["id"],
        chargers=[grant.charger_id],
        detail={
            k: row[k]
            for k in ("kind", "request_id", "filename", "size", "sha256", "replaced")
            if k in row
        },
    )
    return FileOut(**row)


def _declared_too_large(request: Request, limit: int) -> bool:
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) > limit


@router.put(
    f"{uploads.PREFIX}/{{token}}/{{filename}}",
    status_code=201,
    response_model=FileOut,
    responses=_UPLOAD,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": BINARY}},
        }
    },
)
async def upload_put(token: Token, filename: FileName, request: Request, rt: RuntimeDep) -> FileOut:
    """A charger uploads a file as the raw request body (its name in the path)."""
    grant = _grant(rt, token)
    limit = rt.settings.upload_max_bytes
    stream = request.stream()
    if _declared_too_large(request, limit):
        await _drain(stream)
        raise _too_large(limit)
    name = safe_filename(filename, _default_name(grant))
    try:
        row = await rt.uploads.store(grant, name, stream)
    except uploads.FileTooLarge:
        await _drain(stream)
        raise _too_large(limit) from None
    except ClientDisconnect:
        raise Problem(400, "Upload interrupted", "the charger disconnected", "file") from None
    return await _stored(rt, request, grant, row)


@router.post(
    f"{uploads.PREFIX}/{{token}}",
    status_code=201,
    response_model=FileOut,
    responses=_UPLOAD,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_post(token: Token, request: Request, rt: RuntimeDep) -> FileOut:
    """A charger uploads a file as multipart/form-data (the first part with a filename)."""
    grant = _grant(rt, token)
    limit = rt.settings.upload_max_bytes
    stream = request.stream()
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not 1 <= len(boundary) <= 70:
        await _drain(stream)
        raise Problem(
            415,
            "Unsupported media type",
            "POST the file as multipart/form-data with a boundary, or PUT it to "
            "{location}/{filename}",
            "Content-Type",
        )
    if _declared_too_large(request, limit + _MAX_OTHER_PARTS_BYTES):
        await _drain(stream)
        raise _too_large(limit)
    body = Body(stream, MultipartParser(boundary))
    row: dict[str, Any] | None = None
    other = 0
    try:
        while (event := await body.next()) is not None:
            if not isinstance(event, PartStart):
                if isinstance(event, bytes):
                    other += len(event)
                    if other > _MAX_OTHER_PARTS_BYTES:
                        raise uploads.FileTooLarge(limit)
                continue
            if event.filename is not None:
                if row is not None:
                    raise Problem(422, "Invalid upload", "send exactly one file part", "file")
                name = safe_filename(event.filename, _default_name(grant))
                row = await rt.uploads.store(grant, name, body.file_data())
    except uploads.FileTooLarge:
        await body.drain()
        raise _too_large(limit) from None
    except MultipartError as exc:
        await body.drain()
        raise Problem(400, "Malformed multipart body", str(exc), "(body)") from None
    except ClientDisconnect:
        raise Problem(400, "Upload interrupted", "the charger disconnected", "file") from None
    if row is None:
        raise Problem(422, "Invalid upload", "the body holds no file part", "file")
    return await _stored(rt, request, grant, row)


@router.get(
    "/api/v1/files",
    response_model=Page[FileOut],
    responses=AUTHENTICATED,
)
async def list_all_files(
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    charger_id: str | None = text("files of this charger", 48),
    kind: Literal["diagnostics", "log"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Files uploaded by the chargers the caller can see, newest first."""
    query = select(ChargerFile).where(
        ChargerFile.charger_id.in_(scope_filter(who)(select(Charger.id)))
    )
    if charger_id is not None:
        query = query.where(ChargerFile.charger_id == charger_id)
    if kind is not None:
        query = query.where(ChargerFile.kind == kind)
    total, rows = await fetch_page(
        rt.engine, query, (ChargerFile.created_at.desc(), ChargerFile.id), limit, offset
    )
    items = [FileOut.model_validate(dict(r._mapping)) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/api/v1/chargers/{charger_id}/files",
    response_model=Page[FileOut],
    responses={**AUTHENTICATED, **problems(404)},
)
async def list_files(
    charger_id: ChargerId,
    rt: RuntimeDep,
    who: Principal = require("fleet.read"),
    kind: Literal["diagnostics", "log"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Files the charger uploaded, newest first."""
    await authorize_charger(rt, who, "fleet.read", charger_id)
    query = select(ChargerFile).where(ChargerFile.charger_id == charger_id)
    if kind is not None:
        query = query.where(ChargerFile.kind == kind)
    total, rows = await fetch_page(
        rt.engine, query, (ChargerFile.created_at.desc(), ChargerFile.id), limit, offset
    )
    items = [FileOut.model_validate(dict(r._mapping)) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/api/v1/files/{file_id}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file, byte for byte",
            "content": {"application/octet-stream": {"schema": BINARY}},
        },
        **AUTHENTICATED,
        **problems(404, 410),
    },
)
async def download_file(
    file_id: Uuid, rt: RuntimeDep, who: Principal = require("fleet.read")
) -> Response:
    """Download an uploaded file, byte for byte as the charger sent it."""
    unknown = Problem(404, "Unknown file", f"no file with id {file_id!r}", "file_id")
    try:
        uuid.UUID(file_id)
    except ValueError:
        raise unknown from None
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(ChargerFile).where(ChargerFile.id == file_id))).first()
    if row is None:
        raise unknown
    try:
        await authorize_charger(rt, who, "fleet.read", row.charger_id)
    except Problem as exc:
        if exc.status == 404:
            raise unknown from None
        raise
    if rt.uploads.remote is not None:  # the S3 store: streamed from the bucket
        stream = await rt.uploads.open_remote(row.id)
        if stream is None:
            raise Problem(410, "File gone", "the stored file was removed from the store", "file_id")
        name = quote(row.filename)
        disposition = (
            f'attachment; filename="{row.filename}"'
            if name == row.filename
            else f"attachment; filename*=utf-8''{name}"
        )
        return StreamingResponse(
            stream,
            media_type="application/octet-stream",
            headers={
                "X-Content-SHA256": row.sha256,
                "Content-Disposition": disposition,
                "Content-Length": str(row.size),
            },
        )
    path = rt.uploads.path_of(row.id)
    if not path.is_file():
        raise Problem(410, "File gone", "the stored file was removed from disk", "file_id")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=row.filename,
        headers={"X-Content-SHA256": row.sha256},
    )
