"""Send one catalog command to one charger and audit it: the single path every entry point
(REST, CLI through REST, bulk operations) takes, so each command leaves exactly one audit
entry ``command.<name>`` with the charger's answer or the reason there was none.

A Reset a 2.0.1 charger answers ``Scheduled`` (OnIdle: it reboots once its sessions end) is
followed to its end: the charger's next BootNotification records a ``reset`` charger event
and the audit entry ``charger.reset_completed``."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from evota.audit.log import SYSTEM, Actor
from evota.control import commands, uploads
from evota.control.catalog import CommandSpec, Context, Params

if TYPE_CHECKING:
    from evota.runtime import Runtime

log = structlog.get_logger("evota.commands")
_background: set[asyncio.Task[Any]] = set()


def outcome_of(result: commands.CommandResult | commands.CommandError) -> str:
    """The audit outcome: the charger's status word, or ``error:<reason>``."""
    if isinstance(result, commands.CommandError):
        return f"error:{result.reason}"
    return result.status


def error_detail(exc: commands.CommandError) -> dict[str, Any]:
    detail: dict[str, Any] = {"reason": exc.reason, "message": exc.message}
    if isinstance(exc, commands.CommandRejected):
        detail["ocpp_error_code"] = exc.code
    return detail


async def send_command(
    rt: Runtime,
    actor: Actor,
    charger_id: str,
    spec: CommandSpec,
    params: Params,
    reason: str | None,
) -> commands.CommandResult:
    """Build, send and audit; returns the answer or raises a ``CommandError`` subclass."""
    ctx = Context(charger_id, upload_url=partial(uploads.upload_url, rt))
    detail: dict[str, Any] = {"params": params.audited()}
    try:
        command = spec.build(params, ctx)
        result = await rt.gateway.send(charger_id, command)
    except commands.CommandError as exc:
        if not exc.charger_id:
            exc.charger_id = charger_id
        failed = {**detail, "error": error_detail(exc)}
        await _record(rt, actor, charger_id, spec, reason, exc, failed)
        raise
    answer = {"status": result.status, **result.details}
    await _record(rt, actor, charger_id, spec, reason, result, {**detail, "answer": answer})
    if isinstance(command, commands.Reset) and result.status == "Scheduled":
        done = partial(_reset_completed, rt, actor, charger_id)
        rt.fleet.reset_scheduled(charger_id, command.type, done)
    return result


def _reset_completed(rt: Runtime, actor: Actor, charger_id: str, info: dict[str, Any]) -> None:
    """Called from the fleet service (synchronously) when the scheduled reset happened."""

    async def record() -> None:
        try:
            await rt.audit.record(
                SYSTEM,
                "charger.reset_completed",
                "completed",
                target=charger_id,
                chargers=[charger_id],
                detail={**info, "requested_by": actor.name},
            )
        except Exception:
            log.exception("could not audit a completed reset", charger_id=charger_id)

    task = asyncio.get_running_loop().create_task(record())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _record(
    rt: Runtime,
    actor: Actor,
    charger_id: str,
    spec: CommandSpec,
    reason: str | None,
    result: commands.CommandResult | commands.CommandError,
    detail: dict[str, Any],
) -> None:
    await rt.audit.record(
        actor,
        f"command.{spec.name}",
        outcome_of(result),
        target=charger_id,
        chargers=[charger_id],
        reason=reason,
        detail=detail,
    )
