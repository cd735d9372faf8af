"""Moving an image through its lifecycle, with what a revocation sets off, and the
``firmware.revoke`` approval executor (registered by the runtime, so the API only creates
the four-eyes request)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import Actor
from evota.clock import Clock
from evota.firmware import repository as repo
from evota.firmware.lifecycle import FirmwareState
from evota.operators.approvals import Approvals

__all__ = ["change_state", "register_approvals"]

OnRevoked = Callable[[str], Awaitable[None]]


async def change_state(
    engine: AsyncEngine,
    firmware_id: str,
    target: str,
    reason: str | None,
    now: dt.datetime,
    on_revoked: OnRevoked,
) -> repo.FirmwareRecord:
    """Move the image to ``target``; a revocation needs a reason and then ``on_revoked``
    (downloads stop, pending jobs end). Raises the repository's errors."""
    if target == FirmwareState.REVOKED and not reason:
        raise repo.InvalidInput("a reason is required to revoke", "reason")
    record = await repo.set_state(engine, firmware_id, target, reason, now)
    if target == FirmwareState.REVOKED:
        await on_revoked(firmware_id)
    return record


def register_approvals(
    approvals: Approvals, engine: AsyncEngine, clock: Clock, on_revoked: OnRevoked
) -> None:
    """Revoke the image once a second operator approved."""

    async def execute(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        firmware_id = payload["firmware_id"]
        await change_state(
            engine, firmware_id, FirmwareState.REVOKED, payload["reason"], clock.now(), on_revoked
        )
        return {"firmware_id": firmware_id, "revoked": True}

    approvals.register("firmware.revoke", execute)
