"""API calls into the runners, run on the runner leader (evota.cluster.leader.LeaderCalls).

The runners (jobs, campaigns, approvals, rollups, feeds, certificates, passwords, profile
upgrades, local lists) run on one node of a cluster. A route on any node checks the caller's
permission and scope as before, then calls ``call(rt, name, ...)``: on the leader (and in
single-node mode) the handler runs here; elsewhere it is forwarded over Redis and its answer or
its domain error comes back, or the route answers 503 when no leader answers. Arguments and
results are JSON (ids, not rows), so a call means the same wherever it runs.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from evota.api.problems import Problem
from evota.audit.log import Actor
from evota.cluster.leader import Handler, LeaderCalls, NoLeader
from evota.control import local_lists
from evota.control.commands import CommandError
from evota.control.operation import OperationError
from evota.control.operations import OperationConflict
from evota.control.passwords import ChangePending
from evota.control.profile_upgrades import UpgradeRefused
from evota.control.rotation import RotationConflict, RotationError
from evota.firmware import repository as repo
from evota.operators.approvals import ApprovalError
from evota.rollout.campaign import CampaignError
from evota.rollout.policy import PolicyError
from evota.rollout.runner import JobConflict
from evota.store.models import ConfigProfile

if TYPE_CHECKING:
    from evota.runtime import Runtime

log = structlog.get_logger("evota.api.leader_calls")

# Domain errors a remote caller gets as themselves (the routes map them to problems).
CROSSING: tuple[type[Exception], ...] = (
    JobConflict,
    CampaignError,
    PolicyError,
    LookupError,
    ApprovalError,
    CommandError,
    ChangePending,
    UpgradeRefused,
    repo.RepositoryError,
    OperationError,
    OperationConflict,
    RotationError,
    RotationConflict,
)


async def call(rt: Runtime, name: str, /, **kwargs: Any) -> Any:
    """Run a runner call where the runners are; 503 when no leader answers."""
    try:
        return await rt.leader_calls.call(name, **kwargs)
    except NoLeader as exc:
        raise Problem(503, "No runner leader", str(exc)) from None


async def tell(rt: Runtime, name: str, /, **kwargs: Any) -> None:
    """A notice to the runners after a change that is already stored: without a leader it
    is logged, not a failure (the leader reads the database when it starts)."""
    try:
        await rt.leader_calls.call(name, **kwargs)
    except NoLeader as exc:
        log.warning("runner leader not told", call=name, reason=str(exc))


def actor_json(actor: Actor) -> dict[str, Any]:
    return {"name": actor.name, "roles": list(actor.roles), "request_id": actor.request_id}


def _actor(data: dict[str, Any]) -> Actor:
    return Actor(str(data["name"]), tuple(data.get("roles") or ()), data.get("request_id"))


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def register(rt: Runtime, calls: LeaderCalls) -> None:
    """The handlers, bound to this node's services (they run only where those run)."""
    calls.crossing(*CROSSING)

    async def jobs_create(
        *,
        charger_id: str,
        firmware_id: str,
        previous_version: str | None,
        learned_method: str | None,
        retrieve_at: str | None,
        allow_downgrade: bool,
        created_by: str | None,
    ) -> dict[str, Any]:
        fw = await repo.get_firmware(rt.engine, firmware_id)
        if fw is None:
            raise repo.NotFound(f"no firmware {firmware_id!r}", "firmware_id")
        job = await rt.jobs.create(
            charger_id=charger_id,
            firmware=fw,
            previous_version=previous_version,
            learned_method=learned_method,
            retrieve_at=_when(retrieve_at),
            allow_downgrade=allow_downgrade,
            created_by=created_by,
        )
        return {"job_id": job.id, "state": job.state.value}

    async def jobs_cancel(*, job_id: int, reason: str) -> dict[str, Any] | None:
        s = await rt.jobs.cancel(job_id, reason)
        return None if s is None else {"changed": s.changed, "note": s.note}

    async def campaigns_create(*, firmware_id: str, **kwargs: Any) -> dict[str, Any]:
        fw = await repo.get_firmware(rt.engine, firmware_id)
        if fw is None:
            raise repo.NotFound(f"no firmware {firmware_id!r}", "firmware_id")
        created: dict[str, Any] = await rt.campaigns.create(firmware=fw, **kwargs)
        return {"id": created["id"]}

    async def campaigns_act(
        *, campaign_id: str, action: str, reason: str, rollback: bool, at: str | None
    ) -> None:
        await rt.campaigns.act(campaign_id, action, reason, rollback=rollback, at=_when(at))

    async def campaigns_notes(*, campaign_id: str) -> list[Any]:
        return list(rt.campaigns.notes.get(campaign_id, ()))[:50]

    async def approvals_decide(
        *, approval_id: str, decider: dict[str, Any], approve: bool, note: str | None
    ) -> dict[str, Any]:
        return await rt.approvals.decide(approval_id, _actor(decider), approve, note)

    async def kpi_rollup_run() -> dict[str, Any]:
        done = await rt.kpi_rollup.run()
        return {"chargers": done.chargers, "rows": done.rows, "seconds": done.seconds}

    async def feeds_check(*, feed_id: int, retry: bool) -> dict[str, Any]:
        result = await rt.firmware_feeds.check(feed_id, retry=retry)
        return dict(result.as_dict())

    async def certificates_renew(
        *, actor: dict[str, Any], charger_id: str, reason: str | None
    ) -> dict[str, Any]:
        result = await rt.certificates.renew(_actor(actor), charger_id, reason)
        return {"status": result.status, "details": result.details}

    async def certificates_inventory(*, charger_id: str) -> dict[str, Any]:
        return dict(await rt.certificates.inventory(charger_id))

    async def passwords_change(
        *, actor: dict[str, Any], charger_id: str, reason: str | None
    ) -> dict[str, Any]:
        return await rt.passwords.change(_actor(actor), charger_id, reason)

    async def profile_upgrade(
        *,
        actor: dict[str, Any],
        charger_id: str,
        profile: int,
        root: str | None,
        deadline_seconds: float,
        reason: str | None,
    ) -> Any:
        return await rt.profile_upgrades.upgrade(
            _actor(actor), charger_id, profile, root, deadline_seconds, reason
        )

    async def tokens_changed(*, actor: dict[str, Any]) -> None:
        rt.local_lists.tokens_changed(_actor(actor))

    async def operations_create(*, actor: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return await rt.operations.create(actor=_actor(actor), **kwargs)

    async def operations_cancel(*, operation_id: str, actor: dict[str, Any], reason: str) -> str:
        return str(await rt.operations.cancel(operation_id, _actor(actor), reason))

    async def configuration_apply(
        *, profile_id: str, actor: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        async with rt.engine.connect() as conn:
            query = select(ConfigProfile).where(ConfigProfile.id == profile_id)
            row = (await conn.execute(query)).first()
        if row is None:
            raise LookupError(profile_id)
        return await rt.configuration.apply(row, actor=_actor(actor), **kwargs)

    async def rotations_begin(*, actor: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return await rt.rotations.begin(_actor(actor), **kwargs)

    async def rotations_switch(*, rotation_id: str) -> dict[str, Any]:
        return await rt.rotations.switch(rotation_id)

    async def rotations_finish(
        *, actor: dict[str, Any], rotation_id: str, reason: str
    ) -> dict[str, Any]:
        return await rt.rotations.finish(_actor(actor), rotation_id, reason)

    async def rotations_stop(*, rotation_id: str) -> dict[str, Any]:
        return await rt.rotations.stop(rotation_id)

    async def rotations_settle(*, rotation_id: str) -> None:
        await rt.rotations.status(rotation_id)  # on the leader: settles a finished removal

    async def local_lists_sync(
        *, actor: dict[str, Any], chargers: dict[str, str | None], full: bool, reason: str | None
    ) -> list[dict[str, Any]]:
        results = await local_lists.sync(
            rt.local_lists, _actor(actor), chargers, full=full, reason=reason
        )
        return [dataclasses.asdict(r) for r in results]

    async def firmware_revoked(*, firmware_id: str) -> None:
        await rt.stop_revoked_jobs(firmware_id)

    async def playbooks_reload() -> None:
        await rt.playbooks.reload()

    async def playbooks_resume(*, name: str) -> None:
        await rt.playbooks.resume(name)

    async def playbooks_kill_switch() -> bool:
        return await rt.playbooks.read_switch()

    async def campaigns_facts(
        *, charger_ids: list[str] | None = None, site_id: str | None = None
    ) -> None:
        rt.campaigns.facts_changed(charger_ids or (), site_id)

    handlers: dict[str, Handler] = {
        "jobs.create": jobs_create,
        "jobs.cancel": jobs_cancel,
        "campaigns.create": campaigns_create,
        "campaigns.act": campaigns_act,
        "campaigns.notes": campaigns_notes,
        "campaigns.facts": campaigns_facts,
        "playbooks.reload": playbooks_reload,
        "playbooks.resume": playbooks_resume,
        "playbooks.kill_switch": playbooks_kill_switch,
        "approvals.decide": approvals_decide,
        "kpi_rollup.run": kpi_rollup_run,
        "firmware_feeds.check": feeds_check,
        "certificates.renew": certificates_renew,
        "certificates.inventory": certificates_inventory,
        "passwords.change": passwords_change,
        "profile_upgrades.upgrade": profile_upgrade,
        "local_lists.tokens_changed": tokens_changed,
        "operations.create": operations_create,
        "operations.cancel": operations_cancel,
        "configuration.apply": configuration_apply,
        "rotations.begin": rotations_begin,
        "rotations.switch": rotations_switch,
        "rotations.finish": rotations_finish,
        "rotations.stop": rotations_stop,
        "rotations.settle": rotations_settle,
        "firmware.revoked": firmware_revoked,
        "local_lists.sync": local_lists_sync,
    }
    for name, handler in handlers.items():
        calls.register(name, handler)
