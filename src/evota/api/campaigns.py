"""Campaigns: create (with the eligible set and every exclusion's reason), follow, steer."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from evota.api import leader_calls
from evota.api.approvals import AWAITING, awaiting
from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require
from evota.api.pages import fetch_page
from evota.api.params import AwareInstant, Limit, Offset, Uuid, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.api.schemas import Page
from evota.cluster import live
from evota.firmware import repository as repo
from evota.firmware.lifecycle import FirmwareState
from evota.rollout.campaign import TERMINAL, CampaignError, CampaignErrorKind, CampaignState
from evota.rollout.policy import PolicyError, with_defaults
from evota.rollout.target import nothing_to_update
from evota.runtime import Runtime
from evota.store.models import Campaign, CampaignEvent, Charger, Firmware, GateEvaluation, Job

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"], responses=AUTHENTICATED)
STATES = tuple(CampaignState)
# A refused campaign request, by its kind: (status, title).
_REFUSED = {
    CampaignErrorKind.INVALID: (422, "Invalid campaign"),
    CampaignErrorKind.CONFLICT: (409, "Not possible now"),
}


def _refused(exc: CampaignError) -> Problem:
    status, title = _REFUSED[exc.kind]
    return Problem(status, title, exc.detail, exc.field)


EXAMPLE: dict[str, Any] = {
    "name": "AC22 to 2.4.0",
    "firmware_id": "3f0c2c1e-5d0b-4a51-9d0e-6f1f0b9f2a10",
    "target": {"vendors": ["Acme"], "models": ["AC22"], "older_than_target": True},
    "waves": [{"count": 4}, {"percent": 50}, {"percent": 100}],
    "policy": {
        "success_threshold": 0.5,
        "soak_seconds": 5,
        "health_window_seconds": 5,
        "max_per_site_fraction": 0.25,
        "windows": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "05:00"}
        ],
        "auto_stop": [
            {
                "failures": ["unhealthy", "installation_failed"],
                "min_executed": 2,
                "max_failure_percent": 25,
                "action": "abort_and_rollback",
            }
        ],
    },
}


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})
    name: str = Field(min_length=1, max_length=200)
    firmware_id: str = Field(min_length=1, max_length=36)
    target: dict[str, Any] = Field(default_factory=dict)
    waves: list[dict[str, Any]] | dict[str, Any] = Field(
        default_factory=lambda: [{"percent": 100}],
        description='a list of {"count"} / {"percent"} (cumulative), or '
        '{"exponential": {"first": 5, "factor": 4}}',
    )
    pilot: list[str] = Field(default_factory=list, description="explicit pilot chargers")
    policy: dict[str, Any] = Field(default_factory=dict)


class ActionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reason": "pilot looks good"},
                {"reason": "bad image", "rollback": True},
                {"reason": "night window", "at": "2026-05-01T22:00:00+02:00"},
            ]
        },
    )
    reason: str = Field("", max_length=500)
    rollback: bool = Field(False, description="abort only: roll updated chargers back")
    at: AwareInstant | None = Field(None, description="start only: start at this time")


class CampaignItem(BaseModel):
    """A campaign in a list."""

    id: str
    name: str
    firmware_id: str
    state: str
    state_reason: str | None
    current_wave: int
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class WaveOut(BaseModel):
    index: int
    size: int
    state: str = Field(description="pending, running, soaking or done")
    jobs: dict[str, int] = Field(description="chargers of the wave by job state")
    gates: list[dict[str, Any]] = Field(description="every gate evaluation with its numbers")


class CampaignEventOut(BaseModel):
    at: datetime
    event: str
    state: str
    detail: dict[str, Any]


class CampaignOut(BaseModel):
    """A campaign with per-wave progress, gate results, failures and recent history."""

    id: str
    name: str
    firmware_id: str
    target_version: str | None
    vendor: str | None
    state: str
    state_reason: str | None
    target: dict[str, Any]
    wave_specs: list[Any] | dict[str, Any]
    policy: dict[str, Any]
    eligible: int
    excluded: list[dict[str, Any]] = Field(description="each excluded charger with its reason")
    current_wave: int
    waves: list[WaveOut]
    failures: dict[str, int] = Field(description="failed jobs by failure reason")
    rollbacks: dict[str, int] = Field(description="rollback jobs by state")
    rollback: bool
    held_groups: dict[str, str] = Field(
        default_factory=dict,
        description="models or sites a gate held (policy.group_by), each with the reason",
    )
    notes: list[str] = Field(description="why chargers of the current wave wait")
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    history: list[CampaignEventOut]


def _draft_notes(row: Any) -> list[str]:
    """A draft that cannot start says so at once (and why), not only when started."""
    if row.state != CampaignState.DRAFT:
        return []
    empty = nothing_to_update(sum(map(len, row.waves)), row.excluded or [])
    return [] if empty is None else [f"{empty}: starting it will be refused"]


async def _held_members(rt: Runtime, row: Any, latest: Mapping[str, Any]) -> set[str]:
    """The campaign's chargers without a job whose group (model or site) a gate held."""
    held, by = row.held_groups or {}, (row.policy or {}).get("group_by")
    if not held or by not in ("model", "site"):
        return set()
    waiting = [c for wave in row.waves for c in wave if c not in latest]
    column = Charger.model if by == "model" else Charger.site_id
    found: set[str] = set()
    async with rt.engine.connect() as conn:
        for i in range(0, len(waiting), 1000):
            rows = await conn.execute(
                select(Charger.id, column).where(Charger.id.in_(waiting[i : i + 1000]))
            )
            found.update(cid for cid, value in rows if (value or "unknown") in held)
    return found


async def _summary(rt: Runtime, campaign_id: str, *, events: int = 50) -> dict[str, Any]:
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(Campaign).where(Campaign.id == campaign_id))).first()
        if row is None:
            raise Problem(404, "Unknown campaign", f"no campaign {campaign_id!r}", "campaign_id")
        fw = (
            await conn.execute(
                select(Firmware.vendor, Firmware.version).where(Firmware.id == row.firmware_id)
            )
        ).first()
        jobs = (
            await conn.execute(
                select(Job.charger_id, Job.kind, Job.state, Job.failure)
                .where(Job.campaign_id == campaign_id)
                .order_by(Job.id)
            )
        ).all()
        gates = (
            await conn.execute(
                select(GateEvaluation)
                .where(GateEvaluation.campaign_id == campaign_id)
                .order_by(GateEvaluation.id)
            )
        ).all()
        history = (
            await conn.execute(
                select(
                    CampaignEvent.at, CampaignEvent.event, CampaignEvent.state, CampaignEvent.detail
                )
                .where(CampaignEvent.campaign_id == campaign_id)
                .order_by(CampaignEvent.id.desc())
                .limit(events)
            )
        ).all()
    latest: dict[str, Any] = {}
    rollbacks: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for j in jobs:
        if j.kind == "rollback":
            rollbacks[j.state] += 1
        else:
            latest[j.charger_id] = j
            if j.failure:
                failures[j.failure] += 1
    held = await _held_members(rt, row, latest)
    waves = []
    for index, members in enumerate(row.waves):
        counts: Counter[str] = Counter(
            latest[c].state if c in latest else "held" if c in held else "pending" for c in members
        )
        wave_gates = [g.result | {"at": g.at.isoformat()} for g in gates if g.wave == index]
        if index < row.current_wave:
            state = "done"
        elif index == row.current_wave and row.state in (
            CampaignState.RUNNING,
            CampaignState.PAUSED,
        ):
            state = "soaking" if row.wave_done_at else "running"
        elif index == row.current_wave and row.state == CampaignState.COMPLETED:
            state = "done"
        else:
            state = "pending"
        waves.append(
            {
                "index": index,
                "size": len(members),
                "state": state,
                "jobs": dict(counts),
                "gates": wave_gates,
            }
        )
    return {
        "id": row.id,
        "name": row.name,
        "firmware_id": row.firmware_id,
        "target_version": fw.version if fw else None,
        "vendor": fw.vendor if fw else None,
        "state": row.state,
        "state_reason": row.state_reason,
        "target": row.target,
        "wave_specs": row.wave_specs,
        "policy": row.policy,
        "eligible": sum(len(w) for w in row.waves),
        "excluded": row.excluded,
        "current_wave": row.current_wave,
        "waves": waves,
        "failures": dict(failures),
        "rollbacks": dict(rollbacks),
        "rollback": row.rollback,
        "held_groups": row.held_groups or {},
        "notes": _draft_notes(row)
        or await leader_calls.call(rt, "campaigns.notes", campaign_id=row.id),
        "created_by": row.created_by,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "history": [dict(h._mapping) for h in history],
    }


@router.post("", status_code=201, response_model=CampaignOut, responses=problems(409))
async def create_campaign(
    body: CampaignIn, request: Request, rt: RuntimeDep, who: Principal = require("campaign.write")
) -> dict[str, Any]:
    """Compute the eligible set (and why every other matching charger is excluded) and the
    waves; the campaign starts in ``draft`` until ``/start``."""
    fw = await repo.get_firmware(rt.engine, body.firmware_id)
    if fw is None:
        raise Problem(422, "Unknown firmware", f"no firmware {body.firmware_id!r}", "firmware_id")
    if fw.state == FirmwareState.REVOKED:
        raise Problem(409, "Firmware revoked", f"{fw.version} is revoked", "firmware_id")
    try:
        created = await leader_calls.call(
            rt,
            "campaigns.create",
            name=body.name,
            firmware_id=fw.id,
            target=body.target,
            waves=body.waves,
            pilot=body.pilot,
            policy=with_defaults(body.policy, rt.settings.campaign_defaults),
            created_by=who.name,
        )
    except PolicyError as exc:
        raise Problem(422, "Invalid campaign", exc.message, exc.field) from None
    except CampaignError as exc:
        raise _refused(exc) from None
    note(request, "campaign", created["id"], None, body.model_dump(mode="json"))
    return await _summary(rt, created["id"])


@router.get("", response_model=Page[CampaignItem])
async def list_campaigns(
    rt: RuntimeDep,
    _who: Principal = require("campaign.read"),
    state: str | None = text("one of " + ", ".join(STATES), 24),
    firmware_id: str | None = text("campaigns of this image", 36),
    q: str | None = text("name contains (case-insensitive)"),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Campaigns, newest first."""
    if state is not None and state not in STATES:
        raise Problem(422, "Invalid request", f"unknown state {state!r}", "state")
    query = select(
        Campaign.id,
        Campaign.name,
        Campaign.firmware_id,
        Campaign.state,
        Campaign.state_reason,
        Campaign.current_wave,
        Campaign.created_by,
        Campaign.created_at,
        Campaign.started_at,
        Campaign.finished_at,
    )
    if state:
        query = query.where(Campaign.state == state)
    if firmware_id:
        query = query.where(Campaign.firmware_id == firmware_id)
    if q:
        query = query.where(func.lower(Campaign.name).contains(q.lower(), autoescape=True))
    total, rows = await fetch_page(rt.engine, query, Campaign.created_at.desc(), limit, offset)
    return {
        "items": [dict(r._mapping) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{campaign_id}", response_model=CampaignOut, responses=problems(404))
async def get_campaign(
    campaign_id: Uuid, rt: RuntimeDep, _who: Principal = require("campaign.read")
) -> dict[str, Any]:
    return await _summary(rt, campaign_id)


async def _act(rt: Runtime, campaign_id: str, action: str, body: ActionIn | None) -> dict[str, Any]:
    body = body or ActionIn(reason="", rollback=False, at=None)
    try:
        await leader_calls.call(
            rt,
            "campaigns.act",
            campaign_id=campaign_id,
            action=action,
            reason=body.reason or action,
            rollback=body.rollback,
            at=body.at.isoformat() if body.at else None,
        )
    except LookupError:
        raise Problem(
            404, "Unknown campaign", f"no campaign {campaign_id!r}", "campaign_id"
        ) from None
    except CampaignError as exc:
        raise _refused(exc) from None
    return await _summary(rt, campaign_id)


_ACTION = problems(404, 409)


@router.post("/{campaign_id}/start", response_model=CampaignOut, responses={**AWAITING, **_ACTION})
async def start(
    campaign_id: Uuid,
    rt: RuntimeDep,
    who: Principal = require("campaign.write"),
    body: ActionIn | None = None,
) -> Any:
    """Start a draft campaign, or ask a second operator to approve the start (202) when
    ``campaign.start`` is among ``EVOTA_APPROVAL_ACTIONS`` (the default)."""
    if rt.approvals.required("campaign.start"):
        summary = await _summary(rt, campaign_id, events=0)
        if summary["state"] != CampaignState.DRAFT:
            raise Problem(409, "Not possible now", f"campaign is {summary['state']}", "state")
        empty = nothing_to_update(summary["eligible"], summary["excluded"])
        if empty is not None:  # refused now, not after a second operator has approved it
            raise Problem(409, "Not possible now", empty, "target")
        at = body.at.isoformat() if body and body.at else None
        return await awaiting(
            rt,
            who,
            "campaign.start",
            f"start campaign {summary['name']!r} ({summary['firmware_id']})",
            {"campaign_id": campaign_id, "at": at, "reason": body.reason if body else ""},
            body.reason if body else None,
            charger_count=summary["eligible"],
        )
    return await _act(rt, campaign_id, "start", body)


@router.post("/{campaign_id}/pause", response_model=CampaignOut, responses=_ACTION)
async def pause(
    campaign_id: Uuid,
    rt: RuntimeDep,
    _who: Principal = require("campaign.write"),
    body: ActionIn | None = None,
) -> dict[str, Any]:
    return await _act(rt, campaign_id, "pause", body)


@router.post("/{campaign_id}/resume", response_model=CampaignOut, responses=_ACTION)
async def resume(
    campaign_id: Uuid,
    rt: RuntimeDep,
    _who: Principal = require("campaign.write"),
    body: ActionIn | None = None,
) -> dict[str, Any]:
    """Resume a paused campaign; at a pause-at-gate this is the operator's go."""
    return await _act(rt, campaign_id, "go", body)


@router.post("/{campaign_id}/abort", response_model=CampaignOut, responses=_ACTION)
async def abort(
    campaign_id: Uuid,
    rt: RuntimeDep,
    _who: Principal = require("campaign.write"),
    body: ActionIn | None = None,
) -> dict[str, Any]:
    """Stop for good; with ``rollback`` every charger it updated goes back to its previous
    version."""
    return await _act(rt, campaign_id, "abort", body)


@router.get(
    "/{campaign_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events, one ``campaign`` event per change",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(404),
    },
)
async def stream(
    campaign_id: Uuid, request: Request, rt: RuntimeDep, _who: Principal = require("campaign.read")
) -> StreamingResponse:
    """Server-sent events: the campaign summary whenever it changes (checked every second,
    and at once on a change notice from any node in a cluster: evota.cluster.live)."""
    await _summary(rt, campaign_id, events=0)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        last = ""
        async with live.waiter(rt.live, f"campaign:{campaign_id}") as wait:
            while not await request.is_disconnected():
                summary = await _summary(rt, campaign_id, events=10)
                text = json.dumps(summary, default=_json_default)
                if text != last:
                    last = text
                    yield f"event: campaign\ndata: {text}\n\n".encode()
                    if summary["state"] in TERMINAL and not summary["rollback"]:
                        return
                await wait(1.0)

    return StreamingResponse(events(), media_type="text/event-stream")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
