"""Bulk operations, pure: the state machine, the stage planner and the send decision.

An operation sends one command to many chargers in stages (by default a first stage of 10 %,
at least one charger, then the rest). :func:`decide` looks at what every charger has
answered so far and says which chargers to send to next, whether to move to the next stage,
and whether to stop because a stage's failure rate passed the threshold. It never sends to a
charger twice (only ``pending`` chargers are chosen), never more than ``max_in_flight`` at
once, and never faster than ``rate_per_second``: with ``burst = max(1, floor(rate))`` and
``window = burst / rate``, any ``window`` seconds hold at most ``burst`` sends, so a
fractional rate such as 0.5/s is one send every two seconds. Time is a float the shell
passes in (its clock's monotonic seconds), so tests run hours of pacing in microseconds.

A stage is judged as soon as it has ``min_sample`` answers (or all its answers, for a stage
smaller than that): more than ``max_failure_rate`` of them failed stops the operation at
once — "at most 20 %" is never read as "stop at exactly 20 %".
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evota.pacing import Pace
from evota.selection import ChargerSnapshot, Selector, matches

__all__ = [
    "ACTIVE",
    "FINAL",
    "TERMINAL",
    "TRANSITIONS",
    "Limits",
    "OperationError",
    "OperationEvent",
    "OperationState",
    "Plan",
    "Progress",
    "Query",
    "ResultState",
    "StageState",
    "Step",
    "decide",
    "plan_stages",
    "query_from_dict",
    "select_chargers",
    "split",
    "summarize",
    "transition",
    "verdict",
]


class OperationState(enum.StrEnum):
    """An operation's state (stored as its value)."""

    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"  # a stage passed its failure threshold
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # the second operator said no
    EXPIRED = "expired"  # nobody approved in time
    FAILED = "failed"  # evota could not run it (e.g. the command left the catalog)


ACTIVE = frozenset({OperationState.AWAITING_APPROVAL, OperationState.RUNNING})
TERMINAL = frozenset(OperationState) - ACTIVE


class ResultState(enum.StrEnum):
    """One charger's part: pending -> sent -> succeeded | failed; pending -> skipped
    (cancel/stop)."""

    PENDING = "pending"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL = frozenset({ResultState.SUCCEEDED, ResultState.FAILED, ResultState.SKIPPED})
# Looked up once: compared for every charger of a stage on every answer, and a member lookup
# on the enum class costs several times the comparison.
_PENDING = ResultState.PENDING
_SENT = ResultState.SENT


class StageState(enum.StrEnum):
    """A stage as :func:`summarize` shows it (derived, never stored)."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHING = "finishing"  # the operation ended; answers to sent commands still come in
    DONE = "done"
    SKIPPED = "skipped"


class OperationEvent(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    EXPIRE = "expire"
    CANCEL = "cancel"
    FAIL = "fail"


_S = OperationState
# What an event does to an operation, by state; anything else is refused. Running operations
# also end by themselves (completed, stopped): :func:`decide` says so.
# Keyed by the enums' values, so a stored state or a plain event name looks up alike.
TRANSITIONS: Mapping[str, Mapping[str, OperationState]] = {
    OperationEvent.APPROVE: {_S.AWAITING_APPROVAL: _S.RUNNING},
    OperationEvent.REJECT: {_S.AWAITING_APPROVAL: _S.REJECTED},
    OperationEvent.EXPIRE: {_S.AWAITING_APPROVAL: _S.EXPIRED},
    OperationEvent.CANCEL: {_S.AWAITING_APPROVAL: _S.CANCELLED, _S.RUNNING: _S.CANCELLED},
    OperationEvent.FAIL: {_S.AWAITING_APPROVAL: _S.FAILED, _S.RUNNING: _S.FAILED},
}

DEFAULT_FIRST_SHARE = 0.1
MAX_RATE = 1000.0
MAX_IN_FLIGHT = 500


class OperationError(ValueError):
    """Bad operation input; ``field`` names the offending value (``stages[1]``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def transition(state: str, event: str) -> OperationState | None:
    """The state after ``event``, or None when the event does not apply in ``state``."""
    return TRANSITIONS.get(event, {}).get(state)


# -- limits and stages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_failure_rate: float = 0.2  # a stage stops the operation above this share of failures
    min_sample: int = 5  # answers a stage needs before it is judged (fewer if it is smaller)
    rate_per_second: float = 10.0
    max_in_flight: int = 20

    def __post_init__(self) -> None:
        if not _number(self.max_failure_rate) or not 0 <= self.max_failure_rate <= 1:
            raise OperationError("max_failure_rate", "must be a number from 0 to 1")
        if not _integer(self.min_sample) or self.min_sample < 1:
            raise OperationError("min_sample", "must be an integer >= 1")
        if not _number(self.rate_per_second) or not 0 < self.rate_per_second <= MAX_RATE:
            raise OperationError("rate_per_second", f"must be > 0 and <= {MAX_RATE:g}")
        if not _integer(self.max_in_flight) or not 1 <= self.max_in_flight <= MAX_IN_FLIGHT:
            raise OperationError("max_in_flight", f"must be an integer from 1 to {MAX_IN_FLIGHT}")

    @property
    def pace(self) -> Pace:
        """The send rate as a sliding window (:mod:`evota.pacing`)."""
        return Pace(self.rate_per_second)

    @property
    def burst(self) -> int:
        """Sends allowed within one :attr:`window`."""
        return self.pace.burst

    @property
    def window(self) -> float:
        return self.pace.window


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def plan_stages(count: int, sizes: Sequence[Any] | None = None) -> tuple[int, ...]:
    """Stage sizes for ``count`` chargers, summing to ``count``.

    Without ``sizes``: ceil(10 %) (at least one), then the rest. With ``sizes``: those, in
    order; chargers left over form one last stage, and sizes beyond ``count`` are trimmed.
    """
    if count <= 0:
        return ()
    if sizes is None or len(sizes) == 0:
        first = max(1, math.ceil(count * DEFAULT_FIRST_SHARE))
        return (first,) if first >= count else (first, count - first)
    out: list[int] = []
    left = count
    for i, size in enumerate(sizes):
        if not _integer(size) or size < 1:
            raise OperationError(f"stages[{i}]", "must be an integer >= 1")
        if left > 0:
            take = min(size, left)
            out.append(take)
            left -= take
    if left > 0:
        out.append(left)
    return tuple(out)


def split(charger_ids: Sequence[str], sizes: Sequence[int]) -> tuple[tuple[str, ...], ...]:
    """The chargers of each stage, in the given order."""
    stages: list[tuple[str, ...]] = []
    start = 0
    for size in sizes:
        stages.append(tuple(charger_ids[start : start + size]))
        start += size
    return tuple(stages)


# -- deciding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    stages: tuple[tuple[str, ...], ...]
    limits: Limits


@dataclass(frozen=True, slots=True)
class Progress:
    state: str  # an OperationState value
    stage: int  # the current stage's index
    results: Mapping[str, str]  # charger id -> ResultState value (missing = pending)
    sends: tuple[float, ...] = ()  # times of the latest sends, oldest first (``burst`` is enough)


@dataclass(frozen=True, slots=True)
class Step:
    stage: int  # the stage to record as current (it may have advanced)
    send: tuple[str, ...] = ()
    finish: OperationState | None = None  # completed | stopped
    reason: str | None = None
    wake_at: float | None = None  # decide again then (rate limit); None: when an answer comes


def verdict(
    limits: Limits, stage: int, members: Sequence[str], results: Mapping[str, str]
) -> str | None:
    """Why the stage stops the operation (its failure rate passed the threshold), or None."""
    counts = Counter(results.get(c, _PENDING) for c in members)
    failed = counts[ResultState.FAILED]
    executed = counts[ResultState.SUCCEEDED] + failed
    if executed == 0 or executed < min(limits.min_sample, len(members)):
        return None
    if failed > limits.max_failure_rate * executed:
        return (
            f"stage {stage + 1}: {failed} of {executed} chargers failed "
            f"({failed / executed:.0%} > {limits.max_failure_rate:.0%})"
        )
    return None


def decide(plan: Plan, progress: Progress, now: float) -> Step:
    """What to do next for a running operation (anything else: nothing)."""
    stage = progress.stage
    if progress.state != OperationState.RUNNING:
        return Step(stage)
    results = progress.results
    limits = plan.limits
    while True:
        if stage >= len(plan.stages):
            return Step(max(0, len(plan.stages) - 1), finish=OperationState.COMPLETED)
        members = plan.stages[stage]
        why = verdict(limits, stage, members, results)
        if why is not None:
            return Step(stage, finish=OperationState.STOPPED, reason=why)
        if any(results.get(c, _PENDING) not in FINAL for c in members):
            break
        if stage + 1 == len(plan.stages):
            return Step(stage, finish=OperationState.COMPLETED)
        stage += 1
    pending = [c for c in members if results.get(c, _PENDING) == _PENDING]
    in_flight = sum(1 for c in members if results.get(c) == _SENT)
    room = max(0, limits.max_in_flight - in_flight)
    pace = limits.pace
    count = min(len(pending), room, pace.allowance(progress.sends, now))
    wake_at = None
    if count == 0 and pending and room > 0:
        wake_at = pace.next_free(progress.sends, now)
    return Step(stage, send=tuple(pending[:count]), wake_at=wake_at)


def summarize(
    stages: Sequence[Sequence[str]], results: Mapping[str, str], current: int, state: str
) -> dict[str, Any]:
    """Progress counts overall and per stage, for the API and the CLI."""
    total: Counter[str] = Counter()
    out = []
    for i, members in enumerate(stages):
        counts = Counter(results.get(c, _PENDING) for c in members)
        total.update(counts)
        stage_state: StageState
        if all(k in FINAL for k in counts) and counts:
            only_skipped = set(counts) == {ResultState.SKIPPED}
            stage_state = StageState.SKIPPED if only_skipped else StageState.DONE
        elif i == current and state == OperationState.RUNNING:
            stage_state = StageState.RUNNING
        elif i == current and state in TERMINAL and counts.get(ResultState.SENT):
            stage_state = StageState.FINISHING
        else:
            stage_state = StageState.PENDING
        out.append(
            {"index": i, "size": len(members), "state": stage_state, "results": dict(counts)}
        )
    return {"results": {k.value: total.get(k, 0) for k in ResultState}, "stages": out}


# -- which chargers -------------------------------------------------------------------------

_QUERY_LISTS = ("charger_ids", "sites", "regions", "vendors", "models", "tags", "firmware_versions")


@dataclass(frozen=True, slots=True)
class Query:
    """Which chargers an operation (or a configuration profile) covers; filters combine with
    AND, empty lists do not filter, ``tags`` matches ANY of its tags (as campaign targets)."""

    charger_ids: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    vendors: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    firmware_versions: tuple[str, ...] = ()
    connected: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(getattr(self, k)) for k in _QUERY_LISTS if getattr(self, k)}
        if self.connected is not None:
            out["connected"] = self.connected
        return out

    @property
    def empty(self) -> bool:
        return not self.to_dict()


def query_from_dict(d: Any, path: str = "target") -> Query:
    if d is None:
        return Query()
    if not isinstance(d, Mapping):
        raise OperationError(path, "must be an object")
    unknown = sorted(set(d) - {*_QUERY_LISTS, "connected"})
    if unknown:
        raise OperationError(
            f"{path}.{unknown[0]}", f"unknown filter (use {', '.join(_QUERY_LISTS)}, connected)"
        )
    kw: dict[str, Any] = {}
    for key in _QUERY_LISTS:
        value = d.get(key)
        if value is None:
            continue
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise OperationError(f"{path}.{key}", "must be a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise OperationError(f"{path}.{key}[{i}]", "must be a non-empty string")
        kw[key] = tuple(dict.fromkeys(value))
    connected = d.get("connected")
    if connected is not None and not isinstance(connected, bool):
        raise OperationError(f"{path}.connected", "must be true, false or null")
    kw["connected"] = connected
    return Query(**kw)


def select_chargers(query: Query, chargers: Iterable[ChargerSnapshot]) -> list[str]:
    """The ids the query selects, in the given order (explicit ``charger_ids`` keep theirs)."""
    target = Selector(
        vendors=query.vendors,
        models=query.models,
        sites=query.sites,
        regions=query.regions,
        tags=query.tags,
        charger_ids=query.charger_ids,
    )
    versions = set(query.firmware_versions)
    chosen = [
        c.id
        for c in chargers
        if matches(target, c)
        and (not versions or c.firmware_version in versions)
        and (query.connected is None or c.connected == query.connected)
    ]
    if query.charger_ids:
        order = {cid: i for i, cid in enumerate(query.charger_ids)}
        chosen.sort(key=lambda cid: order[cid])
    return chosen
