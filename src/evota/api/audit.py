"""The audit log over HTTP: filtered lists, JSON Lines / CSV export, chain verification."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Select, select

from evota.api.deps import Principal, RuntimeDep, require
from evota.api.pages import fetch_page
from evota.api.params import Instant, Limit, Offset, text
from evota.api.problems import AUTHENTICATED
from evota.api.schemas import Page
from evota.audit import chain
from evota.csvcells import safe_cell
from evota.runtime import Runtime
from evota.store.models import AuditCharger, AuditEntry

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=AUTHENTICATED)

COLUMNS = (
    "seq",
    "at",
    "actor",
    "role",
    "action",
    "outcome",
    "target",
    "reason",
    "request_id",
    "chargers",
    "detail",
    "prev_hash",
    "hash",
    "v",
)


class AuditEntryOut(BaseModel):
    seq: int = Field(description="position in the hash chain")
    at: datetime
    actor: str
    role: str
    action: str
    outcome: str
    target: str | None
    reason: str | None
    request_id: str | None
    chargers: list[str]
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    v: int = Field(description="canonical form the hash covers (2: includes the chargers)")


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    broken_at: int | None = None
    reason: str | None = None
    detail: str | None = None
    head_checked: bool = Field(
        True, description="the end of the chain was compared with the sealed head"
    )


def _filtered(
    charger: str | None,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    query = select(AuditEntry)
    if charger is not None:
        query = query.where(
            AuditEntry.id.in_(
                select(AuditCharger.entry_id).where(AuditCharger.charger_id == charger)
            )
        )
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        # "command" matches every command.*; an exact name matches itself only.
        query = query.where(
            (AuditEntry.action == action) | AuditEntry.action.startswith(action.rstrip(".") + ".")
        )
    if outcome is not None:
        query = query.where(AuditEntry.outcome == outcome)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    return query


async def _with_chargers(rt: Runtime, rows: Any) -> list[dict[str, Any]]:
    ids = [r.id for r in rows]
    chargers: dict[int, list[str]] = {}
    if ids:
        async with rt.engine.connect() as conn:
            for link in await conn.execute(
                select(AuditCharger.entry_id, AuditCharger.charger_id).where(
                    AuditCharger.entry_id.in_(ids)
                )
            ):
                chargers.setdefault(link.entry_id, []).append(link.charger_id)
    out = []
    for r in rows:
        data = {c: getattr(r, c) for c in COLUMNS if c != "chargers"}
        data["chargers"] = sorted(chargers.get(r.id, []))
        out.append(data)
    return out


_CHARGER = text("entries about this charger", 48)
_ACTOR = text("operator or token name", 100)
_ACTION = text("exact action or prefix, e.g. command", 64)
_OUTCOME = text("e.g. ok, failed, http_403", 64)
_SINCE = "at or after (without an offset: UTC)"
_UNTIL = "before (without an offset: UTC)"


@router.get("", response_model=Page[AuditEntryOut])
async def list_audit(
    rt: RuntimeDep,
    _who: Principal = require("audit.read"),
    charger: str | None = _CHARGER,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    outcome: str | None = _OUTCOME,
    since: Annotated[Instant | None, Query(description=_SINCE)] = None,
    until: Annotated[Instant | None, Query(description=_UNTIL)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Newest first."""
    query = _filtered(charger, actor, action, outcome, since, until)
    total, rows = await fetch_page(rt.engine, query, AuditEntry.seq.desc(), limit, offset)
    items = await _with_chargers(rt, rows)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON Lines (one entry per line) or CSV with a header row",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def export_audit(
    rt: RuntimeDep,
    _who: Principal = require("audit.read"),
    format: Literal["jsonl", "csv"] = "jsonl",
    charger: str | None = _CHARGER,
    actor: str | None = _ACTOR,
    action: str | None = _ACTION,
    outcome: str | None = _OUTCOME,
    since: Annotated[Instant | None, Query(description=_SINCE)] = None,
    until: Annotated[Instant | None, Query(description=_UNTIL)] = None,
) -> StreamingResponse:
    """Oldest first, streamed in batches; includes the hashes so an export can be re-verified
    (JSON Lines exactly; in CSV, text cells that a spreadsheet would run as a formula are
    prefixed with a single quote)."""
    base = _filtered(charger, actor, action, outcome, since, until)

    async def rows() -> AsyncIterator[dict[str, Any]]:
        last = 0
        while True:
            async with rt.engine.connect() as conn:
                batch = (
                    await conn.execute(
                        base.where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(1000)
                    )
                ).all()
            if not batch:
                return
            for item in await _with_chargers(rt, batch):
                yield item
            last = batch[-1].seq

    async def body() -> AsyncIterator[bytes]:
        if format == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(COLUMNS)
            async for item in rows():
                writer.writerow(
                    [
                        safe_cell(
                            json.dumps(item[c], sort_keys=True)
                            if c in ("detail", "chargers")
                            else (item[c].isoformat() if isinstance(item[c], datetime) else item[c])
                        )
                        for c in COLUMNS
                    ]
                )
                if buf.tell() > 65536:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue().encode()
        else:
            async for item in rows():
                yield (json.dumps(item, default=_iso, sort_keys=True) + "\n").encode()

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"evota-audit.{format}"
    return StreamingResponse(
        body(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@router.get("/verify", response_model=VerifyOut)
async def verify_audit(rt: RuntimeDep, _who: Principal = require("audit.read")) -> VerifyOut:
    """Walk the whole hash chain and compare its end with the sealed head and the latest
    anchor; ``broken_at`` is the sequence number of the first entry that was edited, is
    missing, is out of order or lost its charger links, or the first entry a truncation
    removed; ``detail`` says it in words."""
    count, broken = await rt.audit.verify()
    checked = rt.audit.head_checked
    if broken is None:
        return VerifyOut(ok=True, entries=count, head_checked=checked)
    return VerifyOut(
        ok=False,
        entries=count,
        broken_at=broken.seq,
        reason=broken.reason,
        detail=chain.explain(broken),
        head_checked=checked,
    )
