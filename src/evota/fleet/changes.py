"""Operator changes to a charger's record (registration, site, tags, key), applied to the
database and to the live connection's state, and the four-eyes executors for the changes
that need a second operator (``charger.disable``, ``charger.credentials``).

The live state is looked up through a callable (the gateway's connections, wired by the
runtime), so the fleet does not import the socket layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import Actor
from evota.fleet.charger import ChargerState
from evota.fleet.events import Registration
from evota.operators.approvals import Approvals
from evota.store.models import Charger

LiveState = Callable[[str], ChargerState | None]
#: Told of every applied change (charger id, changes): in a cluster the node holding the
#: charger's connection mirrors them there (evota.cluster.presence).
Applied = Callable[[str, Mapping[str, Any]], None]


async def apply(
    engine: AsyncEngine,
    live: LiveState,
    charger_id: str,
    changes: Mapping[str, Any],
    applied: Applied | None = None,
) -> None:
    """Write ``changes`` (column values) to the charger's row and mirror what the running
    connection keeps in memory (registration, site), so they act without a reconnect."""
    if changes:
        async with engine.begin() as conn:
            await conn.execute(update(Charger).where(Charger.id == charger_id).values(**changes))
    state = live(charger_id)
    if state is not None:
        if "registration" in changes:
            state.registration = Registration(changes["registration"])
        if "site_id" in changes:
            state.site_id = changes["site_id"]
    if applied is not None:
        applied(charger_id, changes)


#: Sends a charger a new password (evota.control.passwords.PasswordChanges.change).
ChangePassword = Callable[[Actor, str, str | None], Awaitable[dict[str, Any]]]


def register_approvals(
    approvals: Approvals,
    engine: AsyncEngine,
    live: LiveState,
    change_password: ChangePassword | None = None,
    applied: Applied | None = None,
) -> None:
    """Disabling a charger and changing its credentials (a stored key or profile, or a new
    password sent to the charger: payload ``password``), once approved."""

    async def execute(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        if payload.get("password") and change_password is not None:
            return await change_password(approver, payload["charger_id"], payload.get("reason"))
        await apply(engine, live, payload["charger_id"], payload["changes"], applied)
        return {"charger_id": payload["charger_id"], "changed": sorted(payload["changes"])}

    approvals.register("charger.disable", execute)
    approvals.register("charger.credentials", execute)
