"""Charger certificates (issue 16 §5/§6, docs/security-profiles.md): what a charger holds and
what evota signed for it, a renewal or an inventory on demand, and the fleet's soonest
expiring certificates. Reads are ``fleet.read`` on the charger (the list: narrowed to the
caller's chargers with ``scope_filter``); renewal and inventory send commands, so they need
``command.send`` on the charger, and are audited (the renewal by the command path, with the
charger's answer; the inventory by the middleware).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from evota.api import leader_calls
from evota.api.commands import problem_for
from evota.api.deps import Principal, RuntimeDep, require, require_charger, scope_filter
from evota.api.params import ChargerId, Limit
from evota.api.problems import AUTHENTICATED, problems
from evota.api.schemas import CommandOut
from evota.control import commands
from evota.store.models import (
    Charger,
    ChargerCertificate,
    ChargerCertificateCheck,
    ChargerInstalledCertificate,
)

router = APIRouter(prefix="/api/v1", tags=["certificates"], responses=AUTHENTICATED)

MAX_SIGNED = 50  # the newest certificates evota signed for one charger


class SignedOut(BaseModel):
    certificate_type: str
    serial: str
    sha256: str
    subject: str
    key: str
    not_before: datetime
    not_after: datetime
    status: str = Field(description="the charger's answer to CertificateSigned (sent: none yet)")
    created_at: datetime
    answered_at: datetime | None


class InstalledOut(BaseModel):
    certificate_type: str
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial: str
    subject: str | None = Field(description="known only for certificates evota knows")
    not_after: datetime | None = Field(description="known only for certificates evota knows")
    known_as: str | None = Field(description="charger-ca, server or signed; null: unknown")
    seen_at: datetime


class ChargerCertificatesOut(BaseModel):
    charger_id: str
    current: SignedOut | None = Field(description="the newest certificate the charger accepted")
    signed: list[SignedOut]
    installed: list[InstalledOut]
    inventory_checked_at: datetime | None
    inventory_outcome: str | None = Field(description="ok, unsupported or error:<reason>")


class InventoryOut(BaseModel):
    charger_id: str
    outcome: str
    checked_at: datetime
    certificates: int


class RenewIn(BaseModel):
    reason: str | None = Field(None, max_length=1000, description="why (optional)")


class ExpiringOut(BaseModel):
    charger_id: str
    source: str = Field(description="signed (by evota's CA) or installed (reported)")
    certificate_type: str
    serial: str
    subject: str | None
    not_after: datetime


def _signed(row: Any) -> SignedOut:
    return SignedOut.model_validate(dict(row._mapping))


@router.get(
    "/chargers/{charger_id}/certificates",
    response_model=ChargerCertificatesOut,
    responses=problems(404),
)
async def charger_certificates(
    charger_id: ChargerId, rt: RuntimeDep, _who: Principal = require_charger("fleet.read")
) -> ChargerCertificatesOut:
    """The certificates evota signed for this charger (newest first, with the charger's
    answer) and what it reported holding at its last inventory, with expiry where known."""
    async with rt.engine.connect() as conn:
        signed = (
            await conn.execute(
                select(ChargerCertificate)
                .where(ChargerCertificate.charger_id == charger_id)
                .order_by(ChargerCertificate.created_at.desc(), ChargerCertificate.id.desc())
                .limit(MAX_SIGNED)
            )
        ).all()
        signed_out = [_signed(r) for r in signed]
        installed = (
            await conn.execute(
                select(ChargerInstalledCertificate)
                .where(ChargerInstalledCertificate.charger_id == charger_id)
                .order_by(ChargerInstalledCertificate.id)
            )
        ).all()
        installed_out = [InstalledOut.model_validate(dict(r._mapping)) for r in installed]
        check = (
            await conn.execute(
                select(ChargerCertificateCheck).where(
                    ChargerCertificateCheck.charger_id == charger_id
                )
            )
        ).first()
    current = next((s for s in signed_out if s.status == "Accepted"), None)
    return ChargerCertificatesOut(
        charger_id=charger_id,
        current=current,
        signed=signed_out,
        installed=installed_out,
        inventory_checked_at=check.checked_at if check else None,
        inventory_outcome=check.outcome if check else None,
    )


@router.post(
    "/chargers/{charger_id}/certificates/renew",
    response_model=CommandOut,
    responses=problems(404, 409, 502, 504),
)
async def renew_certificate(
    charger_id: ChargerId,
    request: Request,
    rt: RuntimeDep,
    body: RenewIn | None = None,
    who: Principal = require_charger("command.send"),
) -> CommandOut:
    """Ask the charger for a new CSR (1.6: ExtendedTriggerMessage SignChargePointCertificate;
    2.0.1: TriggerMessage SignChargingStationCertificate); its CSR is then checked, signed and
    sent back, even within the signing interval. Audited with the charger's answer."""
    reason = (body.reason or "").strip() or None if body else None
    request.state.audited = True  # the command path records the entry, with the answer
    request.state.audit_reason = reason
    try:
        result = await leader_calls.call(
            rt,
            "certificates.renew",
            actor=leader_calls.actor_json(who.actor),
            charger_id=charger_id,
            reason=reason,
        )
    except commands.CommandError as exc:
        raise problem_for(exc) from None
    return CommandOut(
        charger_id=charger_id,
        command="trigger-message",
        status=result["status"],
        details=result["details"],
    )


@router.post(
    "/chargers/{charger_id}/certificates/inventory",
    response_model=InventoryOut,
    responses=problems(404, 409),
)
async def certificate_inventory(
    charger_id: ChargerId, rt: RuntimeDep, _who: Principal = require_charger("command.send")
) -> InventoryOut:
    """Ask the charger now which certificates it holds (GetInstalledCertificateIds, every
    type its OCPP version knows) and store the answer."""
    try:
        done = await leader_calls.call(rt, "certificates.inventory", charger_id=charger_id)
    except commands.CommandError as exc:
        raise problem_for(exc) from None
    return InventoryOut(charger_id=charger_id, **done)


@router.get("/certificates/expiring", response_model=list[ExpiringOut])
async def expiring_certificates(
    rt: RuntimeDep,
    days: Annotated[int, Query(ge=0, le=3650, description="ending within this many days")] = 30,
    limit: Limit = 100,
    who: Principal = require("fleet.read"),
) -> list[ExpiringOut]:
    """The caller's chargers' certificates that end soonest (already expired ones first):
    the newest each charger accepted from evota's CA, and those its inventory reported with
    a known expiry."""
    until = rt.clock.now() + timedelta(days=days)
    narrow = scope_filter(who)
    in_scope = narrow(select(Charger.id))
    async with rt.engine.connect() as conn:
        newest = (
            select(func.max(ChargerCertificate.id))
            .where(ChargerCertificate.status == "Accepted")
            .group_by(ChargerCertificate.charger_id)
        )
        signed = (
            await conn.execute(
                select(ChargerCertificate)
                .where(
                    ChargerCertificate.id.in_(newest),
                    ChargerCertificate.not_after <= until,
                    ChargerCertificate.charger_id.in_(in_scope),
                )
                .order_by(ChargerCertificate.not_after)
                .limit(limit)
            )
        ).all()
        installed = (
            await conn.execute(
                select(ChargerInstalledCertificate)
                .where(
                    ChargerInstalledCertificate.not_after.is_not(None),
                    ChargerInstalledCertificate.not_after <= until,
                    ChargerInstalledCertificate.known_as != "signed",
                    ChargerInstalledCertificate.charger_id.in_(in_scope),
                )
                .order_by(ChargerInstalledCertificate.not_after)
                .limit(limit)
            )
        ).all()
        out = [
            ExpiringOut(
                charger_id=r.charger_id,
                source="signed",
                certificate_type=r.certificate_type,
                serial=r.serial,
                subject=r.subject,
                not_after=r.not_after,
            )
            for r in signed
        ]
        out += [
            ExpiringOut(
                charger_id=r.charger_id,
                source="installed",
                certificate_type=r.certificate_type,
                serial=r.serial,
                subject=r.subject,
                not_after=r.not_after,  # type: ignore[arg-type]  # filtered not null
            )
            for r in installed
        ]
    return sorted(out, key=lambda e: e.not_after)[:limit]
