"""The imperative shell of configuration: fetch what chargers report, compare, apply profiles.

Fetching: every charger's full configuration (GetConfiguration without keys) is read when it
boots and is accepted, and again when the stored copy is older than
``EVOTA_CONFIG_POLL_HOURS``; each fetch replaces the charger's ``ChargerSetting`` rows and
leaves a ``configuration`` charger event saying whether it matches the profiles covering it.
These automatic reads go straight to the gateway, *not* through the audited command path:
they are evota's own bookkeeping on every boot of every charger, and an audit entry each
would bury the operator actions the audit log exists for. Reads an operator asks for
(``get-configuration``) and every change (ChangeConfiguration) are audited as usual.

Applying a profile is a bulk operation (staged, rate limited, approved like any other) whose
per-charger step, ``apply-config-profile``, sends ChangeConfiguration for each drifted key
that can be fixed, then fetches the charger's configuration again so drift reports show the
result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from evota.audit.log import Actor
from evota.clock import Clock
from evota.control import catalog, commands, profiles
from evota.control import operation as op
from evota.control.operations import Info, OperationRunner, Outcome, SendFn
from evota.fleet import vendors
from evota.periodic import raise_if_cancelled
from evota.store.models import Charger, ChargerEvent, ChargerSetting, ConfigProfile

log = structlog.get_logger("evota.configuration")

APPLY = "apply-config-profile"
_CHUNK = 500

FetchFn = Callable[[str, commands.Command], Awaitable[commands.CommandResult]]


def reported_of(details: Mapping[str, Any]) -> dict[str, profiles.Reported]:
    """A GetConfiguration answer's keys; entries that cannot be stored are left out."""
    out: dict[str, profiles.Reported] = {}
    for item in details.get("configuration") or ():
        if not isinstance(item, Mapping):
            continue
        key, value = item.get("key"), item.get("value")
        if not isinstance(key, str) or not 1 <= len(key) <= profiles.MAX_KEY:
            continue
        if value is not None and (not isinstance(value, str) or len(value) > profiles.MAX_VALUE):
            continue
        out[key] = profiles.Reported(value, bool(item.get("readonly", False)))
    return out


class ConfigurationService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        fetch_send: FetchFn,
        send: SendFn,
        runner: OperationRunner,
        ready: Callable[[str], bool],
        connected_ids: Callable[[], Iterable[str]],
        poll_hours: float = 24.0,
        boot_delay: float = 1.0,
        concurrency: int = 10,
        profile_for: Callable[[str], vendors.VendorProfile] | None = None,
    ) -> None:
        self._engine = engine
        # The charger's vendor profile: its names for standard keys (config_keys). Drift is
        # compared in standard names; ChangeConfiguration is sent with the vendor's name.
        self._profile_for = profile_for or (lambda _charger_id: vendors.DEFAULT)
        self._clock = clock
        self._fetch_send = fetch_send
        self._send = send
        self.runner = runner
        self._ready = ready
        self._connected_ids = connected_ids
        self.poll_interval = timedelta(hours=poll_hours)
        self.boot_delay = boot_delay
        self._concurrency = concurrency
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._booting: set[str] = set()  # read by their boot timer, not by the poll
        self._attempted: dict[str, datetime] = {}  # so a charger that fails is not re-asked

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.runner.add_step(APPLY, self._apply_step)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"config-fetch-{i}")
            for i in range(self._concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._poll(), name="config-poll"))

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def charger_ready(self, charger_id: str) -> None:
        """The fleet's hook: a charger booted and was accepted; read its configuration soon
        (after the BootNotification answer has reached it)."""
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._booting.discard(charger_id)
            self.enqueue(charger_id)

        self._booting.add(charger_id)
        timer = loop.call_later(self.boot_delay, fire)
        self._timers.add(timer)

    def enqueue(self, charger_id: str) -> None:
        if charger_id not in self._queued:
            self._queued.add(charger_id)
            self._queue.put_nowait(charger_id)

    async def _work(self) -> None:
        while True:
            cid = await self._queue.get()
            self._queued.discard(cid)
            if not self._ready(cid):
                continue
            try:
                await self.fetch(cid)
            except commands.CommandError as exc:
                log.info("configuration fetch failed", charger_id=cid, reason=exc.reason)
            except Exception:
                raise_if_cancelled()
                log.exception("configuration fetch failed", charger_id=cid)

    async def _poll(self) -> None:
        """Queue connected chargers whose stored configuration is older than the interval."""
        tick = min(60.0, max(0.2, self.poll_interval.total_seconds() / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                for cid in await self.due():
                    self.enqueue(cid)
            except Exception:
                raise_if_cancelled()
                log.exception("configuration poll failed")

    async def due(self) -> list[str]:
        ids = sorted(c for c in self._connected_ids() if self._ready(c) and c not in self._booting)
        if not ids:
            return []
        cutoff = self._clock.now() - self.poll_interval
        fresh: set[str] = set()
        async with self._engine.connect() as conn:
            for i in range(0, len(ids), _CHUNK):
                fresh.update(
                    (
                        await conn.execute(
                            select(ChargerSetting.charger_id)
                            .where(ChargerSetting.charger_id.in_(ids[i : i + _CHUNK]))
                            .group_by(ChargerSetting.charger_id)
                            .having(func.min(ChargerSetting.fetched_at) > cutoff)
                        )
                    ).scalars()
                )
        return [c for c in ids if c not in fresh and self._attempted.get(c, cutoff) <= cutoff]

    # -- fetching -------------------------------------------------------------------------------
    async def fetch(self, charger_id: str) -> dict[str, profiles.Reported]:
        """Read the charger's whole configuration and store it; raises CommandError."""
        self._attempted[charger_id] = self._clock.now()
        result = await self._fetch_send(charger_id, commands.GetConfiguration())
        reported = reported_of(result.details)
        standard = vendors.standard_keys(self._profile_for(charger_id), reported)
        now = self._clock.now()
        desired = await self._covering(charger_id)
        found = [
            {"profile": name, **row.to_dict()}
            for name, settings in desired
            for row in profiles.drift(charger_id, settings, standard)
        ]
        status = "drift" if found else ("in_sync" if desired else "fetched")
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(ChargerSetting).where(ChargerSetting.charger_id == charger_id)
            )
            if reported:
                await conn.execute(
                    insert(ChargerSetting),
                    [
                        {
                            "charger_id": charger_id,
                            "key": key,
                            "value": r.value,
                            "readonly": r.readonly,
                            "fetched_at": now,
                        }
                        for key, r in reported.items()
                    ],
                )
            await conn.execute(
                insert(ChargerEvent).values(
                    charger_id=charger_id,
                    kind="configuration",
                    status=status,
                    data={"keys": len(reported), "drift": found[:50]},
                    received_at=now,
                )
            )
        if found:
            log.info("configuration drift", charger_id=charger_id, keys=[d["key"] for d in found])
        return reported

    async def _covering(self, charger_id: str) -> list[tuple[str, dict[str, str]]]:
        """(name, settings) of every profile whose target selects this charger."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ConfigProfile.name, ConfigProfile.target, ConfigProfile.settings)
                )
            ).all()
            if not rows:
                return []
            fleet = await self.runner.snapshots(conn, lambda q: q.where(Charger.id == charger_id))
        out = []
        for r in rows:
            try:
                query = op.query_from_dict(r.target)
            except op.OperationError:
                continue
            if op.select_chargers(query, fleet):
                out.append((r.name, dict(r.settings)))
        return out

    async def configs(self, charger_ids: Sequence[str]) -> dict[str, dict[str, profiles.Reported]]:
        """The stored configuration of each charger that has one, in standard key names."""
        out: dict[str, dict[str, profiles.Reported]] = {}
        ids = list(charger_ids)
        async with self._engine.connect() as conn:
            for i in range(0, len(ids), _CHUNK):
                rows = (
                    await conn.execute(
                        select(
                            ChargerSetting.charger_id,
                            ChargerSetting.key,
                            ChargerSetting.value,
                            ChargerSetting.readonly,
                        ).where(ChargerSetting.charger_id.in_(ids[i : i + _CHUNK]))
                    )
                ).all()
                for r in rows:
                    out.setdefault(r.charger_id, {})[r.key] = profiles.Reported(r.value, r.readonly)
        return {cid: vendors.standard_keys(self._profile_for(cid), c) for cid, c in out.items()}

    # -- drift and apply ------------------------------------------------------------------------
    async def report(
        self, profile: Any, narrow: Callable[[Select[Any]], Select[Any]] | None = None
    ) -> profiles.Report:
        """The drift of every charger the profile covers (within ``narrow``)."""
        ids, _missing = await self.runner.resolve(op.query_from_dict(profile.target), narrow)
        return profiles.report(dict(profile.settings), ids, await self.configs(ids))

    async def apply(
        self,
        profile: Any,
        *,
        actor: Actor,
        reason: str,
        charger_ids: Sequence[str],
        stages: Sequence[Any] | None = None,
        max_failure_rate: float = 0.2,
        rate_per_second: float = 10.0,
    ) -> dict[str, Any]:
        """An operation fixing the drift on ``charger_ids``; the settings are copied into it,
        so what a second operator approves is what is applied."""
        return await self.runner.create(
            actor=actor,
            command=APPLY,
            params={"profile_id": profile.id, "settings": dict(profile.settings)},
            charger_ids=charger_ids,
            reason=reason,
            target=dict(profile.target),
            stages=stages,
            max_failure_rate=max_failure_rate,
            rate_per_second=rate_per_second,
            profile_id=profile.id,
        )

    async def _apply_step(self, info: Info, actor: Actor, charger_id: str) -> Outcome:
        desired: dict[str, str] = dict(info.params.get("settings") or {})
        profile = self._profile_for(charger_id)
        config = (await self.configs([charger_id])).get(charger_id)
        if config is None:
            config = vendors.standard_keys(profile, await self.fetch(charger_id))
        todo = [d for d in profiles.drift(charger_id, desired, config) if d.fixable]
        if not todo:
            return Outcome(True, "InSync", {"changed": {}})
        spec = catalog.get("change-configuration")
        if spec is None:
            raise RuntimeError("change-configuration is not in the command catalog")
        answers: dict[str, str] = {}
        for d in todo:
            key = vendors.config_key(profile, d.key)
            params = spec.params.model_validate({"key": key, "value": d.desired})
            try:
                result = await self._send(actor, charger_id, spec, params, info.reason)
                answers[d.key] = result.status
            except commands.CommandError as exc:
                answers[d.key] = f"error:{exc.reason}"
                if isinstance(exc, commands.ChargerOffline):
                    break
        remaining: list[str] = []
        with contextlib.suppress(commands.CommandError):
            after = vendors.standard_keys(profile, await self.fetch(charger_id))
            remaining = [d.key for d in profiles.drift(charger_id, desired, after) if d.fixable]
        rebooting = [k for k, s in answers.items() if s == "RebootRequired"]
        failed = [s for k, s in answers.items() if s not in commands.SUCCESS]
        ok = not failed and len(answers) == len(todo)
        status = failed[0] if failed else ("RebootRequired" if rebooting else "Accepted")
        detail = {"changed": answers, "reboot_required": rebooting, "remaining_drift": remaining}
        return Outcome(ok, status, detail)
