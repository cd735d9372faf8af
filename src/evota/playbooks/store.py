"""Playbooks in the database: create, change (the version grows by one on every change),
switch on and off, delete; and reading their runs. The shell around :mod:`.spec`.

The runner reads what it runs with :func:`load_enabled` and :func:`kill_switch`; the API
tells it about a change (leader calls ``playbooks.*``: the runner leader's, in a cluster)
after every write here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.playbooks import spec
from evota.playbooks.spec import Playbook
from evota.store.models import Charger, PlaybookRun, Switch
from evota.store.models import Playbook as PlaybookRow

__all__ = [
    "OUTCOMES",
    "PlaybookConflict",
    "PlaybookNotFound",
    "Stored",
    "delete_playbook",
    "get",
    "kill_switch",
    "list_playbooks",
    "load_enabled",
    "outcome_counts",
    "put",
    "resume",
    "runs_query",
    "set_kill_switch",
    "set_switches",
    "suspend",
]

log = structlog.get_logger("evota.playbooks")

#: A finished run's outcome (``dry_run``: what a dry run would have done, counted apart).
OUTCOMES = ("resolved", "escalated", "failed", "refused", "suspended", "dry_run")

ScopeFilter = Callable[[Select[Any]], Select[Any]]


class PlaybookNotFound(LookupError):
    """No playbook with this name."""


class PlaybookConflict(ValueError):
    """The playbook exists, or changed since the version the caller read (``field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Stored:
    """A playbook with what the database knows about it."""

    playbook: Playbook
    spec_hash: str
    suspended_reason: str | None
    suspended_at: datetime | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            **spec.to_dict(self.playbook),
            "spec_hash": self.spec_hash,
            "suspended_reason": self.suspended_reason,
            "suspended_at": self.suspended_at,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


def _stored(row: Any) -> Stored:
    # What is stored was validated when written; http webhooks were allowed then or not.
    data = {
        **row.spec,
        "name": row.name,
        "version": row.version,
        "enabled": row.enabled,
        "dry_run": row.dry_run,
    }
    return Stored(
        spec.parse(data, allow_http_webhooks=True),
        row.spec_hash,
        row.suspended_reason,
        row.suspended_at,
        row.created_by,
        row.created_at,
        row.updated_by,
        row.updated_at,
    )


async def get(engine: AsyncEngine, name: str) -> Stored:
    async with engine.connect() as conn:
        row = (await conn.execute(select(PlaybookRow).where(PlaybookRow.name == name))).first()
    if row is None:
        raise PlaybookNotFound(name)
    return _stored(row)


async def list_playbooks(engine: AsyncEngine) -> list[Stored]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(PlaybookRow).order_by(PlaybookRow.name))).all()
    return [_stored(r) for r in rows]


async def load_enabled(engine: AsyncEngine) -> list[Playbook]:
    """What the runner runs: the enabled playbooks that the circuit breaker has not
    suspended, each at its current version."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(PlaybookRow)
                .where(PlaybookRow.enabled.is_(True), PlaybookRow.suspended_reason.is_(None))
                .order_by(PlaybookRow.name)
            )
        ).all()
    loaded = []
    for r in rows:
        try:
            loaded.append(_stored(r).playbook)
        except spec.SpecError as exc:  # stored under older rules: skipped, never the runner's end
            log.error("playbook not loaded", playbook=r.name, field=exc.field, error=exc.message)
    return loaded


def _values(p: Playbook) -> dict[str, Any]:
    return {
        "version": p.version,
        "enabled": p.enabled,
        "dry_run": p.dry_run,
        "spec": spec.definition(p),
        "spec_hash": spec.spec_hash(p),
    }


async def put(
    engine: AsyncEngine,
    playbook: Playbook,
    *,
    actor: str,
    now: datetime,
    expected_version: int | None = None,
    keep_switches: bool = False,
    create_only: bool = False,
) -> tuple[Stored | None, Stored]:
    """Create or change a playbook: (before, after). A change is stored as the next version;
    an identical document changes nothing. ``expected_version``: refuse (conflict) when the
    stored version is another (someone changed it since it was read). ``keep_switches``:
    ``enabled``/``dry_run`` stay as stored (a document that does not mention them).
    ``create_only``: refuse (conflict) when the name exists."""
    try:
        old: Stored | None = await get(engine, playbook.name)
    except PlaybookNotFound:
        old = None
    if old is not None and create_only:
        raise PlaybookConflict("name", f"a playbook named {playbook.name!r} exists")
    if expected_version is not None and (old.playbook.version if old else 0) != expected_version:
        now_at = f"is at version {old.playbook.version}" if old else "does not exist"
        raise PlaybookConflict("version", f"{playbook.name} {now_at}, not {expected_version}")
    if old is None:
        new = replace(playbook, version=1)
        values = {**_values(new), "name": new.name, "created_by": actor, "created_at": now}
        values |= {"updated_by": actor, "updated_at": now}
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(PlaybookRow).values(**values))
        except IntegrityError:
            raise PlaybookConflict("name", f"a playbook named {playbook.name!r} exists") from None
        return None, await get(engine, new.name)
    current = old.playbook
    if keep_switches:
        playbook = replace(playbook, enabled=current.enabled, dry_run=current.dry_run)
    if replace(playbook, version=current.version) == current:
        return old, old
    return old, await _write(
        engine, old, replace(playbook, version=current.version + 1), actor, now
    )


async def _write(
    engine: AsyncEngine, old: Stored, new: Playbook, actor: str, now: datetime, **extra: Any
) -> Stored:
    """Store ``new`` over ``old`` unless someone else wrote in between (a conflict)."""
    values = {**_values(new), "updated_by": actor, "updated_at": now, **extra}
    if new.enabled and not old.playbook.enabled:
        values |= {"suspended_reason": None, "suspended_at": None}  # enabling resumes
    async with engine.begin() as conn:
        result = await conn.execute(
            update(PlaybookRow)
            .where(PlaybookRow.name == new.name, PlaybookRow.version == old.playbook.version)
            .values(**values)
        )
    if result.rowcount != 1:
        raise PlaybookConflict("version", f"{new.name} changed meanwhile; read it again")
    return await get(engine, new.name)


async def set_switches(
    engine: AsyncEngine,
    name: str,
    *,
    actor: str,
    now: datetime,
    enabled: bool | None = None,
    dry_run: bool | None = None,
) -> tuple[Stored, Stored]:
    """Switch a playbook on or off, or into or out of dry-run: (before, after); the next
    version unless nothing changed. Enabling a suspended playbook resumes it."""
    old = await get(engine, name)
    p = old.playbook
    new = replace(
        p,
        enabled=p.enabled if enabled is None else enabled,
        dry_run=p.dry_run if dry_run is None else dry_run,
    )
    resuming = enabled is True and old.suspended_reason is not None
    if new == p and not resuming:
        return old, old
    extra = {"suspended_reason": None, "suspended_at": None} if resuming else {}
    return old, await _write(engine, old, replace(new, version=p.version + 1), actor, now, **extra)


async def suspend(engine: AsyncEngine, name: str, reason: str, now: datetime) -> None:
    """The circuit breaker stops a playbook until an operator resumes (enables) it."""
    async with engine.begin() as conn:
        await conn.execute(
            update(PlaybookRow)
            .where(PlaybookRow.name == name)
            .values(suspended_reason=reason[:500], suspended_at=now)
        )


async def resume(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(PlaybookRow)
            .where(PlaybookRow.name == name)
            .values(suspended_reason=None, suspended_at=None)
        )


KILL_SWITCH = "playbooks.kill_switch"


async def kill_switch(engine: AsyncEngine) -> bool:
    """The operators' kill switch as stored (False when never set)."""
    async with engine.connect() as conn:
        engaged = (
            await conn.execute(select(Switch.engaged).where(Switch.name == KILL_SWITCH))
        ).scalar()
    return bool(engaged)


async def set_kill_switch(engine: AsyncEngine, engaged: bool, by: str, now: datetime) -> None:
    """Stored, so that a restart or a new runner leader keeps it (the runner applies it)."""
    async with engine.begin() as conn:
        changed = await conn.execute(
            update(Switch)
            .where(Switch.name == KILL_SWITCH)
            .values(engaged=engaged, set_by=by[:120], set_at=now)
        )
        if changed.rowcount == 0:
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(Switch).values(
                            name=KILL_SWITCH, engaged=engaged, set_by=by[:120], set_at=now
                        )
                    )
            except IntegrityError:  # set at the same moment elsewhere: this one is the last
                await conn.execute(
                    update(Switch)
                    .where(Switch.name == KILL_SWITCH)
                    .values(engaged=engaged, set_by=by[:120], set_at=now)
                )


async def delete_playbook(engine: AsyncEngine, name: str) -> Stored:
    """Remove a playbook (its runs stay, naming it): what was removed."""
    old = await get(engine, name)
    async with engine.begin() as conn:
        await conn.execute(delete(PlaybookRow).where(PlaybookRow.name == name))
    return old


# -- runs ----------------------------------------------------------------------------------


def runs_query(
    scope: ScopeFilter,
    *,
    playbook: str | None = None,
    charger_id: str | None = None,
    outcome: str | None = None,
    state: str | None = None,
) -> Select[Any]:
    """Runs on the chargers ``scope`` admits (a run on a charger outside it does not exist
    for the caller), filtered; newest first is the caller's order."""
    query = scope(select(PlaybookRun).join(Charger, Charger.id == PlaybookRun.charger_id))
    conditions = []
    if playbook is not None:
        conditions.append(PlaybookRun.playbook == playbook)
    if charger_id is not None:
        conditions.append(PlaybookRun.charger_id == charger_id)
    if outcome is not None:
        conditions.append(PlaybookRun.outcome == outcome)
    if state is not None:
        conditions.append(PlaybookRun.state == state)
    return query.where(and_(*conditions)) if conditions else query


async def outcome_counts(
    engine: AsyncEngine, scope: ScopeFilter, names: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Per playbook, its runs (on chargers in scope) by outcome, plus ``in_progress``:
    which playbook works."""
    grouped: Any = (
        select(PlaybookRun.playbook, PlaybookRun.outcome, func.count())
        .join(Charger, Charger.id == PlaybookRun.charger_id)
        .group_by(PlaybookRun.playbook, PlaybookRun.outcome)
    )
    query: Any = scope(grouped)
    if names is not None:
        query = query.where(PlaybookRun.playbook.in_(list(names)))
    counts: dict[str, dict[str, int]] = {}
    async with engine.connect() as conn:
        for r in (await conn.execute(query)).all():
            name, outcome, n = r[0], r[1], r[2]
            row = counts.setdefault(name, empty_counts())
            key = outcome if outcome in OUTCOMES else "in_progress" if outcome is None else "other"
            row[key] = row.get(key, 0) + int(n)
    return counts


def empty_counts() -> dict[str, int]:
    return {o: 0 for o in (*OUTCOMES, "in_progress")}
