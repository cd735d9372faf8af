"""Id tokens: ``/api/v1/id-tokens``, the token store chargers' Authorize and transactions are
answered from (docs/id-tokens.md), its CSV import, and pushing it to chargers' local lists.

Every change reloads the store's in-memory copy before the answer, so the next Authorize
sees it; every state-changing call leaves its audit entry (the middleware's, with the token
and the changed fields; a sync also one ``command.*`` entry per command sent).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import String, cast, func, select
from sqlalchemy.exc import IntegrityError

from evota.api import leader_calls
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, authorize_chargers, charger_places, require
from evota.api.pages import fetch_page
from evota.api.params import AwareInstant, Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Identity, Page, SiteId
from evota.fleet import token_store
from evota.runtime import Runtime
from evota.store.jsonlist import json_list_has
from evota.store.models import IdToken, Site

router = APIRouter(prefix="/api/v1/id-tokens", tags=["id-tokens"], responses=AUTHENTICATED)

TOKEN_PATTERN = r"^[A-Za-z0-9._:@*+=\-]+$"
TokenValue = Annotated[str, StringConstraints(min_length=1, max_length=36, pattern=TOKEN_PATTERN)]
TokenPath = Annotated[
    str,
    Path(min_length=1, max_length=36, pattern=TOKEN_PATTERN, description="the id token"),
]
Status = Literal["Accepted", "Blocked", "Expired", "Invalid"]
TokenType = Literal[
    "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"
]
Sites = Annotated[list[SiteId], Field(max_length=100)]
#: A CSV import is one transaction; beyond this many rows split the file.
MAX_IMPORT_ROWS = 50_000
MAX_IMPORT_BYTES = 8 * 1024 * 1024
CSV_COLUMNS = ("id_token", "status", "type", "expires_at", "parent_id", "sites")


class IdTokenIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_token": "04A2B3C4D5E6F7",
                    "status": "Accepted",
                    "type": "ISO14443",
                    "expires_at": "2027-12-31T23:59:59Z",
                    "parent_id": "FLEET-ACME",
                    "sites": ["berlin-hbf"],
                }
            ]
        },
    )
    id_token: TokenValue
    status: Status = "Accepted"
    type: TokenType | None = Field(None, description="2.0.1 idToken type; none: any type")
    expires_at: AwareInstant | None = None
    parent_id: TokenValue | None = Field(None, description="group (parentIdTag/groupIdToken)")
    sites: Sites = Field(default_factory=list, description="only at these sites; empty: all")


class IdTokenPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "Blocked"}]}
    )
    status: Status | SkipJsonSchema[None] = None
    type: TokenType | None = None
    expires_at: AwareInstant | None = None
    parent_id: TokenValue | None = None
    sites: Sites | SkipJsonSchema[None] = None


class IdTokenOut(BaseModel):
    id_token: str
    status: str
    type: str | None
    expires_at: datetime | None
    parent_id: str | None
    sites: list[str]
    created_at: datetime
    updated_at: datetime


class RowError(BaseModel):
    row: int = Field(description="line in the file (the header is line 1)")
    field: str
    message: str


class ImportOut(BaseModel):
    created: int
    updated: int


class SyncIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"charger_ids": ["CP-1"], "full": False}]}
    )
    charger_ids: list[Identity] = Field(min_length=1, max_length=1000)
    full: bool = Field(False, description="send the whole list even when a difference would do")
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class SyncItem(BaseModel):
    charger_id: str
    status: str = Field(
        description="the charger's SendLocalList answer, unchanged, NotSupported or error:…"
    )
    update_type: str | None
    version: int | None
    entries: int
    message: str | None


class SyncOut(BaseModel):
    results: list[SyncItem]


def _out(row: Any) -> IdTokenOut:
    return IdTokenOut.model_validate({**row._mapping, "sites": list(row.sites or ())})


async def _sites_must_exist(rt: Runtime, sites: set[str], field: str = "sites") -> None:
    if not sites:
        return
    async with rt.engine.connect() as conn:
        known = set(
            (await conn.execute(select(Site.id).where(Site.id.in_(sorted(sites))))).scalars()
        )
    missing = sorted(sites - known)
    if missing:
        raise Problem(422, "Unknown site", f"no site with id {missing[0]!r}", field)


async def _load(rt: Runtime, id_token: str) -> IdTokenOut:
    row = await token_store.get(rt.engine, id_token)
    if row is None:
        raise Problem(404, "Unknown id token", f"no id token {id_token!r}", "id_token")
    return _out(row)


def _audited(token: IdTokenOut) -> dict[str, Any]:
    """A token's fields for an audit entry's before/after (not its bookkeeping times)."""
    return token.model_dump(mode="json", exclude={"created_at", "updated_at"})


async def _changed(rt: Runtime, who: Principal) -> None:
    """The next Authorize sees the change; chargers holding a list get the differences."""
    await rt.fleet.tokens.reload()
    await leader_calls.tell(
        rt, "local_lists.tokens_changed", actor=leader_calls.actor_json(who.actor)
    )


@router.get("", response_model=Page[IdTokenOut])
async def list_id_tokens(
    rt: RuntimeDep,
    _who: Principal = require("idtoken.read"),
    status: Status | None = None,
    type: TokenType | None = None,
    site: str | None = text("tokens allowed at this site (restricted to it or unrestricted)", 64),
    parent_id: str | None = text("exact group id", 36),
    q: str | None = text("id token contains (case-insensitive)", 36),
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[IdTokenOut]:
    """Id tokens by value."""
    query = select(IdToken)
    if status:
        query = query.where(IdToken.status == status)
    if type:
        query = query.where(IdToken.type == type)
    if parent_id:
        query = query.where(IdToken.parent_id == parent_id)
    if site:  # exact membership (no LIKE: "_" and "%" would match other sites)
        query = query.where(
            (cast(IdToken.sites, String) == "[]") | json_list_has(IdToken.sites, site)
        )
    if q:
        query = query.where(func.lower(IdToken.id_token).contains(q.lower(), autoescape=True))
    total, rows = await fetch_page(rt.engine, query, IdToken.id_token, limit, offset)
    return Page(items=[_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.post("", status_code=201, response_model=IdTokenOut, responses=problems(409))
async def create_id_token(
    body: IdTokenIn, request: Request, rt: RuntimeDep, who: Principal = require("idtoken.write")
) -> IdTokenOut:
    """Add a token; chargers' Authorize sees it at once (local lists at the next sync)."""
    await _sites_must_exist(rt, set(body.sites))
    values = body.model_dump()
    note(request, "id_token", body.id_token, None, body.model_dump(mode="json"))
    try:
        await token_store.create(rt.engine, rt.clock.now(), values)
    except IntegrityError:
        raise Problem(
            409, "Id token exists", f"id token {body.id_token!r} exists", "id_token"
        ) from None
    await _changed(rt, who)
    return await _load(rt, body.id_token)


# Declared before "/{id_token}" so that "import" and "sync" are not read as token values.
@router.post("/import", response_model=ImportOut, responses=problems(413, 415))
async def import_id_tokens(
    request: Request, rt: RuntimeDep, who: Principal = require("idtoken.write")
) -> ImportOut:
    """Create or replace tokens from a CSV file (``Content-Type: text/csv``, UTF-8).

    Columns (header line required): ``id_token`` and optionally ``status``, ``type``,
    ``expires_at`` (ISO 8601 with offset), ``parent_id``, ``sites`` (site ids separated by
    ``;``). All or nothing: one bad row and nothing is imported; the 422 problem lists every
    bad row (``errors``: line, field, message)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/csv", "text/plain"):
        raise Problem(415, "Unsupported media type", "send the file as text/csv", "content-type")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_IMPORT_BYTES:
            raise Problem(413, "File too large", f"at most {MAX_IMPORT_BYTES} bytes", "(body)")
    try:
        text_ = bytes(raw).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Problem(422, "Invalid file", "the file is not UTF-8", "(body)") from None
    items, errors = parse_csv(text_)
    if not errors:
        sites = token_store.sites_in(items)
        async with rt.engine.connect() as conn:
            known = set(
                (await conn.execute(select(Site.id).where(Site.id.in_(sorted(sites))))).scalars()
            )
        for row, item in enumerate(items, start=2):
            for site in item["sites"]:
                if site not in known:
                    errors.append(RowError(row=row, field="sites", message=f"no site {site!r}"))
    if errors:
        note(request, "id_token", None, rows=len(items), errors=len(errors))
        raise Problem(
            422,
            "Invalid rows",
            f"{len(errors)} bad row(s), nothing imported: "
            + "; ".join(f"line {e.row}, {e.field}: {e.message}" for e in errors[:20])
            + ("; …" if len(errors) > 20 else ""),
            errors[0].field,
            errors=[e.model_dump() for e in errors[:1000]],
        )
    created, updated = await token_store.upsert_many(rt.engine, rt.clock.now(), items)
    note(request, "id_token", None, rows=len(items), created=created, updated=updated)
    await _changed(rt, who)
    return ImportOut(created=created, updated=updated)


def parse_csv(content: str) -> tuple[list[dict[str, Any]], list[RowError]]:
    """The rows as token values, and every problem by line and field."""
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = reader.fieldnames or []
    errors: list[RowError] = []
    if "id_token" not in header:
        return [], [
            RowError(row=1, field="id_token", message="the header needs an id_token column")
        ]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        return [], [
            RowError(
                row=1, field=unknown[0], message=f"unknown column; known: {', '.join(CSV_COLUMNS)}"
            )
        ]
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if len(items) >= MAX_IMPORT_ROWS:
            errors.append(
                RowError(row=line, field="(file)", message=f"more than {MAX_IMPORT_ROWS} rows")
            )
            break
        if None in row:
            errors.append(RowError(row=line, field="(row)", message="more values than columns"))
            continue
        values: dict[str, Any] = {
            k: v.strip() for k, v in row.items() if v is not None and v.strip()
        }
        if "sites" in values:
            values["sites"] = [s.strip() for s in values["sites"].split(";") if s.strip()]
        try:
            token = IdTokenIn.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else "(row)"
                errors.append(RowError(row=line, field=field, message=err["msg"]))
            continue
        if token.id_token in seen:
            errors.append(
                RowError(row=line, field="id_token", message=f"repeats line {seen[token.id_token]}")
            )
            continue
        seen[token.id_token] = line
        items.append(token.model_dump())
    return items, errors


@router.post("/sync", response_model=SyncOut, responses=problems(404))
async def sync_local_lists(
    body: SyncIn, request: Request, rt: RuntimeDep, who: Principal = require("idtoken.write")
) -> SyncOut:
    """Push the token store to these chargers' local authorization lists: the differences
    when a charger still holds evota's last list, else the whole list (or when ``full``).
    Each charger's answer is in ``results``; each command sent is audited."""
    ids = list(dict.fromkeys(body.charger_ids))
    denied = await authorize_chargers(rt, who, "command.send", ids)
    if denied:
        places = await charger_places(rt, denied)
        visible = [c for c in denied if c in places and who.can("fleet.read", places[c])]
        if visible:
            raise Problem(
                403, "forbidden", f"command.send is not allowed for {visible[0]}", "charger_ids"
            )
        raise Problem(404, "Unknown charger", f"no charger with id {denied[0]!r}", "charger_ids")
    places = await charger_places(rt, ids)
    reason = (body.reason or "").strip() or None
    request.state.audit_reason = reason
    note(request, "id_token", None, chargers=len(ids), full=body.full)
    results = await leader_calls.call(
        rt,
        "local_lists.sync",
        actor=leader_calls.actor_json(who.actor),
        chargers={c: places[c].site_id for c in ids},
        full=body.full,
        reason=reason,
    )
    return SyncOut(results=[SyncItem(**r) for r in results])


@router.get("/{id_token}", response_model=IdTokenOut, responses=problems(404))
async def get_id_token(
    id_token: TokenPath, rt: RuntimeDep, _who: Principal = require("idtoken.read")
) -> IdTokenOut:
    return await _load(rt, id_token)


@router.patch("/{id_token}", response_model=IdTokenOut, responses=problems(404))
async def update_id_token(
    id_token: TokenPath,
    body: IdTokenPatch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("idtoken.write"),
) -> IdTokenOut:
    """Block, unblock, extend or move a token; chargers' Authorize sees it at once."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for name in ("status", "sites"):
        if name in changes and changes[name] is None:
            raise Problem(422, "Invalid value", f"{name} cannot be null", name)
    await _sites_must_exist(rt, set(changes.get("sites") or ()))
    before = _audited(await _load(rt, id_token))
    if changes:
        if not await token_store.change(rt.engine, rt.clock.now(), id_token, changes):
            raise Problem(404, "Unknown id token", f"no id token {id_token!r}", "id_token")
        await _changed(rt, who)
    after = await _load(rt, id_token)
    note(request, "id_token", id_token, before, _audited(after))
    return after


@router.delete("/{id_token}", status_code=204, response_class=Response, responses=problems(404))
async def delete_id_token(
    id_token: TokenPath,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("idtoken.write"),
) -> Response:
    """Forget a token: from now on it is unknown (Invalid, or the webhook's answer)."""
    before = _audited(await _load(rt, id_token))
    if not await token_store.remove(rt.engine, id_token):
        raise Problem(404, "Unknown id token", f"no id token {id_token!r}", "id_token")
    note(request, "id_token", id_token, before, None)
    await _changed(rt, who)
    return Response(status_code=204)
