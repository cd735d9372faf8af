"""Single-charger firmware updates and the jobs that track them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from evota.api import leader_calls
from evota.api.deps import Principal, RuntimeDep, authorize_charger, require, scope_filter
from evota.api.pages import fetch_page
from evota.api.params import AwareInstant, ChargerId, IntId, Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.firmware import repository as repo
from evota.firmware.updates import ChargerFacts, image_facts, update_refusal
from evota.rollout.job import JobState
from evota.rollout.runner import JobConflict
from evota.store.models import Charger, Job, JobEvent

router = APIRouter(tags=["jobs"], responses=AUTHENTICATED)
_STATES = tuple(s.value for s in JobState)


class FirmwareUpdateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"firmware_id": "3f0c2c1e-5d0b-4a51-9d0e-6f1f0b9f2a10"},
                {
                    "firmware_id": "3f0c2c1e-5d0b-4a51-9d0e-6f1f0b9f2a10",
                    "retrieve_at": "2026-05-01T02:00:00+02:00",
                    "allow_downgrade": True,
                },
            ],
        },
    )
    firmware_id: str = Field(min_length=1, max_length=36)
    retrieve_at: AwareInstant | None = Field(
        None, description="not before this time (UTC offset required); default now"
    )
    allow_downgrade: bool = False


class JobCreated(BaseModel):
    job_id: int
    state: str


class JobEventOut(BaseModel):
    at: datetime
    event: str
    state: str
    detail: dict[str, Any]


class JobOut(BaseModel):
    id: int
    charger_id: str
    firmware_id: str
    campaign_id: str | None
    kind: str
    state: str
    failure: str | None
    detail: str | None
    target_version: str
    previous_version: str | None
    method: str | None
    attempts: int
    retrieve_at: datetime | None
    deadline: datetime | None
    allow_downgrade: bool
    bytes_served: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobDetail(JobOut):
    history: list[JobEventOut]


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class CancelIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "wrong image"}]}
    )
    reason: str = Field("cancelled by operator", max_length=500)


@router.post(
    "/api/v1/chargers/{charger_id}/firmware-update",
    status_code=202,
    response_model=JobCreated,
    responses=problems(404, 409),
)
async def update_firmware(
    charger_id: ChargerId,
    body: FirmwareUpdateIn,
    rt: RuntimeDep,
    who: Principal = require("job.write"),
) -> dict[str, Any]:
    """Start a firmware update of one charger. Refusals name the reason (``reason``)."""
    await authorize_charger(rt, who, "job.write", charger_id, "charger_id")
    async with rt.engine.connect() as conn:
        charger = (await conn.execute(select(Charger).where(Charger.id == charger_id))).first()
    fw = await repo.get_firmware(rt.engine, body.firmware_id)
    if charger is None:
        raise Problem(404, "Unknown charger", f"no charger with id {charger_id!r}", "charger_id")
    if fw is None:
        raise Problem(
            422, "Unknown firmware", f"no firmware with id {body.firmware_id!r}", "firmware_id"
        )
    facts = ChargerFacts(
        id=charger.id,
        vendor=charger.vendor,
        model=charger.model,
        hardware_revision=charger.hardware_revision,
        firmware_version=charger.firmware_version,
        max_image_bytes=rt.vendor_profiles.for_identity(
            charger.vendor, charger.model, charger.firmware_version
        ).max_image_bytes,
    )
    refusal = update_refusal(image_facts(fw), facts, allow_downgrade=body.allow_downgrade)
    if refusal is not None:
        raise Problem(
            409,
            "Update refused",
            refusal.detail,
            "allow_downgrade" if refusal.reason == "downgrade" else "firmware_id",
            reason=refusal.reason,
        )
    try:
        job = await leader_calls.call(
            rt,
            "jobs.create",
            charger_id=charger.id,
            firmware_id=fw.id,
            previous_version=charger.firmware_version,
            learned_method=charger.firmware_delivery,
            retrieve_at=body.retrieve_at.isoformat() if body.retrieve_at else None,
            allow_downgrade=body.allow_downgrade,
            created_by=who.name,
        )
    except JobConflict as exc:
        raise Problem(
            409,
            "Update in progress",
            str(exc),
            "charger_id",
            reason="in_progress",
            job_id=exc.job_id,
        ) from None
    return {"job_id": job["job_id"], "state": job["state"]}


@router.get("/api/v1/jobs", response_model=JobPage)
async def list_jobs(
    rt: RuntimeDep,
    who: Principal = require("job.read"),
    charger_id: str | None = text("jobs of this charger", 48),
    firmware_id: str | None = text("jobs installing this image", 36),
    campaign_id: str | None = text("jobs of this campaign", 36),
    state: str | None = text("one of " + ", ".join(_STATES), 32),
    kind: Literal["update", "rollback"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Jobs of the chargers the caller can see, newest first."""
    if state is not None and state not in _STATES:
        raise Problem(422, "Invalid request", f"unknown state {state!r}", "state")
    query = select(Job)
    if not who.can("job.read"):  # scoped: only jobs of chargers in scope
        query = query.where(Job.charger_id.in_(scope_filter(who, "job.read")(select(Charger.id))))
    if charger_id is not None:
        query = query.where(Job.charger_id == charger_id)
    if firmware_id is not None:
        query = query.where(Job.firmware_id == firmware_id)
    if campaign_id is not None:
        query = query.where(Job.campaign_id == campaign_id)
    if state is not None:
        query = query.where(Job.state == state)
    if kind is not None:
        query = query.where(Job.kind == kind)
    total, rows = await fetch_page(rt.engine, query, Job.id.desc(), limit, offset)
    items = [dict(r._mapping) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


async def _job_detail(
    rt: Any, job_id: int, who: Principal | None = None, permission: str = "job.read"
) -> dict[str, Any]:
    async with rt.engine.connect() as conn:
        row = (await conn.execute(select(Job).where(Job.id == job_id))).first()
    if row is None:
        raise Problem(404, "Unknown job", f"no job with id {job_id}", "job_id")
    if who is not None:
        try:
            await authorize_charger(rt, who, permission, row.charger_id)
        except Problem as exc:
            if exc.status == 404:
                raise Problem(404, "Unknown job", f"no job with id {job_id}", "job_id") from None
            raise
    async with rt.engine.connect() as conn:
        events = (
            await conn.execute(
                select(JobEvent.at, JobEvent.event, JobEvent.state, JobEvent.detail)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id)
            )
        ).all()
    data = dict(row._mapping)
    data["history"] = [dict(e._mapping) for e in events]
    return data


@router.get("/api/v1/jobs/{job_id}", response_model=JobDetail, responses=problems(404))
async def get_job(
    job_id: IntId, rt: RuntimeDep, who: Principal = require("job.read")
) -> dict[str, Any]:
    return await _job_detail(rt, job_id, who, "job.read")


@router.post("/api/v1/jobs/{job_id}/cancel", response_model=JobDetail, responses=problems(404, 409))
async def cancel_job(
    job_id: IntId,
    rt: RuntimeDep,
    who: Principal = require("job.write"),
    body: CancelIn | None = None,
) -> dict[str, Any]:
    """Cancel a job that has not reached the charger (OCPP 1.6 cannot recall one)."""
    reason = body.reason if body else "cancelled by operator"
    current = await _job_detail(rt, job_id, who, "job.write")
    s = await leader_calls.call(rt, "jobs.cancel", job_id=job_id, reason=reason)
    if s is None or not s["changed"]:
        why = s["note"] if s is not None else f"job is {current['state']}"
        raise Problem(409, "Cannot cancel", why or "", "job_id")
    return await _job_detail(rt, job_id)
