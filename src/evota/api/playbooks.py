"""Playbooks: declarative self-healing (YAML or JSON documents), switched on and off, their
runs and outcomes, and the global kill switch (docs/playbooks.md).

A playbook sends commands on its own, so writing one is confined like a configuration
profile: a scoped operator changes (and sees) only playbooks whose target stays inside its
scope; one reaching further (say, a whole vendor) needs the permission fleet-wide. Runs and
outcome counts are narrowed to the chargers the caller can see.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from evota.api.auditing import note
from evota.api.deps import Principal, RuntimeDep, require, scope_filter, target_allowed
from evota.api.leader_calls import tell
from evota.api.pages import fetch_page
from evota.api.params import Limit, Offset, text
from evota.api.problems import AUTHENTICATED, Problem, problems
from evota.playbooks import spec, store
from evota.playbooks.spec import SpecError
from evota.runtime import Runtime
from evota.store.models import PlaybookRun

router = APIRouter(prefix="/api/v1/playbooks", tags=["playbooks"], responses=AUTHENTICATED)

EXAMPLE: dict[str, Any] = {
    "name": "stuck-connector",
    "description": "unlock, soft reset, then people",
    "trigger": {
        "kind": "connector_faulted",
        "error_codes": ["ConnectorLockFailure"],
        "for_minutes": 10,
    },
    "target": {"sites": ["berlin-1"]},
    "steps": [
        {
            "command": "unlock-connector",
            "params": {"connector_id": "{connector}"},
            "wait": {"until": "connector_available", "minutes": 5},
        },
        {
            "command": "reset",
            "params": {"type": "Soft"},
            "wait": {"until": "connector_available", "minutes": 10},
        },
        {"escalate": {"alert": True, "message": "connector still faulted"}},
    ],
}
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
DOCUMENT = {
    "requestBody": {
        "required": True,
        "description": "the playbook as JSON, or as YAML text (docs/playbooks.md: the format)",
        "content": {
            "application/json": {"schema": {"type": "object", "examples": [EXAMPLE]}},
            "application/yaml": {"schema": {"type": "string", "maxLength": spec.MAX_TEXT_BYTES}},
        },
    }
}
Name = Annotated[
    str, Path(min_length=1, max_length=64, pattern=spec.NAME.pattern, description="its name")
]


class PlaybookOut(BaseModel):
    """A playbook at its current version, with what its runs (on chargers the caller can
    see) came to."""

    name: str
    version: int
    enabled: bool
    dry_run: bool
    description: str
    trigger: dict[str, Any]
    target: dict[str, Any]
    steps: list[dict[str, Any]]
    guards: dict[str, Any]
    spec_hash: str = Field(description="SHA-256 of the definition (what the audit log names)")
    suspended_reason: str | None = Field(description="why the circuit breaker suspended it")
    suspended_at: datetime | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    outcomes: dict[str, int] = Field(
        description="runs by outcome: " + ", ".join((*store.OUTCOMES, "in_progress"))
    )


class PlaybookList(BaseModel):
    items: list[PlaybookOut]
    total: int
    kill_switch: bool = Field(description="true: no playbook runs at all")


class RunOut(BaseModel):
    id: str
    playbook: str
    playbook_version: int
    charger_id: str
    connector_id: int | None
    site_id: str | None
    fault_key: str
    trigger: dict[str, Any]
    state: str
    step_index: int
    outcome: str | None
    reason: str | None
    dry_run: bool
    wait_until: datetime | None
    approval_id: str | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    log: list[dict[str, Any]] = Field(description="what the run did (or in dry-run would have)")


class RunPage(BaseModel):
    items: list[RunOut]
    total: int
    limit: int
    offset: int


class DryRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"dry_run": True}]})
    dry_run: bool = Field(description="record what it would do instead of doing it")


class KillSwitch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kill_switch": True}]}
    )
    kill_switch: bool = Field(description="true: no playbook starts or goes on")


# -- helpers -------------------------------------------------------------------------------


def _runner(rt: Runtime) -> Any:
    """The playbook runner (evota.playbooks.runner), when this process runs one."""
    return getattr(rt, "playbooks", None)


async def _changed(rt: Runtime) -> None:
    """Tell the runner (the runner leader's, in a cluster), so the next trigger sees the
    new version."""
    if _runner(rt) is not None:
        await tell(rt, "playbooks.reload")


async def _kill_switch(rt: Runtime) -> bool:
    """As stored (the runner stores it engaged when it starts with
    ``EVOTA_PLAYBOOKS_ENABLED=false``): the same on every node."""
    return await store.kill_switch(rt.engine)


def _invalid(exc: SpecError) -> Problem:
    return Problem(422, "Invalid playbook", exc.message, exc.field or "(body)")


def _target(p: spec.Playbook) -> dict[str, Any]:
    target: dict[str, Any] = spec.definition(p)["target"]
    return target


async def _visible(rt: Runtime, who: Principal, name: str, permission: str) -> store.Stored:
    """The playbook if its target stays inside where ``who`` holds ``permission``; 404
    otherwise, as for a name that does not exist (scopes do not reveal what exists)."""
    try:
        stored = await store.get(rt.engine, name)
    except store.PlaybookNotFound:
        stored = None
    if stored is None or not await target_allowed(rt, who, permission, _target(stored.playbook)):
        raise Problem(404, "Unknown playbook", f"no playbook {name!r}", "playbook")
    return stored


async def _confined(rt: Runtime, who: Principal, p: spec.Playbook) -> None:
    if not await target_allowed(rt, who, "playbook.write", _target(p)):
        raise Problem(
            403,
            "Forbidden",
            "the target reaches chargers outside your playbook.write scope: confine it to "
            "your sites, regions, tags or chargers",
            "target",
            permission="playbook.write",
        )


async def _document(request: Request, rt: Runtime) -> tuple[spec.Playbook, set[str]]:
    """The playbook in the body (JSON or YAML, at most spec.MAX_TEXT_BYTES) and which of
    ``enabled``/``dry_run``/``version`` it states."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and kind not in YAML_TYPES:
        raise Problem(
            415, "Unsupported media type", "send application/json or application/yaml", "(body)"
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > spec.MAX_TEXT_BYTES:
            raise Problem(413, "Playbook too large", f"at most {spec.MAX_TEXT_BYTES} bytes")
    allow_http = rt.settings.playbook_webhook_allow_http
    try:
        # YAML is parsed in pure Python (tens of ms for 64 KiB): off the event loop, which
        # also serves the chargers.
        playbook, data = await asyncio.to_thread(_parse, bytes(raw), allow_http)
    except SpecError as exc:
        raise _invalid(exc) from None
    return playbook, {k for k in ("enabled", "dry_run", "version") if k in data}


def _parse(raw: bytes, allow_http: bool) -> tuple[spec.Playbook, dict[str, Any]]:
    data = spec.load_text(raw)
    playbook = spec.parse(data, allow_http_webhooks=allow_http)
    assert isinstance(data, dict)  # parse accepts nothing else
    return playbook, data


async def _out(rt: Runtime, who: Principal, stored: store.Stored) -> dict[str, Any]:
    counts = await store.outcome_counts(
        rt.engine, scope_filter(who, "playbook.read"), [stored.playbook.name]
    )
    return _item(stored, counts)


def _item(stored: store.Stored, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        **stored.to_dict(),
        "outcomes": counts.get(stored.playbook.name, store.empty_counts()),
    }


def _audited(stored: store.Stored | None) -> dict[str, Any] | None:
    """A playbook as its audit entry compares it (what it does, whether it is on)."""
    if stored is None:
        return None
    return {**spec.to_dict(stored.playbook), "spec_hash": stored.spec_hash}


def _note(
    request: Request, before: store.Stored | None, after: store.Stored | None, **extra: Any
) -> None:
    """The audit entry: the target, what changed, and the version and spec hash now in
    force, so an entry that enabled a playbook names exactly what was switched on."""
    subject = after or before
    assert subject is not None
    p = subject.playbook
    note(
        request,
        "playbook",
        p.name,
        _audited(before),
        _audited(after),
        version=p.version,
        spec_hash=subject.spec_hash,
        enabled=p.enabled,
        dry_run=p.dry_run,
        **extra,
    )


async def _save(
    rt: Runtime,
    who: Principal,
    p: spec.Playbook,
    stated: set[str],
    *,
    create: bool = False,
) -> tuple[store.Stored | None, store.Stored]:
    await _confined(rt, who, p)
    try:
        before, after = await store.put(
            rt.engine,
            p,
            actor=who.name,
            now=rt.clock.now(),
            create_only=create,
            expected_version=p.version if "version" in stated else None,
            keep_switches=not ({"enabled", "dry_run"} & stated),
        )
    except store.PlaybookConflict as exc:
        raise Problem(409, "Playbook conflict", exc.message, exc.field) from None
    if before is None or before.playbook != after.playbook:
        await _changed(rt)
    return before, after


# -- routes --------------------------------------------------------------------------------


@router.get("", response_model=PlaybookList)
async def list_playbooks(
    rt: RuntimeDep, who: Principal = require("playbook.read")
) -> dict[str, Any]:
    """The playbooks the caller can see (those confined to its scope), by name, each with
    its runs' outcomes; and whether the kill switch is on."""
    visible = [
        s
        for s in await store.list_playbooks(rt.engine)
        if await target_allowed(rt, who, "playbook.read", _target(s.playbook))
    ]
    counts = await store.outcome_counts(rt.engine, scope_filter(who, "playbook.read"))
    return {
        "items": [_item(s, counts) for s in visible],
        "total": len(visible),
        "kill_switch": await _kill_switch(rt),
    }


@router.post(
    "",
    status_code=201,
    response_model=PlaybookOut,
    openapi_extra=DOCUMENT,
    responses=problems(409, 413, 415),
)
async def create_playbook(
    request: Request, rt: RuntimeDep, who: Principal = require("playbook.write")
) -> dict[str, Any]:
    """Create a playbook from a JSON or YAML document (version 1; off unless it says
    ``enabled: true``); 409 if the name exists."""
    p, _stated = await _document(request, rt)
    if p.version != 1:
        raise Problem(422, "Invalid playbook", "a new playbook starts at version 1", "version")
    _, after = await _save(rt, who, p, set(), create=True)
    _note(request, None, after)
    return await _out(rt, who, after)


@router.get("/runs", response_model=RunPage)
async def list_runs(
    rt: RuntimeDep,
    who: Principal = require("playbook.read"),
    playbook: str | None = text("only this playbook's runs", 64),
    charger_id: str | None = text("only runs on this charger", 48),
    outcome: str | None = text("one of " + ", ".join((*store.OUTCOMES, "in_progress")), 24),
    state: str | None = text("only runs in this state", 24),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Runs on the chargers the caller can see, newest first, with their logs."""
    in_progress = outcome == "in_progress"
    if outcome is not None and not in_progress and outcome not in store.OUTCOMES:
        raise Problem(422, "Invalid request", f"unknown outcome {outcome!r}", "outcome")
    query = store.runs_query(
        scope_filter(who, "playbook.read"),
        playbook=playbook,
        charger_id=charger_id,
        outcome=None if in_progress else outcome,
        state=state,
    )
    if in_progress:
        query = query.where(PlaybookRun.outcome.is_(None))
    total, rows = await fetch_page(
        rt.engine, query, (PlaybookRun.started_at.desc(), PlaybookRun.id), limit, offset
    )
    items = [{c: getattr(r, c) for c in RunOut.model_fields} for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/kill-switch", response_model=KillSwitch)
async def get_kill_switch(
    rt: RuntimeDep, _who: Principal = require("playbook.killswitch")
) -> dict[str, Any]:
    return {"kill_switch": await _kill_switch(rt)}


@router.put("/kill-switch", response_model=KillSwitch, responses=problems(503))
async def put_kill_switch(
    body: KillSwitch,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("playbook.killswitch"),
) -> dict[str, Any]:
    """On: no playbook starts a run, and runs in progress end (``suspended``) before their
    next command. Stored, so it holds across restarts and a new runner leader
    (``EVOTA_PLAYBOOKS_ENABLED=false`` engages it at every start)."""
    if _runner(rt) is None:
        raise Problem(503, "No playbook runner", "this process runs no playbooks", "kill_switch")
    before = await _kill_switch(rt)
    await store.set_kill_switch(rt.engine, body.kill_switch, who.name, rt.clock.now())
    await tell(rt, "playbooks.kill_switch")  # applied by the runner (the leader's) now
    after = await _kill_switch(rt)
    note(request, "playbooks", "kill-switch", {"kill_switch": before}, {"kill_switch": after})
    return {"kill_switch": after}


@router.get("/{playbook}", response_model=PlaybookOut, responses=problems(404))
async def get_playbook(
    playbook: Name, rt: RuntimeDep, who: Principal = require("playbook.read")
) -> dict[str, Any]:
    return await _out(rt, who, await _visible(rt, who, playbook, "playbook.read"))


@router.put(
    "/{playbook}",
    response_model=PlaybookOut,
    openapi_extra=DOCUMENT,
    responses={
        201: {"description": "Created", "model": PlaybookOut},
        **problems(404, 409, 413, 415),
    },
)
async def put_playbook(
    playbook: Name,
    request: Request,
    response: Response,
    rt: RuntimeDep,
    who: Principal = require("playbook.write"),
) -> dict[str, Any]:
    """Create or change a playbook (``evota playbook apply``): a change is the next version;
    ``enabled`` and ``dry_run`` stay as they are unless the document states them; a stated
    ``version`` must be the current one (409 otherwise: someone changed it meanwhile)."""
    try:
        await store.get(rt.engine, playbook)
        exists = True
    except store.PlaybookNotFound:
        exists = False
    if exists:
        await _visible(rt, who, playbook, "playbook.write")
    p, stated = await _document(request, rt)
    if p.name != playbook:
        raise Problem(
            422, "Invalid playbook", f"the document names {p.name!r}, not {playbook!r}", "name"
        )
    before, after = await _save(rt, who, p, stated)
    _note(request, before, after)
    if before is None:
        response.status_code = 201
    return await _out(rt, who, after)


@router.delete("/{playbook}", status_code=204, response_class=Response, responses=problems(404))
async def delete_playbook(
    playbook: Name, request: Request, rt: RuntimeDep, who: Principal = require("playbook.write")
) -> Response:
    """Remove a playbook; its runs stay (naming it and its version)."""
    stored = await _visible(rt, who, playbook, "playbook.write")
    try:
        await store.delete_playbook(rt.engine, playbook)
    except store.PlaybookNotFound:
        raise Problem(404, "Unknown playbook", f"no playbook {playbook!r}", "playbook") from None
    _note(request, stored, None)
    await _changed(rt)
    return Response(status_code=204)


async def _switch(
    request: Request, rt: Runtime, who: Principal, playbook: str, **switches: bool
) -> dict[str, Any]:
    await _visible(rt, who, playbook, "playbook.write")
    try:
        before, after = await store.set_switches(
            rt.engine, playbook, actor=who.name, now=rt.clock.now(), **switches
        )
    except store.PlaybookNotFound:
        raise Problem(404, "Unknown playbook", f"no playbook {playbook!r}", "playbook") from None
    except store.PlaybookConflict as exc:
        raise Problem(409, "Playbook conflict", exc.message, exc.field) from None
    resumed = before.suspended_reason is not None and after.suspended_reason is None
    _note(request, before, after, resumed=resumed)
    runner = _runner(rt)
    if resumed and runner is not None:  # the circuit breaker's memory starts afresh
        await tell(rt, "playbooks.resume", name=playbook)
    elif after is not before:
        await _changed(rt)
    return await _out(rt, who, after)


@router.post("/{playbook}/enable", response_model=PlaybookOut, responses=problems(404, 409))
async def enable_playbook(
    playbook: Name, request: Request, rt: RuntimeDep, who: Principal = require("playbook.write")
) -> dict[str, Any]:
    """Switch it on (the next version; a suspended playbook resumes). The audit entry names
    the version and the spec hash switched on."""
    return await _switch(request, rt, who, playbook, enabled=True)


@router.post("/{playbook}/disable", response_model=PlaybookOut, responses=problems(404, 409))
async def disable_playbook(
    playbook: Name, request: Request, rt: RuntimeDep, who: Principal = require("playbook.write")
) -> dict[str, Any]:
    """Switch it off: no new runs; runs in progress end before their next step."""
    return await _switch(request, rt, who, playbook, enabled=False)


@router.put("/{playbook}/dry-run", response_model=PlaybookOut, responses=problems(404, 409))
async def set_dry_run(
    playbook: Name,
    body: DryRunIn,
    request: Request,
    rt: RuntimeDep,
    who: Principal = require("playbook.write"),
) -> dict[str, Any]:
    """Dry-run on: runs record what they would have done and send nothing."""
    return await _switch(request, rt, who, playbook, dry_run=body.dry_run)
