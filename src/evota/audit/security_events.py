"""Alert rules over the security events chargers report: pure, with the time passed in.

A charger's SecurityEventNotification (1.6 Security Whitepaper, 2.0.1 Appendix 1) is stored
as it comes; :func:`observe` decides whether it must also reach a person as an alert
(``rule`` ``security_event``, subject the charger id):

- an event of a type in :data:`ALERTING` (tampering, a bad firmware signature, a refused or
  failing certificate, failed authentication, replayed messages, a downgraded TLS version or
  cipher) raises an alert at once;
- a type in :data:`REPEATED` (``SecurityLogWasCleared``) raises one when it comes more than
  ``repeats`` times within ``repeats_window``: clearing the log once is maintenance, again
  and again is hiding something.

Flooding is bounded: after an alert, the same charger and type stay quiet for
``quiet``; and one charger raises at most ``per_charger`` security alerts within ``quiet``
whatever the types, so a hostile charger can add a few rows an hour, not one per message.
Memory is bounded too: quiet periods and windows that ended are dropped at least once a
minute, and a window keeps at most ``repeats + 1`` timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

RULE = "security_event"
SUBJECT_MAX = 100  # the alerts table's subject column
TECH_INFO_MAX = 255  # techInfo's bound in both protocols
SWEEP_EVERY = timedelta(minutes=1)

#: Each one alone needs a person. 1.6 and 2.0.1 spellings, plus two that vendors send.
ALERTING = frozenset(
    {
        "InvalidFirmwareSignature",
        "InvalidFirmwareSigningCertificate",
        "FirmwareTampered",  # vendor extension
        "TamperDetectionActivated",
        "InvalidCentralSystemCertificate",  # 1.6
        "InvalidCsmsCertificate",  # 2.0.1
        "InvalidChargePointCertificate",  # 1.6
        "InvalidChargingStationCertificate",  # 2.0.1
        "FailedToAuthenticateAtCentralSystem",  # 1.6
        "FailedToAuthenticateAtCsms",  # 2.0.1
        "CentralSystemFailedToAuthenticate",  # 1.6
        "CsmsFailedToAuthenticate",  # 2.0.1
        "AuthenticationAttempts",  # vendor extension: repeated local authentication failures
        "MaintenanceLoginFailed",  # 2.0.1
        "AttemptedReplayAttacks",
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
        "SecurityProfileDowngrade",  # evota's own: a connection below the charger's profile
    }
)
#: These alert only when they repeat.
REPEATED = frozenset({"SecurityLogWasCleared"})

Key = tuple[str, str]  # (charger id, event type)


@dataclass(frozen=True, slots=True)
class Thresholds:
    quiet: timedelta = timedelta(hours=1)
    per_charger: int = 5
    repeats: int = 1  # more than this many in the window alerts
    repeats_window: timedelta = timedelta(hours=24)

    @property
    def lookback(self) -> timedelta:
        """How far back a restart reads to rebuild windows and quiet periods."""
        return max(self.quiet, self.repeats_window)


@dataclass(frozen=True, slots=True)
class Reported:
    """One security event as evota received it (``at``: evota's clock, not the charger's)."""

    charger_id: str
    type: str
    at: datetime
    tech_info: str | None = None
    charger_timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    subject: str  # the charger id
    at: datetime
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class State:
    """Quiet periods by (charger, type), recent alert times by charger, and windows of
    repeated types; never mutated, :func:`observe` returns a new one."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    quiet: Mapping[Key, datetime] = field(default_factory=dict)
    raised: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    windows: Mapping[Key, tuple[datetime, ...]] = field(default_factory=dict)
    swept: datetime | None = None

    @property
    def size(self) -> int:
        return (
            len(self.quiet)
            + sum(len(v) for v in self.raised.values())
            + sum(len(v) for v in self.windows.values())
        )


def prune(state: State, now: datetime) -> State:
    """Drop quiet periods, alert times and window entries that no longer matter."""
    t = state.thresholds
    quiet = {k: until for k, until in state.quiet.items() if until > now}
    raised = {
        c: kept
        for c, times in state.raised.items()
        if (kept := tuple(x for x in times if x > now - t.quiet))
    }
    windows = {
        k: kept
        for k, times in state.windows.items()
        if (kept := tuple(x for x in times if x > now - t.repeats_window))
    }
    return replace(state, quiet=quiet, raised=raised, windows=windows, swept=now)


def fired(state: State, charger_id: str, event_type: str, at: datetime) -> State:
    """The state after an alert for this charger and type at ``at`` (a restart reads these
    back from the alerts table, so it neither repeats an alert nor forgets the cap)."""
    charger_id = charger_id[:SUBJECT_MAX]
    key = (charger_id, event_type)
    until = max(state.quiet.get(key, at), at + state.thresholds.quiet)
    times = tuple(sorted((*state.raised.get(charger_id, ()), at)))[-state.thresholds.per_charger :]
    return replace(
        state,
        quiet={**state.quiet, key: until},
        raised={**state.raised, charger_id: times},
    )


def counted(state: State, event: Reported) -> State:
    """Only add a repeated type's occurrence to its window (used to rebuild after a restart)."""
    if event.type not in REPEATED:
        return state
    key = (event.charger_id[:SUBJECT_MAX], event.type)
    t = state.thresholds
    kept = sorted(
        x for x in (*state.windows.get(key, ()), event.at) if x > event.at - t.repeats_window
    )
    return replace(state, windows={**state.windows, key: tuple(kept[-(t.repeats + 1) :])})


def observe(state: State, event: Reported, now: datetime) -> tuple[State, Alert | None]:
    """Fold one reported event in; the alert it raises, if any."""
    t = state.thresholds
    if state.swept is None or now - state.swept >= SWEEP_EVERY:
        state = prune(state, now)
    if event.type not in ALERTING and event.type not in REPEATED:
        return state, None
    charger = event.charger_id[:SUBJECT_MAX]
    count = 1
    if event.type in REPEATED:
        state = counted(state, event)
        times = state.windows[(charger, event.type)]
        count = len([x for x in times if x > now - t.repeats_window])
        if count <= t.repeats:
            return state, None
    if now < state.quiet.get((charger, event.type), now):
        return state, None
    recent = [x for x in state.raised.get(charger, ()) if x > now - t.quiet]
    if len(recent) >= t.per_charger:
        return state, None
    state = fired(state, charger, event.type, now)
    if event.type in REPEATED:
        span = _span(t.repeats_window)
        message = f"charger {charger} reported {event.type} {count} times within {span}"
    else:
        message = f"charger {charger} reported security event {event.type}"
    detail: dict[str, Any] = {"event": event.type, "charger_id": charger, "count": count}
    if event.tech_info:
        detail["tech_info"] = event.tech_info[:TECH_INFO_MAX]
    if event.charger_timestamp is not None:
        detail["charger_timestamp"] = event.charger_timestamp.isoformat()
    return state, Alert(charger, now, message, detail)


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
