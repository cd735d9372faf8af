"""Which triggers fire, pure: from what a charger reported and ``now``.

The runner keeps one :class:`ChargerFacts` per charger, folds every observation into it with
:func:`observe`, and asks two questions: :func:`on_event` (an event trigger: a firmware
status, a security event, a boot storm, a charger back after a long absence) and :func:`due`
(a condition trigger that needs time: a connector Faulted for N minutes). Each answer is a
:class:`Firing` naming the charger, the connector and the *fault key*: the guard rails count
runs per (charger, fault key) and a condition fault fires once per episode (``since``).
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from evota.playbooks.spec import Trigger, TriggerKind

__all__ = [
    "BUSY",
    "MAX_CONNECTORS",
    "ChargerFacts",
    "ConnectorFact",
    "Firing",
    "JobFact",
    "KpiDay",
    "ObservationKind",
    "Observed",
    "due",
    "in_session",
    "kpi_firings",
    "kpi_value",
    "observe",
    "on_event",
    "stuck_jobs",
]

#: Connector statuses (1.6 and 2.0.1) that mean a vehicle is there or a session runs.
BUSY = frozenset(
    {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied", "Reserved"}
)
#: Boots remembered per charger: enough for any ``repeated_boots`` count the spec allows.
MAX_BOOTS = 100
#: Connectors remembered per charger. OCPP puts no bound on a connector id: a charger that
#: reports thousands of them must not grow the engine's memory (or the copy per status).
MAX_CONNECTORS = 64


class ObservationKind(StrEnum):
    STATUS = "status"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    BOOT = "boot"
    FIRMWARE_STATUS = "firmware_status"
    SECURITY_EVENT = "security_event"


@dataclass(frozen=True, slots=True)
class Observed:
    """One thing a charger did, as the fleet service saw it (``at``: evota's clock).
    ``status`` is the connector status, the firmware status or the security event type."""

    charger_id: str
    kind: ObservationKind
    at: datetime
    connector_id: int = 0
    status: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectorFact:
    status: str
    error_code: str | None
    since: datetime  # when the connector entered this status (Faulted episodes start here)


@dataclass(frozen=True, slots=True)
class ChargerFacts:
    """What the engine knows of one charger; never mutated (``observe`` returns a new one)."""

    connectors: Mapping[int, ConnectorFact] = field(default_factory=dict)
    connected: bool = False
    offline_since: datetime | None = None
    last_boot: datetime | None = None
    boots: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger fired for one charger: start a run for ``fault_key`` (unless a guard says no)."""

    charger_id: str
    connector_id: int | None
    fault_key: str
    reason: str
    since: datetime  # the episode: a condition fault fires once per value of ``since``
    error_code: str | None = None


def observe(facts: ChargerFacts, o: Observed) -> ChargerFacts:
    """``facts`` after ``o``. A status that repeats keeps its ``since`` (a Faulted connector
    reported again after a reboot is the same episode)."""
    match o.kind:
        case ObservationKind.STATUS:
            status = o.status or ""
            old = facts.connectors.get(o.connector_id)
            if old is None and len(facts.connectors) >= MAX_CONNECTORS:
                return facts
            if old is not None and old.status == status:
                if old.error_code == o.error_code:
                    return facts
                fact = ConnectorFact(status, o.error_code, old.since)
            else:
                fact = ConnectorFact(status, o.error_code, o.at)
            return replace(facts, connectors={**facts.connectors, o.connector_id: fact})
        case ObservationKind.CONNECTED:
            return replace(facts, connected=True)
        case ObservationKind.DISCONNECTED:
            return replace(facts, connected=False, offline_since=o.at)
        case ObservationKind.BOOT:
            boots = (*facts.boots, o.at)[-MAX_BOOTS:]
            return replace(facts, last_boot=o.at, boots=boots)
    return facts


def in_session(facts: ChargerFacts) -> bool:
    """Whether a connector of the charger shows a vehicle or a session (never touch it)."""
    return any(f.status in BUSY for f in facts.connectors.values())


def _minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


def on_event(trigger: Trigger, before: ChargerFacts, o: Observed) -> Firing | None:
    """The firing an event trigger makes of ``o`` (``before``: the facts before it)."""
    cid = o.charger_id
    match trigger.kind:
        case TriggerKind.OFFLINE_THEN_BACK if o.kind is ObservationKind.CONNECTED:
            gone = before.offline_since
            if gone is None or before.connected:
                return None
            if o.at - gone <= _minutes(trigger.offline_minutes):
                return None
            away = (o.at - gone).total_seconds() / 60
            reason = f"back after {away:.0f} min offline"
            return Firing(cid, None, "offline_then_back", reason, o.at)
        case TriggerKind.FIRMWARE_STATUS if o.kind is ObservationKind.FIRMWARE_STATUS:
            if not o.status or (trigger.statuses and o.status not in trigger.statuses):
                return None
            return Firing(
                cid, None, f"firmware_status:{o.status}", f"firmware status {o.status}", o.at
            )
        case TriggerKind.SECURITY_EVENT if o.kind is ObservationKind.SECURITY_EVENT:
            if not o.status or (trigger.event_types and o.status not in trigger.event_types):
                return None
            return Firing(
                cid, None, f"security_event:{o.status}", f"security event {o.status}", o.at
            )
        case TriggerKind.REPEATED_BOOTS if o.kind is ObservationKind.BOOT:
            after = observe(before, o)
            since = o.at - _minutes(trigger.within_minutes)
            recent = [b for b in after.boots if b > since]
            if len(recent) < max(1, trigger.count):
                return None
            # once per storm: the boot that reaches the count, not every one after it
            if len([b for b in before.boots if b > since]) >= max(1, trigger.count):
                return None
            reason = f"{len(recent)} boots within {trigger.within_minutes:g} min"
            return Firing(cid, None, "repeated_boots", reason, recent[0])
    return None


def due(trigger: Trigger, charger_id: str, facts: ChargerFacts, now: datetime) -> list[Firing]:
    """Condition triggers that hold at ``now``: every connector Faulted (with an error code in
    the trigger's set, or any) for at least ``for_minutes``, on a connected charger (nothing
    reaches one that is offline; its episode goes on when it is back)."""
    if trigger.kind is not TriggerKind.CONNECTOR_FAULTED or not facts.connected:
        return []
    out = []
    for connector, fact in sorted(facts.connectors.items()):
        if fact.status != "Faulted":
            continue
        if trigger.error_codes and (fact.error_code or "") not in trigger.error_codes:
            continue
        if now - fact.since < _minutes(trigger.for_minutes):
            continue
        reason = (
            f"connector {connector} Faulted ({fact.error_code or 'no error code'}) "
            f"since {fact.since.isoformat(timespec='seconds')}"
        )
        out.append(
            Firing(
                charger_id,
                connector,
                f"connector_faulted:{connector}",
                reason,
                fact.since,
                fact.error_code,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class JobFact:
    """A firmware job that has not finished: in ``state`` since ``since``."""

    job_id: int
    charger_id: str
    state: str
    since: datetime
    campaign_id: str | None = None


def stuck_jobs(trigger: Trigger, jobs: list[JobFact], now: datetime) -> list[Firing]:
    """``job_stuck``: each unfinished job in one state for at least ``for_minutes`` (the
    episode is the state's ``since``: a job that moves on and sticks again fires again)."""
    if trigger.kind is not TriggerKind.JOB_STUCK:
        return []
    out = []
    for job in jobs:
        if now - job.since < _minutes(trigger.for_minutes):
            continue
        campaign = f" of campaign {job.campaign_id}" if job.campaign_id else ""
        reason = (
            f"firmware job {job.job_id}{campaign} {job.state} "
            f"since {job.since.isoformat(timespec='seconds')}"
        )
        out.append(Firing(job.charger_id, None, f"job_stuck:{job.job_id}", reason, job.since))
    return out


@dataclass(frozen=True, slots=True)
class KpiDay:
    """One charger's complete UTC day (the ``charger_days`` row, evota.evidence.daily)."""

    charger_id: str
    day: int  # days since 1970-01-01
    observed_s: float
    connected_s: float
    available_s: float
    sessions: int
    failed_sessions: int
    faults: int
    offline_episodes: int
    reconnects: int


def kpi_value(kpi: str, d: KpiDay) -> float | None:
    """The charger-day's KPI as docs/kpis.md defines it (None: nothing to measure)."""
    match kpi:
        case "availability":
            return d.available_s / d.observed_s if d.observed_s > 0 else None
        case "connected_share":
            return d.connected_s / d.observed_s if d.observed_s > 0 else None
        case "session_success_rate":
            return (d.sessions - d.failed_sessions) / d.sessions if d.sessions > 0 else None
        case "faults" | "failed_sessions" | "offline_episodes" | "reconnects":
            return float(getattr(d, kpi))
    return None


def kpi_firings(trigger: Trigger, days: list[KpiDay]) -> list[Firing]:
    """``kpi_threshold``: each charger-day whose KPI is below ``below`` (or above ``above``);
    the fault key names the day, so a day fires once."""
    if trigger.kind is not TriggerKind.KPI_THRESHOLD or trigger.kpi is None:
        return []
    out = []
    for d in days:
        value = kpi_value(trigger.kpi, d)
        if value is None:
            continue
        if trigger.below is not None and value < trigger.below:
            side, limit = "below", trigger.below
        elif trigger.above is not None and value > trigger.above:
            side, limit = "above", trigger.above
        else:
            continue
        end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=d.day + 1)
        reason = f"{trigger.kpi} {value:.4g} {side} {limit:g} on {(end - timedelta(days=1)).date()}"
        key = f"kpi_threshold:{trigger.kpi}:{d.day}"
        out.append(Firing(d.charger_id, None, key, reason, end))
    return out
