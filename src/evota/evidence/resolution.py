"""Remote resolution: did a remote action on a faulted charger bring it back into service?

Pure: the shell (:mod:`evota.evidence.resolution_data`) reads the actions, status reports,
sessions and charger facts as plain data; everything here is a function of them and ``now``.
An action is "a remote action on a charger at time t with a kind" (a command today, a
playbook step later), so anything that acts on chargers can be judged the same way.

Definitions (docs/analytics.md has them with examples):

- *faulted before*: some connector's (connector 0 included) latest status reported strictly
  before ``t`` is ``Faulted``; its error code is the action's ``error_code`` (the lowest such
  connector's). An action on a charger that was not faulted is counted as ``no_fault_before``
  and stays out of every rate.
- *window*: from ``t`` (exclusive) to ``t + W`` (inclusive), cut short by the next action on
  the same charger: a later action that comes before the recovery takes the credit for it.
- *resolved*: within the window every connector (``>= 1``: those that ever reported up to the
  window's end) has an :data:`~evota.rollout.gate.OPERATIVE` latest status, connector 0 is
  not Faulted, *and* a session started (its start is the charger's timestamp, in whole
  seconds: one stamped in the action's own second counts). ``resolved_at`` is the later of
  the two moments; time to resolution is ``resolved_at - t``.
- *pending*: faulted before, not resolved yet, and the window is not over at ``now``: left
  out of the rate until it is decided.
- *repeat fault*: a resolved action after which some connector reports ``Faulted`` within
  :data:`REPEAT_WINDOW` of ``resolved_at``; only actions whose follow-up ended by ``now``
  count (the repeat rate's denominator is ``followed``).
- *truck rolls avoided*: one per resolved action (a faulted charger nobody fixed remotely
  needs a site visit); repeats are shown beside it, not subtracted.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from evota.rollout.gate import OPERATIVE, wilson_lower, wilson_upper

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "REPEAT_WINDOW",
    "Action",
    "ChargerFacts",
    "GroupBy",
    "Judged",
    "Report",
    "ResolutionRow",
    "SessionStart",
    "StatusReport",
    "judge",
    "reached_charger",
    "report",
    "summarize",
]

DEFAULT_WINDOW = timedelta(minutes=30)
MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(hours=24)
REPEAT_WINDOW = timedelta(days=7)
FAULTED = "Faulted"
NO_FAULT = "(no fault before)"
UNKNOWN = "(unknown)"


class GroupBy(StrEnum):
    COMMAND = "command"
    MODEL = "model"
    SITE = "site"
    VENDOR = "vendor"
    ERROR_CODE = "error_code"
    SOURCE = "source"  # command, operation:<id>, job, playbook:<name>@<version>


@dataclass(frozen=True, slots=True)
class Action:
    """A remote action on ``charger_id`` at ``at``; ``kind`` is e.g. the command's name
    (``reset``) and ``source`` where it came from (``command``, ``operation:<id>``, a job,
    ``playbook:<name>@<version>``)."""

    charger_id: str
    at: datetime
    kind: str
    source: str = "command"


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One connector status as received (``connector_status_history``)."""

    charger_id: str
    connector_id: int
    status: str
    error_code: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionStart:
    charger_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ChargerFacts:
    """What the groups look at; ``None`` reads as ``(unknown)``."""

    model: str | None = None
    vendor: str | None = None
    site_id: str | None = None


@dataclass(frozen=True, slots=True)
class Judged:
    """One action and what followed it."""

    action: Action
    faulted_before: bool
    error_code: str | None  # of the faulted connector before the action
    decided: bool  # resolved, or its window is over at ``now``
    resolved_at: datetime | None = None
    followed: bool = False  # resolved and its repeat window is over at ``now``
    repeat_fault: bool = False

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def seconds_to_resolution(self) -> float | None:
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.action.at).total_seconds()


def reached_charger(outcome: str) -> bool:
    """Whether an audited command reached the charger: it answered (any status word, a
    CALLERROR) or kept silent (timeout). Offline, unsupported or unbuildable commands were
    never on the wire and are not actions at all."""
    if outcome != "error" and not outcome.startswith("error:"):
        return True
    return outcome.startswith(("error:timeout", "error:callerror"))


class _Timeline:
    """One charger's reports in time order, for "latest status of each connector at t"."""

    __slots__ = ("at", "connectors", "reports")

    def __init__(self, reports: Iterable[StatusReport]) -> None:
        self.reports = sorted(reports, key=lambda r: r.at)  # stable: input order breaks ties
        self.at = [r.at for r in self.reports]
        self.connectors = sorted({r.connector_id for r in self.reports})

    def latest(self, before: datetime, *, inclusive: bool) -> dict[int, StatusReport]:
        end = (bisect.bisect_right if inclusive else bisect.bisect_left)(self.at, before)
        latest: dict[int, StatusReport] = {}
        for r in self.reports[:end]:
            latest[r.connector_id] = r
        return latest

    def between(self, start: datetime, end: datetime) -> list[StatusReport]:
        """Reports with ``start < at <= end``."""
        lo = bisect.bisect_right(self.at, start)
        hi = bisect.bisect_right(self.at, end)
        return self.reports[lo:hi]


def _operative(latest: Mapping[int, StatusReport], connectors: Iterable[int]) -> bool:
    wanted = [c for c in connectors if c > 0]
    if not wanted:
        return False  # a charger that never reported a connector proves nothing
    zero = latest.get(0)
    if zero is not None and zero.status == FAULTED:
        return False
    return all(c in latest and latest[c].status in OPERATIVE for c in wanted)


def judge(
    actions: Iterable[Action],
    reports: Iterable[StatusReport],
    sessions: Iterable[SessionStart],
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
    repeat_window: timedelta = REPEAT_WINDOW,
) -> list[Judged]:
    """Judge every action (see the module's definitions), in the order given. Reports and
    sessions of chargers without an action are ignored."""
    by_charger: dict[str, list[Action]] = defaultdict(list)
    ordered = list(actions)
    for a in ordered:
        by_charger[a.charger_id].append(a)
    report_lists: dict[str, list[StatusReport]] = defaultdict(list)
    for r in reports:
        if r.charger_id in by_charger:
            report_lists[r.charger_id].append(r)
    starts: dict[str, list[datetime]] = defaultdict(list)
    for s in sessions:
        if s.charger_id in by_charger:
            starts[s.charger_id].append(s.at)
    verdicts: dict[int, Judged] = {}
    for cid, acts in by_charger.items():
        timeline = _Timeline(report_lists.get(cid, ()))
        started = sorted(starts.get(cid, ()))
        acts_sorted = sorted(acts, key=lambda a: a.at)
        for i, a in enumerate(acts_sorted):
            following = acts_sorted[i + 1].at if i + 1 < len(acts_sorted) else None
            verdicts[id(a)] = _judge_one(
                a, following, timeline, started, now, window, repeat_window
            )
    return [verdicts[id(a)] for a in ordered]


def _judge_one(
    a: Action,
    following: datetime | None,
    timeline: _Timeline,
    started: Sequence[datetime],
    now: datetime,
    window: timedelta,
    repeat_window: timedelta,
) -> Judged:
    before = timeline.latest(a.at, inclusive=False)
    faulted = sorted(c for c, r in before.items() if r.status == FAULTED)
    if not faulted:
        return Judged(a, False, None, decided=True)
    error_code = before[faulted[0]].error_code or UNKNOWN
    end = a.at + window
    if following is not None and following <= end:
        end = following  # a later action takes the credit for what follows it
        exclusive_end = True
    else:
        exclusive_end = False
    horizon = min(end, now)
    resolved_at = _resolution(a.at, horizon, exclusive_end and horizon == end, timeline, started)
    if resolved_at is None:
        return Judged(a, True, error_code, decided=now >= end)
    follow_end = resolved_at + repeat_window
    followed = now >= follow_end
    repeat = any(r.status == FAULTED for r in timeline.between(resolved_at, min(follow_end, now)))
    return Judged(a, True, error_code, True, resolved_at, followed, repeat)


def _resolution(
    start: datetime,
    horizon: datetime,
    exclusive: bool,
    timeline: _Timeline,
    started: Sequence[datetime],
) -> datetime | None:
    """The first moment in (start, horizon] (horizon itself excluded if ``exclusive``) at
    which every connector is operative and a session has started since ``start``.

    A session's start is the charger's timestamp, which OCPP chargers send in whole seconds:
    one stamped in the second of ``start`` counts (it cannot have been cut off by the action
    unless the connectors stopped being operative, which is checked on evota's own times)."""

    def inside(t: datetime) -> bool:
        return start < t < horizon or (t == horizon and not exclusive)

    from_second = start.replace(microsecond=0)
    first_session = next(
        (t for t in started if from_second <= t and (inside(t) or t <= start)), None
    )
    if first_session is None:
        return None
    connectors = [c for c in timeline.connectors if c > 0]
    latest = timeline.latest(start, inclusive=True)
    operative_at: datetime | None = start if _operative(latest, connectors) else None
    if operative_at is None:
        for r in timeline.between(start, horizon):
            if not inside(r.at):
                break
            latest[r.connector_id] = r
            if _operative(latest, connectors):
                operative_at = r.at
                break
    if operative_at is None:
        return None
    return max(operative_at, first_session)


@dataclass(frozen=True, slots=True)
class ResolutionRow:
    """One group's numbers; rates are ``None`` where their denominator is 0."""

    key: str
    actions: int = 0
    no_fault_before: int = 0
    pending: int = 0
    faulted: int = 0  # faulted before and decided: the resolution rate's denominator
    resolved: int = 0
    resolution_rate: float | None = None
    resolution_low: float = 0.0
    resolution_high: float = 1.0
    followed: int = 0  # resolved with a finished repeat window
    repeat_faults: int = 0
    repeat_rate: float | None = None
    repeat_low: float = 0.0
    repeat_high: float = 1.0
    median_seconds: float | None = None
    p90_seconds: float | None = None
    truck_rolls_avoided: int = 0
    money_saved: float | None = None


@dataclass(frozen=True, slots=True)
class Report:
    group_by: GroupBy
    window: timedelta
    rows: list[ResolutionRow] = field(default_factory=list)
    total: ResolutionRow = field(default_factory=lambda: ResolutionRow("total"))


def _nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by nearest rank over sorted ``values`` (a value that occurred)."""
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def summarize(
    key: str, judged: Sequence[Judged], truck_roll_cost: float | None = None
) -> ResolutionRow:
    """Count, rate and bound one group's actions."""
    no_fault = sum(1 for j in judged if not j.faulted_before)
    pending = sum(1 for j in judged if j.faulted_before and not j.decided)
    faulted = sum(1 for j in judged if j.faulted_before and j.decided)
    resolved = sum(1 for j in judged if j.resolved)
    followed = sum(1 for j in judged if j.followed)
    repeats = sum(1 for j in judged if j.followed and j.repeat_fault)
    times = sorted(t for j in judged if (t := j.seconds_to_resolution) is not None)
    return ResolutionRow(
        key=key,
        actions=len(judged),
        no_fault_before=no_fault,
        pending=pending,
        faulted=faulted,
        resolved=resolved,
        resolution_rate=resolved / faulted if faulted else None,
        resolution_low=wilson_lower(resolved, faulted),
        resolution_high=wilson_upper(resolved, faulted),
        followed=followed,
        repeat_faults=repeats,
        repeat_rate=repeats / followed if followed else None,
        repeat_low=wilson_lower(repeats, followed),
        repeat_high=wilson_upper(repeats, followed),
        median_seconds=_median(times),
        p90_seconds=_nearest_rank(times, 0.9) if times else None,
        truck_rolls_avoided=resolved,
        money_saved=resolved * truck_roll_cost if truck_roll_cost is not None else None,
    )


def _median(values: Sequence[float]) -> float | None:
    n = len(values)
    if n == 0:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def _key(j: Judged, group_by: GroupBy, facts: Mapping[str, ChargerFacts]) -> str:
    if group_by is GroupBy.COMMAND:
        return j.action.kind
    if group_by is GroupBy.SOURCE:
        return j.action.source
    if group_by is GroupBy.ERROR_CODE:
        return j.error_code if j.faulted_before and j.error_code else NO_FAULT
    f = facts.get(j.action.charger_id) or ChargerFacts()
    value = {GroupBy.MODEL: f.model, GroupBy.VENDOR: f.vendor, GroupBy.SITE: f.site_id}[group_by]
    return value or UNKNOWN


def report(
    actions: Iterable[Action],
    reports: Iterable[StatusReport],
    sessions: Iterable[SessionStart],
    facts: Mapping[str, ChargerFacts],
    now: datetime,
    group_by: GroupBy = GroupBy.COMMAND,
    window: timedelta = DEFAULT_WINDOW,
    truck_roll_cost: float | None = None,
) -> Report:
    """Judge the actions and group them by ``group_by``; rows by most actions, then key."""
    judged = judge(actions, reports, sessions, now, window)
    groups: dict[str, list[Judged]] = defaultdict(list)
    for j in judged:
        groups[_key(j, group_by, facts)].append(j)
    rows = [summarize(k, js, truck_roll_cost) for k, js in groups.items()]
    rows.sort(key=lambda r: (-r.actions, r.key))
    return Report(group_by, window, rows, summarize("total", judged, truck_roll_cost))
