"""One charger's UTC day from what evota stored, pure: the pre-aggregate KPIs are sums of.

The shell (:mod:`evota.evidence.rollup`) reads a charger's events of one day and the state
the previous day ended in, and :func:`roll` walks them. Definitions (docs/kpis.md):

- **connected**: between a ``connected`` and the next ``disconnected`` charger event.
- **available**: connected, at least one connector (id > 0) has reported a status, and every
  connector with a known status (connector 0 included) is in :data:`OPERATIVE` (the health
  gate's set: Available, Preparing, Charging, SuspendedEV/EVSE, Finishing, Reserved,
  Occupied). Statuses survive a reconnect until the charger reports new ones.
- **offline episode**: a disconnection that lasts at least ``offline_after`` (5 minutes);
  counted at the moment it reaches that length, so a day split at any instant counts it once.
- **reconnect**: a ``connected`` event after an earlier connection (the first ever is not).
- **fault**: a connector turning Faulted (or changing error code while Faulted), by code.
- **session**: counted on the day it ended; failed when its outcome is ``interrupted``.
- **repair**: the charger's connectors all operative again after one was Faulted or
  Unavailable; counted on the day of the repair with its whole duration (outages span days).
- **version**: the firmware a boot reported or a succeeded update/rollback job installed;
  the row keeps the version at day end and whether it changed during the day.

Durations are summed as :class:`timedelta` (whole microseconds), so splitting a day at any
instant and carrying the state gives exactly the same totals (the property tests check it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from evota.rollout.gate import OPERATIVE

#: A connector in one of these is out of order: the charger is under repair until it is not.
OUT_OF_ORDER = frozenset({"Faulted", "Unavailable"})
OFFLINE_AFTER = timedelta(minutes=5)
DAY = timedelta(days=1)
EPOCH = date(1970, 1, 1)


def day_number(at: datetime | date) -> int:
    """Days since 1970-01-01 of ``at`` (a UTC instant or a date)."""
    d = at.astimezone(UTC).date() if isinstance(at, datetime) else at
    return (d - EPOCH).days


def day_start(day: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)


def day_date(day: int) -> date:
    return EPOCH + timedelta(days=day)


@dataclass(frozen=True, slots=True)
class Connected:
    at: datetime


@dataclass(frozen=True, slots=True)
class Disconnected:
    at: datetime


@dataclass(frozen=True, slots=True)
class Status:
    at: datetime
    connector_id: int
    status: str
    error_code: str = "NoError"


@dataclass(frozen=True, slots=True)
class SessionEnded:
    at: datetime
    failed: bool


@dataclass(frozen=True, slots=True)
class VersionSeen:
    at: datetime
    version: str


Event = Connected | Disconnected | Status | SessionEnded | VersionSeen


@dataclass(frozen=True, slots=True)
class State:
    """What a charger's next instant starts from (stored as a day row's ``end_state``)."""

    connected: bool = False
    ever_connected: bool = False
    offline_since: datetime | None = None  # disconnected at, while not yet counted
    connectors: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    outage_since: datetime | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "ever_connected": self.ever_connected,
            "offline_since": self.offline_since.isoformat() if self.offline_since else None,
            "connectors": {str(c): list(s) for c, s in sorted(self.connectors.items())},
            "outage_since": self.outage_since.isoformat() if self.outage_since else None,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> State:
        if not data:
            return cls()

        def instant(value: Any) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        connectors = {
            int(c): (str(s[0]), str(s[1]))
            for c, s in (data.get("connectors") or {}).items()
            if isinstance(s, list | tuple) and len(s) == 2
        }
        version = data.get("version")
        return cls(
            connected=bool(data.get("connected")),
            ever_connected=bool(data.get("ever_connected")),
            offline_since=instant(data.get("offline_since")),
            connectors=connectors,
            outage_since=instant(data.get("outage_since")),
            version=version if isinstance(version, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """What happened in a stretch of time; two adjacent stretches add up."""

    observed: timedelta = timedelta(0)
    connected: timedelta = timedelta(0)
    available: timedelta = timedelta(0)
    offline_episodes: int = 0
    reconnects: int = 0
    faults: Mapping[str, int] = field(default_factory=dict)
    sessions: int = 0
    failed_sessions: int = 0
    repairs: int = 0
    repair_time: timedelta = timedelta(0)
    repair_s2: float = 0.0  # sum of squared repair times in seconds (for the MTTR's CI)
    version_changed: bool = False

    def __add__(self, other: Totals) -> Totals:
        faults = dict(self.faults)
        for code, n in other.faults.items():
            faults[code] = faults.get(code, 0) + n
        return Totals(
            self.observed + other.observed,
            self.connected + other.connected,
            self.available + other.available,
            self.offline_episodes + other.offline_episodes,
            self.reconnects + other.reconnects,
            faults,
            self.sessions + other.sessions,
            self.failed_sessions + other.failed_sessions,
            self.repairs + other.repairs,
            self.repair_time + other.repair_time,
            self.repair_s2 + other.repair_s2,
            self.version_changed or other.version_changed,
        )

    @property
    def fault_count(self) -> int:
        return sum(self.faults.values())


def operative(connectors: Mapping[int, tuple[str, str]]) -> bool:
    """Every known connector operative, and at least one real connector (id > 0) known."""
    return any(c > 0 for c in connectors) and all(s[0] in OPERATIVE for s in connectors.values())


def _out_of_order(connectors: Mapping[int, tuple[str, str]]) -> bool:
    return any(s[0] in OUT_OF_ORDER for s in connectors.values())


class _Walk:
    """Mutable accumulator for one :func:`roll` call (never escapes it)."""

    def __init__(self, state: State, start: datetime) -> None:
        self.connected = state.connected
        self.ever = state.ever_connected
        self.offline_since = state.offline_since
        self.connectors = dict(state.connectors)
        self.outage_since = state.outage_since
        self.version = state.version
        self.t = start
        self.conn_time = timedelta(0)
        self.avail_time = timedelta(0)
        self.episodes = 0
        self.reconnects = 0
        self.faults: dict[str, int] = {}
        self.sessions = 0
        self.failed = 0
        self.repairs = 0
        self.repair_time = timedelta(0)
        self.repair_s2 = 0.0
        self.changed = False

    def advance(self, to: datetime, *, inclusive: bool, offline_after: timedelta) -> None:
        """Account the time up to ``to``; count an offline episode that reached its length
        before ``to`` (or at it, when an event at ``to`` follows)."""
        if self.offline_since is not None and not self.connected:
            reached = self.offline_since + offline_after
            if reached < to or (inclusive and reached == to):
                self.episodes += 1
                self.offline_since = None
        if to > self.t:
            if self.connected:
                self.conn_time += to - self.t
                if operative(self.connectors):
                    self.avail_time += to - self.t
            self.t = to

    def apply(self, event: Event) -> None:
        match event:
            case Connected():
                if self.ever:
                    self.reconnects += 1
                self.connected = self.ever = True
                self.offline_since = None
            case Disconnected():
                if self.connected:
                    self.connected = False
                    self.offline_since = event.at
            case Status():
                before = self.connectors.get(event.connector_id)
                now = (event.status, event.error_code)
                if event.status == "Faulted" and before != now:
                    self.faults[event.error_code] = self.faults.get(event.error_code, 0) + 1
                self.connectors[event.connector_id] = now
                if self.outage_since is None and _out_of_order(self.connectors):
                    self.outage_since = event.at
                elif self.outage_since is not None and operative(self.connectors):
                    took = event.at - self.outage_since
                    self.repairs += 1
                    self.repair_time += took
                    self.repair_s2 += took.total_seconds() ** 2
                    self.outage_since = None
            case SessionEnded():
                self.sessions += 1
                self.failed += event.failed
            case VersionSeen():
                if self.version is not None and event.version != self.version:
                    self.changed = True
                self.version = event.version


def roll(
    state: State,
    events: Iterable[Event],
    start: datetime,
    end: datetime,
    offline_after: timedelta = OFFLINE_AFTER,
) -> tuple[Totals, State]:
    """The totals of ``[start, end)`` and the state at ``end``.

    ``events`` are in the order they happened; those outside ``[start, end)`` are ignored
    (the shell reads exactly the day). Ties keep their given order.
    """
    if end < start:
        raise ValueError("end before start")
    w = _Walk(state, start)
    for event in events:
        if not start <= event.at < end:
            continue
        w.advance(max(event.at, w.t), inclusive=True, offline_after=offline_after)
        w.apply(event)
    w.advance(end, inclusive=False, offline_after=offline_after)
    totals = Totals(
        observed=end - start,
        connected=w.conn_time,
        available=w.avail_time,
        offline_episodes=w.episodes,
        reconnects=w.reconnects,
        faults=w.faults,
        sessions=w.sessions,
        failed_sessions=w.failed,
        repairs=w.repairs,
        repair_time=w.repair_time,
        repair_s2=w.repair_s2,
        version_changed=w.changed,
    )
    after = State(
        connected=w.connected,
        ever_connected=w.ever,
        offline_since=w.offline_since,
        connectors=w.connectors,
        outage_since=w.outage_since,
        version=w.version,
    )
    return totals, after


def seeded(state: State, version: str | None) -> State:
    """``state`` with a known version when it had none (a charger's first rolled day)."""
    return (
        state if state.version is not None or version is None else replace(state, version=version)
    )
