"""Send one catalog command to one charger and audit it: the single path every entry point
(REST, CLI through REST, bulk operations) takes, so each command leaves exactly one audit
entry ``command.<name>`` with the charger's answer or the reason there was none.

A Reset a 2.0.1 charger answers ``Scheduled`` (OnIdle: it reboots once its sessions end) is
followed to its end: the charger's next BootNotification records a ``reset`` charger event
and the audit entry ``charger.reset_completed``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from evota.audit.log import SYSTEM, Actor, AuditLog
from evota.control import commands
from evota.control.catalog import CommandSpec, Context, Params, UploadUrl
from evota.fleet import vendors

log = structlog.get_logger("evota.commands")
_background: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True, slots=True)
class CommandPath:
    """What sending one command needs, and nothing more (the runtime builds it once)."""

    send: Callable[[str, commands.Command], Awaitable[commands.CommandResult]]
    audit: AuditLog
    # A Reset answered Scheduled: call ``done`` with what the next boot reported.
    reset_scheduled: Callable[[str, str, Callable[[dict[str, Any]], None]], None]
    upload_url: UploadUrl  # where a charger uploads diagnostics and logs
    # The charger's effective vendor profile (evota.fleet.vendor_store.for_charger): commands
    # its model is known not to take are refused before sending.
    profile_for: Callable[[str], vendors.VendorProfile] = lambda _charger_id: vendors.DEFAULT
    # Cluster mode (evota.cluster.resets): a Reset answered Scheduled is stored where every
    # node sees it, with who asked, since the charger may boot onto any node.
    reset_shared: Callable[[str, str, str], Awaitable[None]] | None = None


def vendor_refusal(
    profile: vendors.VendorProfile, charger_id: str, command: commands.Command
) -> commands.UnsupportedByModel | None:
    """Why the charger's vendor profile rules ``command`` out, or None (pure)."""
    if isinstance(command, commands.TriggerMessage):
        why = vendors.trigger_refusal(profile, command.message)
        if why is not None:
            return commands.UnsupportedByModel(charger_id, why, "message")
    return None


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
    path: CommandPath,
    actor: Actor,
    charger_id: str,
    spec: CommandSpec,
    params: Params,
    reason: str | None,
) -> commands.CommandResult:
    """Build, send and audit; returns the answer or raises a ``CommandError`` subclass."""
    ctx = Context(charger_id, upload_url=path.upload_url)
    detail: dict[str, Any] = {"params": params.audited()}
    try:
        command = spec.build(params, ctx)
        refused = vendor_refusal(path.profile_for(charger_id), charger_id, command)
        if refused is not None:
            raise refused
        result = await path.send(charger_id, command)
    except commands.CommandError as exc:
        if not exc.charger_id:
            exc.charger_id = charger_id
        failed = {**detail, "error": error_detail(exc)}
        await _record(path.audit, actor, charger_id, spec, reason, exc, failed)
        raise
    answer = {"status": result.status, **result.details}
    await _record(path.audit, actor, charger_id, spec, reason, result, {**detail, "answer": answer})
    if isinstance(command, commands.Reset) and result.status == "Scheduled":
        if path.reset_shared is not None:
            await path.reset_shared(charger_id, command.type, actor.name)
        else:
            done = partial(reset_completed, path.audit, actor.name, charger_id)
            path.reset_scheduled(charger_id, command.type, done)
    return result


def reset_completed(
    audit: AuditLog, requested_by: str, charger_id: str, info: dict[str, Any]
) -> None:
    """Called from the fleet service (synchronously) when the scheduled reset happened, on
    whichever node the charger booted onto (the entry is the same on each)."""

    async def record() -> None:
        try:
            await audit.record(
                SYSTEM,
                "charger.reset_completed",
                "completed",
                target=charger_id,
                chargers=[charger_id],
                detail={**info, "requested_by": requested_by},
            )
        except Exception:
            log.exception("could not audit a completed reset", charger_id=charger_id)

    task = asyncio.get_running_loop().create_task(record())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _record(
    audit: AuditLog,
    actor: Actor,
    charger_id: str,
    spec: CommandSpec,
    reason: str | None,
    result: commands.CommandResult | commands.CommandError,
    detail: dict[str, Any],
) -> None:
    await audit.record(
        actor,
        f"command.{spec.name}",
        outcome_of(result),
        target=charger_id,
        chargers=[charger_id],
        reason=reason,
        detail=detail,
    )
