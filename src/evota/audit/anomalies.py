"""Anomaly rules over the audit log: pure decisions, with the time passed in.

Each committed audit entry becomes an :class:`Event`; :func:`observe` folds it into a
:class:`State` of sliding windows and returns the alerts it raises. The rules (see
docs/alerts.md):

- ``repeated_resets``: more than N accepted (or scheduled: 2.0.1 OnIdle) ``command.reset``
  of one charger in the window (operators resetting the same charger again and again: the
  root cause is not fixed).
- ``command_volume``: more than N ``command.*`` entries by one operator in the window (a bulk
  operation counts once per charger, as it is audited).
- ``off_hours``: a ``command.*`` by an actor holding a restricted role outside the allowed
  hours (local time of the configured zone; the hours may cross midnight).
- ``failed_logins``: more than N failed ``auth.login`` attempts for one username (subject
  ``user:<name>``) or from one client address (``client:<address>``) in the window.

A rule and subject that fired stay quiet until the window has passed (``off_hours``: until the
allowed hours next begin), so a burst is one alert, not one per entry. Memory stays bounded:
a window keeps at most N+1 timestamps (enough to know the count passed N), and windows and
quiet periods that ended are dropped at least once a minute.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from evota.audit.chain import Entry

REPEATED_RESETS = "repeated_resets"
COMMAND_VOLUME = "command_volume"
OFF_HOURS = "off_hours"
FAILED_LOGINS = "failed_logins"
#: Rules decided here, over audit entries (a restart rebuilds their windows and quiet periods).
AUDIT_RULES = (REPEATED_RESETS, COMMAND_VOLUME, OFF_HOURS, FAILED_LOGINS)
#: Raised by the gateway (evota.gateway.limits): failed charger keys per identity or source.
CHARGER_AUTH_FAILURES = "charger_auth_failures"
#: Raised by the gateway (evota.gateway.tls): new TLS files were bad, the old ones stay.
TLS_RELOAD_FAILED = "tls_reload_failed"
RULES = (*AUDIT_RULES, CHARGER_AUTH_FAILURES, TLS_RELOAD_FAILED)

#: Login outcomes that count as a failed attempt (``locked``: tried while locked out).
FAILED_OUTCOMES = frozenset({"failed", "locked"})
SWEEP_EVERY = timedelta(minutes=1)
SUBJECT_MAX = 100  # the alerts table's subject column

Key = tuple[str, str]  # (rule, subject)

_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class Hours:
    """Allowed hours ``start``-``end`` in local time; ``end`` before ``start`` crosses midnight,
    and ``start == end`` allows the whole day."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Hours:
        match = _HOURS.match(text)
        if match is None:
            raise ValueError(f"expected HH:MM-HH:MM such as 07:00-20:00, got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"hours must be 00:00 to 23:59, got {text!r}")
        return cls(time(h1, m1), time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def always(self) -> bool:
        return self.start == self.end

    def allows(self, local: time) -> bool:
        t = local.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        if self.start > self.end:  # crosses midnight, e.g. 22:00-06:00
            return t >= self.start or t < self.end
        return True

    def next_start(self, local: datetime) -> datetime:
        """The first start of the allowed hours after ``local`` (aware), in UTC."""
        zone = local.tzinfo
        day: date = local.date()
        candidate = datetime.combine(day, self.start, tzinfo=zone)
        if candidate <= local:
            candidate = datetime.combine(day + timedelta(days=1), self.start, tzinfo=zone)
        return candidate.astimezone(UTC)


def zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone, or ValueError naming it."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC)") from None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A count threshold of 0 turns its rule off; so does an empty ``restricted_roles``."""

    resets_per_charger: int = 3
    resets_window: timedelta = timedelta(hours=24)
    commands_per_operator: int = 100
    commands_window: timedelta = timedelta(hours=1)
    restricted_roles: frozenset[str] = frozenset({"operator"})
    allowed_hours: Hours = Hours(time(7), time(20))
    timezone: str = "UTC"
    failed_logins: int = 5
    failed_logins_window: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        for name in ("resets_per_charger", "commands_per_operator", "failed_logins"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or more")
        for name in ("resets_window", "commands_window", "failed_logins_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        zone(self.timezone)

    def limit(self, rule: str) -> tuple[int, timedelta]:
        """(threshold, window) of a counting rule."""
        if rule == REPEATED_RESETS:
            return self.resets_per_charger, self.resets_window
        if rule == COMMAND_VOLUME:
            return self.commands_per_operator, self.commands_window
        if rule == FAILED_LOGINS:
            return self.failed_logins, self.failed_logins_window
        raise KeyError(rule)

    @property
    def lookback(self) -> timedelta:
        """How far back a restart must read to rebuild every window and quiet period."""
        longest = max(self.resets_window, self.commands_window, self.failed_logins_window)
        return max(longest, timedelta(days=1)) if self.restricted_roles else longest


@dataclass(frozen=True, slots=True)
class Event:
    """What the rules read from one audit entry."""

    at: datetime
    actor: str
    action: str
    outcome: str
    roles: frozenset[str] = frozenset()
    chargers: tuple[str, ...] = ()
    client: str | None = None


def event_of(entry: Entry, chargers: Iterable[str] = ()) -> Event | None:
    """The entry as an event, or None for entries the rules must not see: evota's own
    (actor and role ``system``) and alerts (``alert.*``), so raising an alert never feeds the
    rules. A failed login *as* "system" has no role and still counts."""
    if entry.action.startswith("alert."):
        return None
    if entry.actor == "system" and entry.role == "system":
        return None
    roles = frozenset(r for r in entry.role.split(",") if r)
    client = entry.detail.get("client") if isinstance(entry.detail, Mapping) else None
    return Event(
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        outcome=entry.outcome,
        roles=roles,
        chargers=tuple(chargers),
        client=str(client) if client else None,
    )


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    subject: str
    at: datetime
    message: str
    chargers: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class State:
    """Sliding windows (at most threshold+1 timestamps each) and quiet periods, by rule and
    subject; never mutated, :func:`observe` returns a new one."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    windows: Mapping[Key, tuple[datetime, ...]] = field(default_factory=dict)
    quiet: Mapping[Key, datetime] = field(default_factory=dict)
    swept: datetime | None = None

    @property
    def size(self) -> int:
        """Timestamps and quiet periods held: what bounded memory is about."""
        return sum(len(w) for w in self.windows.values()) + len(self.quiet)


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _subject(text: str) -> str:
    return text[:SUBJECT_MAX]


def _counted(event: Event) -> list[Key]:
    """The (rule, subject) windows this event adds one to."""
    keys: list[Key] = []
    action = event.action
    if action == "command.reset" and event.outcome.lower() in ("accepted", "scheduled"):
        keys.extend((REPEATED_RESETS, _subject(c)) for c in dict.fromkeys(event.chargers))
    if action.startswith("command.") and event.actor:
        keys.append((COMMAND_VOLUME, _subject(event.actor)))
    if action == "auth.login" and event.outcome in FAILED_OUTCOMES:
        if event.actor:
            keys.append((FAILED_LOGINS, _subject(f"user:{event.actor}")))
        if event.client:
            keys.append((FAILED_LOGINS, _subject(f"client:{event.client}")))
    return keys


def _message(rule: str, subject: str, count: int, threshold: int, window: timedelta) -> str:
    span = _span(window)
    if rule == REPEATED_RESETS:
        return f"charger {subject} reset {count} times within {span} (threshold {threshold})"
    if rule == COMMAND_VOLUME:
        return f"{subject} sent {count} commands within {span} (threshold {threshold})"
    return f"{count} failed logins for {subject} within {span} (threshold {threshold})"


def _quiet_until(t: Thresholds, rule: str, at: datetime) -> datetime:
    if rule == OFF_HOURS:
        return t.allowed_hours.next_start(at.astimezone(zone(t.timezone)))
    return at + t.limit(rule)[1]


def prune(state: State, now: datetime) -> State:
    """Drop timestamps that left their window and quiet periods that ended."""
    t = state.thresholds
    windows: dict[Key, tuple[datetime, ...]] = {}
    for key, times in state.windows.items():
        horizon = now - t.limit(key[0])[1]
        kept = tuple(x for x in times if x > horizon)
        if kept:
            windows[key] = kept
    quiet = {k: until for k, until in state.quiet.items() if until > now}
    return replace(state, windows=windows, quiet=quiet, swept=now)


def fired(state: State, rule: str, subject: str, at: datetime) -> State:
    """The state after ``rule`` fired for ``subject`` at ``at`` (a restart reads these back
    from the alerts table, so it does not raise the same alert again)."""
    until = _quiet_until(state.thresholds, rule, at)
    key = (rule, _subject(subject))
    known = state.quiet.get(key)
    if known is not None and known >= until:
        return state
    return replace(state, quiet={**state.quiet, key: until})


def observe(state: State, event: Event, now: datetime) -> tuple[State, list[Alert]]:
    """Fold one event in; the alerts it raises (each rule and subject at most once per window)."""
    t = state.thresholds
    if state.swept is None or now - state.swept >= SWEEP_EVERY:
        state = prune(state, now)
    windows: dict[Key, tuple[datetime, ...]] | None = None
    quiet: dict[Key, datetime] | None = None
    alerts: list[Alert] = []
    for key in _counted(event):
        rule, subject = key
        threshold, window = t.limit(rule)
        horizon = now - window
        if threshold == 0 or event.at <= horizon:
            continue
        if windows is None:
            windows = dict(state.windows)
        kept = [x for x in windows.get(key, ()) if x > horizon]
        kept.append(event.at)
        kept.sort()
        times = tuple(kept[-(threshold + 1) :])
        windows[key] = times
        current_quiet = quiet if quiet is not None else state.quiet
        if len(times) > threshold and not now < current_quiet.get(key, now):
            if quiet is None:
                quiet = dict(state.quiet)
            quiet[key] = now + window
            alerts.append(
                Alert(
                    rule,
                    subject,
                    now,
                    _message(rule, subject, len(times), threshold, window),
                    chargers=(subject,) if rule == REPEATED_RESETS else (),
                    detail={
                        "count": len(times),
                        "threshold": threshold,
                        "window_seconds": int(window.total_seconds()),
                        "first_at": times[0].isoformat(),
                    },
                )
            )
    off = _off_hours(t, event)
    if off is not None:
        key = (OFF_HOURS, _subject(event.actor))
        current_quiet = quiet if quiet is not None else state.quiet
        if not now < current_quiet.get(key, now):
            if quiet is None:
                quiet = dict(state.quiet)
            quiet[key] = _quiet_until(t, OFF_HOURS, event.at)
            alerts.append(replace(off, subject=key[1], at=now))
    if windows is not None or quiet is not None:
        state = replace(
            state,
            windows=windows if windows is not None else state.windows,
            quiet=quiet if quiet is not None else state.quiet,
        )
    return state, alerts


def _off_hours(t: Thresholds, event: Event) -> Alert | None:
    """The alert for a restricted role's command outside the allowed hours, if it is one."""
    if not t.restricted_roles or t.allowed_hours.always or not event.actor:
        return None
    if not event.action.startswith("command."):
        return None
    restricted = event.roles & t.restricted_roles
    if not restricted:
        return None
    local = event.at.astimezone(zone(t.timezone))
    if t.allowed_hours.allows(local.time()):
        return None
    return Alert(
        OFF_HOURS,
        event.actor,
        event.at,
        f"{event.actor} ({', '.join(sorted(restricted))}) ran {event.action} at "
        f"{local:%H:%M} {t.timezone}, outside {t.allowed_hours}",
        chargers=event.chargers,
        detail={
            "action": event.action,
            "roles": sorted(restricted),
            "local_time": local.isoformat(),
            "allowed_hours": str(t.allowed_hours),
            "timezone": t.timezone,
        },
    )
