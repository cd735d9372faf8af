"""A playbook as data: what starts a run, which chargers, the steps and the guard rails.

Pure. The shared vocabulary of the playbook package: the API, the CLI and the console parse
operators' JSON/YAML into these types (``parse``, with :class:`SpecError` naming the field),
and the engine (triggers, guards, runs) reads nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import pydantic
import yaml

from evota.control import catalog
from evota.rollout.policy import Window
from evota.selection import Selector

__all__ = [
    "COMMANDS",
    "CONNECTOR",
    "KPIS",
    "MAX_MINUTES",
    "MAX_STEPS",
    "MAX_TEXT_BYTES",
    "Approval",
    "Condition",
    "ConditionKind",
    "Escalation",
    "Guards",
    "Playbook",
    "SpecError",
    "Step",
    "Trigger",
    "TriggerKind",
    "definition",
    "load_text",
    "parse",
    "parse_text",
    "spec_hash",
    "to_dict",
]


class SpecError(ValueError):
    """A playbook that cannot be used; ``field`` is the dotted path (``steps[1].wait.minutes``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TriggerKind(StrEnum):
    CONNECTOR_FAULTED = "connector_faulted"  # a connector Faulted (error_codes) >= for_minutes
    OFFLINE_THEN_BACK = "offline_then_back"  # offline > offline_minutes, then connected again
    JOB_STUCK = "job_stuck"  # a firmware job in one non-terminal state >= for_minutes
    FIRMWARE_STATUS = "firmware_status"  # a firmware status notification in statuses
    SECURITY_EVENT = "security_event"  # a security event whose type is in event_types
    REPEATED_BOOTS = "repeated_boots"  # >= count BootNotifications within within_minutes
    KPI_THRESHOLD = "kpi_threshold"  # yesterday's daily KPI below/above a threshold


@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts a run on one charger. Only the fields of ``kind`` are meaningful; an empty
    set means "any" (any error code, any status, any event type)."""

    kind: TriggerKind
    error_codes: frozenset[str] = frozenset()
    for_minutes: float = 0.0
    offline_minutes: float = 0.0
    statuses: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    count: int = 0
    within_minutes: float = 0.0
    kpi: str | None = None  # e.g. "availability", "session_success"
    below: float | None = None
    above: float | None = None


class ConditionKind(StrEnum):
    CONNECTOR_AVAILABLE = "connector_available"  # the triggering connector (or all) operative
    NO_FAULT = "no_fault"  # no connector of the charger Faulted
    RECONNECTED = "reconnected"  # the charger connected (and booted) after the step
    SESSION_STARTED = "session_started"


@dataclass(frozen=True, slots=True)
class Condition:
    """Wait until ``kind`` holds, at most ``minutes``; then the run goes on (success) or,
    on the deadline, to the next step (or escalates if it was the last command)."""

    kind: ConditionKind
    minutes: float


@dataclass(frozen=True, slots=True)
class Escalation:
    """Hand the fault to people: an alert and/or a webhook to a ticketing system."""

    alert: bool = True
    webhook_url: str | None = None
    message: str | None = None


class Approval(StrEnum):
    """What a step that the approval policy guards does: wait for a second operator's
    approval (``wait``) or end the run as refused (``refuse``)."""

    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Step:
    """One step: exactly one of ``command`` (a :mod:`evota.control.catalog` name, with
    ``params``; ``"{connector}"`` in a value is the triggering connector) or ``escalate``.
    ``wait`` applies after a command; without it the run goes straight to the next step."""

    command: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    wait: Condition | None = None
    escalate: Escalation | None = None


@dataclass(frozen=True, slots=True)
class Guards:
    """The guard rails; every one is enforced by the engine (docs/playbooks.md)."""

    max_runs_per_charger_per_day: int = 3  # per (charger, fault) and per local day
    max_concurrent: int = 10  # runs in progress fleet-wide for this playbook
    max_concurrent_per_site: int = 1
    max_starts_per_hour: int = 30  # fleet-wide start rate
    breaker_failure_rate: float = 0.5  # suspend when this share of recent runs failed ...
    breaker_min_runs: int = 5  # ... over at least this many finished runs
    breaker_triggers_per_hour: int = 50  # suspend when triggers arrive faster than this
    approval: Approval = Approval.WAIT


@dataclass(frozen=True, slots=True)
class Playbook:
    """One version of a playbook. ``version`` grows by one on every change; runs and audit
    entries name ``name@version``."""

    name: str
    version: int
    trigger: Trigger
    steps: tuple[Step, ...]
    target: Selector = field(default_factory=Selector)
    guards: Guards = field(default_factory=Guards)
    description: str = ""
    enabled: bool = False
    dry_run: bool = False

    @property
    def actor(self) -> str:
        """The audit actor of every action this version takes."""
        return f"playbook:{self.name}@{self.version}"


# Site windows (the "allowed hours" guard) reuse the campaigns' maintenance windows.
SiteHours = tuple[Window, ...]


# -- bounds --------------------------------------------------------------------------------

MAX_MINUTES = 7 * 24 * 60  # a week: every duration (trigger and wait) is in (0, MAX_MINUTES]
MAX_STEPS = 10
MAX_TEXT_BYTES = 64 * 1024  # a YAML/JSON playbook document
MAX_LIST = 50  # error codes, statuses, event types
MAX_SELECTOR_ITEMS = 1000  # values of one target filter
MAX_MESSAGE = 500
MAX_URL = 2000
MAX_PARAMS_DEPTH = 8
MAX_YAML_DEPTH = 32  # a playbook nests about 5 levels, its params a few more
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
RESERVED = frozenset({"runs", "kill-switch"})  # /api/v1/playbooks/<these> are other routes
#: In a command step's params, this exact value stands for the triggering connector.
CONNECTOR = "{connector}"

#: The catalog commands a playbook may send: the ones that heal or diagnose a charger.
#: Sessions, authorization lists, certificates and charging profiles are for people.
COMMANDS = frozenset(
    {
        "reset",
        "unlock-connector",
        "change-availability",
        "trigger-message",
        "clear-cache",
        "get-configuration",
        "change-configuration",
        "get-diagnostics",
        "get-log",
        "get-variables",
        "set-variables",
        "clear-charging-profile",
        "data-transfer",
    }
)

#: Per-charger daily KPIs a ``kpi_threshold`` trigger can watch (evota.evidence.daily);
#: True for a rate in [0, 1], False for a count per day.
KPIS: Mapping[str, bool] = {
    "availability": True,
    "connected_share": True,
    "session_success_rate": True,
    "faults": False,
    "failed_sessions": False,
    "offline_episodes": False,
    "reconnects": False,
}
MAX_COUNT = 1_000_000

# The fields each trigger kind uses (besides ``kind``); the others are refused.
TRIGGER_FIELDS: Mapping[TriggerKind, tuple[str, ...]] = {
    TriggerKind.CONNECTOR_FAULTED: ("error_codes", "for_minutes"),
    TriggerKind.OFFLINE_THEN_BACK: ("offline_minutes",),
    TriggerKind.JOB_STUCK: ("for_minutes",),
    TriggerKind.FIRMWARE_STATUS: ("statuses",),
    TriggerKind.SECURITY_EVENT: ("event_types",),
    TriggerKind.REPEATED_BOOTS: ("count", "within_minutes"),
    TriggerKind.KPI_THRESHOLD: ("kpi", "below", "above"),
}
_REQUIRED: Mapping[TriggerKind, tuple[str, ...]] = {
    TriggerKind.CONNECTOR_FAULTED: ("for_minutes",),
    TriggerKind.OFFLINE_THEN_BACK: ("offline_minutes",),
    TriggerKind.JOB_STUCK: ("for_minutes",),
    TriggerKind.REPEATED_BOOTS: ("count", "within_minutes"),
    TriggerKind.KPI_THRESHOLD: ("kpi",),
}
# Upper bounds of the guards (each is an integer >= 1 unless a rate).
_GUARD_MAX: Mapping[str, int] = {
    "max_runs_per_charger_per_day": 100,
    "max_concurrent": 100_000,
    "max_concurrent_per_site": 1000,
    "max_starts_per_hour": 1_000_000,
    "breaker_min_runs": 100_000,
    "breaker_triggers_per_hour": 1_000_000,
}
_SELECTOR_FIELDS = tuple(f.name for f in fields(Selector))
_TOP = (
    "name",
    "version",
    "description",
    "enabled",
    "dry_run",
    "trigger",
    "target",
    "steps",
    "guards",
)


# -- parsing -------------------------------------------------------------------------------


def parse_text(text: str | bytes, *, allow_http_webhooks: bool = False) -> Playbook:
    """A playbook from a YAML or JSON document (:func:`load_text`, then :func:`parse`)."""
    return parse(load_text(text), allow_http_webhooks=allow_http_webhooks)


def load_text(text: str | bytes) -> object:
    """The data of a YAML or JSON document (JSON is YAML): at most :data:`MAX_TEXT_BYTES`,
    no aliases (a small document must not expand into a huge one)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_TEXT_BYTES:
        raise SpecError("", f"the document is larger than {MAX_TEXT_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
        if decoded.lstrip().startswith(("{", "[")):
            try:  # JSON first: YAML reads no surrogate-pair escapes, which JSON writers emit
                return json.loads(decoded)
            except json.JSONDecodeError:
                pass  # a YAML flow mapping such as {name: p}
        _check_events(decoded)
        return yaml.load(decoded, Loader=yaml.CSafeLoader)
    except SpecError:
        raise
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SpecError("", f"not valid YAML or JSON{at}: {problem}") from None


def _check_events(text: str) -> None:
    """Walk the document's events with the pure-Python parser (iterative) before libyaml
    builds it: aliases and nesting deeper than :data:`MAX_YAML_DEPTH` are refused, since
    libyaml's loader recurses in C and a deeply nested document crashes the process."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise SpecError("", "YAML aliases (*name) are not accepted")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise SpecError("", f"nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse(data: object, *, allow_http_webhooks: bool = False) -> Playbook:
    """A playbook from its JSON shape (:func:`to_dict`); strict: unknown fields, wrong types
    and values out of bounds are refused with a :class:`SpecError` naming the field.
    ``version`` defaults to 1, ``enabled`` and ``dry_run`` to false."""
    d = _mapping(data, "")
    _check_keys(d, _TOP, "")
    name = d.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise SpecError("name", "must be 1-64 lowercase letters, digits and '-' (not first)")
    if name in RESERVED:
        raise SpecError("name", f"{name!r} is reserved (an API path)")
    version = d.get("version", 1)
    if not _is_int(version) or not 1 <= version <= 2**31 - 1:
        raise SpecError("version", "must be an integer >= 1")
    description = d.get("description", "")
    if not isinstance(description, str) or len(description) > 2000 or "\x00" in description:
        raise SpecError("description", "must be a string of at most 2000 characters, no NUL")
    if "trigger" not in d:
        raise SpecError("trigger", "required")
    trigger = _trigger(d["trigger"], "trigger")
    if "steps" not in d:
        raise SpecError("steps", "required")
    return Playbook(
        name=name,
        version=version,
        trigger=trigger,
        steps=_steps(d["steps"], trigger, allow_http_webhooks),
        target=_selector(d.get("target"), "target"),
        guards=_guards(d.get("guards"), "guards"),
        description=description,
        enabled=_bool(d.get("enabled", False), "enabled"),
        dry_run=_bool(d.get("dry_run", False), "dry_run"),
    )


def _trigger(data: object, path: str) -> Trigger:
    d = _mapping(data, path)
    raw_kind = d.get("kind")
    kinds = ", ".join(k.value for k in TriggerKind)
    if not isinstance(raw_kind, str) or raw_kind not in TriggerKind._value2member_map_:
        raise SpecError(f"{path}.kind", f"must be one of {kinds}")
    kind = TriggerKind(raw_kind)
    allowed = TRIGGER_FIELDS[kind]
    _check_keys(d, ("kind", *allowed), path, f"fields of {kind.value}")
    for name in _REQUIRED.get(kind, ()):
        if d.get(name) is None:
            raise SpecError(f"{path}.{name}", f"required for {kind.value}")
    kw: dict[str, Any] = {"kind": kind}
    for name in ("for_minutes", "offline_minutes", "within_minutes"):
        if name in d:
            kw[name] = _minutes(d[name], f"{path}.{name}")
    for name in ("error_codes", "statuses", "event_types"):
        if name in d:
            kw[name] = frozenset(_strings(d[name], f"{path}.{name}", MAX_LIST, 64))
    if "count" in d:
        count = d["count"]
        if not _is_int(count) or not 1 <= count <= 1000:
            raise SpecError(f"{path}.count", "must be an integer in [1, 1000]")
        kw["count"] = count
    if kind is TriggerKind.KPI_THRESHOLD:
        kpi = d["kpi"]
        if not isinstance(kpi, str) or kpi not in KPIS:
            raise SpecError(f"{path}.kpi", f"must be one of {', '.join(KPIS)}")
        kw["kpi"] = kpi
        given = [b for b in ("below", "above") if d.get(b) is not None]
        if len(given) != 1:
            raise SpecError(f"{path}.below", "give exactly one of below and above")
        bound = given[0]
        value = d[bound]
        high = 1.0 if KPIS[kpi] else float(MAX_COUNT)
        if not _is_number(value) or not 0 <= value <= high:
            what = "a rate in [0, 1]" if KPIS[kpi] else f"a number in [0, {MAX_COUNT}]"
            raise SpecError(f"{path}.{bound}", f"must be {what} for {kpi}")
        kw[bound] = float(value)
    return Trigger(**kw)


def _steps(data: object, trigger: Trigger, allow_http: bool) -> tuple[Step, ...]:
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise SpecError("steps", "must be a list of steps")
    if not 1 <= len(data) <= MAX_STEPS:
        raise SpecError("steps", f"give 1 to {MAX_STEPS} steps")
    return tuple(_step(item, f"steps[{i}]", trigger, allow_http) for i, item in enumerate(data))


def _step(data: object, path: str, trigger: Trigger, allow_http: bool) -> Step:
    d = _mapping(data, path)
    _check_keys(d, ("command", "params", "wait", "escalate"), path)
    if ("command" in d) == ("escalate" in d):
        raise SpecError(path, "give exactly one of command and escalate")
    if "escalate" in d:
        for name in ("params", "wait"):
            if name in d:
                raise SpecError(f"{path}.{name}", "only a command step has params and a wait")
        return Step(escalate=_escalation(d["escalate"], f"{path}.escalate", allow_http))
    command = d["command"]
    if not isinstance(command, str) or command not in COMMANDS:
        raise SpecError(f"{path}.command", f"must be one of {', '.join(sorted(COMMANDS))}")
    params = _params(command, d.get("params", {}), f"{path}.params", trigger)
    wait = _condition(d["wait"], f"{path}.wait") if d.get("wait") is not None else None
    return Step(command=command, params=params, wait=wait)


def _params(command: str, data: object, path: str, trigger: Trigger) -> dict[str, Any]:
    """The step's params as given (the connector placeholder kept), once they validate
    against the catalog command with the placeholder standing for connector 1."""
    d = _mapping(data, path)
    for key, value in d.items():
        if not isinstance(key, str) or "\x00" in key:
            raise SpecError(path, "keys must be strings without NUL")
        _json_value(value, f"{path}.{key}", 0)
        if value == CONNECTOR and trigger.kind is not TriggerKind.CONNECTOR_FAULTED:
            raise SpecError(
                f"{path}.{key}", f"{CONNECTOR} needs a trigger with a connector (connector_faulted)"
            )
    spec = catalog.get(command)
    assert spec is not None  # COMMANDS is a subset of the catalog (a test checks it)
    sample = {k: (1 if v == CONNECTOR else v) for k, v in d.items()}
    try:
        spec.params.model_validate(sample)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        raise SpecError(f"{path}{loc}", str(error["msg"])) from None
    if command == "change-configuration" and str(d.get("key", "")).casefold() in (
        catalog.SECRET_KEYS
    ):
        raise SpecError(f"{path}.key", "a charger credential cannot be set by a playbook")
    return dict(d)


def _json_value(v: object, path: str, depth: int) -> None:
    """Only JSON values (YAML dates, binary or NaN would not store), nested a few levels."""
    if depth > MAX_PARAMS_DEPTH:
        raise SpecError(path, f"nested deeper than {MAX_PARAMS_DEPTH} levels")
    if isinstance(v, str) and "\x00" in v:
        raise SpecError(path, "must not contain NUL characters")
    if v is None or isinstance(v, bool | str) or _is_int(v):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise SpecError(path, "must be a finite number")
        return
    if isinstance(v, list):
        for i, item in enumerate(v):
            _json_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(v, dict):
        for key, item in v.items():
            if not isinstance(key, str) or "\x00" in key:
                raise SpecError(path, "keys must be strings without NUL")
            _json_value(item, f"{path}.{key}", depth + 1)
        return
    raise SpecError(path, "must be a JSON value (string, number, boolean, list, object or null)")


def _condition(data: object, path: str) -> Condition:
    d = _mapping(data, path)
    _check_keys(d, ("until", "minutes"), path)
    until = d.get("until")
    if not isinstance(until, str) or until not in ConditionKind._value2member_map_:
        kinds = ", ".join(k.value for k in ConditionKind)
        raise SpecError(f"{path}.until", f"must be one of {kinds}")
    if "minutes" not in d:
        raise SpecError(f"{path}.minutes", "required")
    return Condition(ConditionKind(until), _minutes(d["minutes"], f"{path}.minutes"))


def _escalation(data: object, path: str, allow_http: bool) -> Escalation:
    d = _mapping(data, path)
    _check_keys(d, ("alert", "webhook_url", "message"), path)
    alert = _bool(d.get("alert", True), f"{path}.alert")
    url = d.get("webhook_url")
    if url is not None:
        url = _webhook(url, f"{path}.webhook_url", allow_http)
    message = d.get("message")
    if message is not None and (
        not isinstance(message, str) or len(message) > MAX_MESSAGE or "\x00" in message
    ):
        raise SpecError(f"{path}.message", f"must be a string of at most {MAX_MESSAGE} characters")
    if not alert and url is None:
        raise SpecError(path, "an escalation raises an alert, calls a webhook or both")
    return Escalation(alert=alert, webhook_url=url, message=message)


_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#\s]*)[^\s]*$")


def _webhook(v: object, path: str, allow_http: bool) -> str:
    if not isinstance(v, str) or len(v) > MAX_URL or not v.isprintable():
        raise SpecError(path, f"must be a URL of at most {MAX_URL} printable characters")
    m = _URL.match(v)
    scheme = m.group("scheme").lower() if m else ""
    if m is None or not m.group("authority") or scheme not in ("https", "http"):
        raise SpecError(path, "must be an https:// URL")
    if scheme == "http" and not allow_http:
        raise SpecError(path, "must be https (EVOTA_PLAYBOOK_WEBHOOK_ALLOW_HTTP allows http)")
    if "@" in m.group("authority"):
        raise SpecError(path, "must not carry credentials (user:password@); use a token path")
    return v


def _guards(data: object, path: str) -> Guards:
    d = _mapping(data if data is not None else {}, path)
    names = tuple(f.name for f in fields(Guards))
    _check_keys(d, names, path)
    kw: dict[str, Any] = {}
    for name, high in _GUARD_MAX.items():
        if name in d:
            v = d[name]
            if not _is_int(v) or not 1 <= v <= high:
                raise SpecError(f"{path}.{name}", f"must be an integer in [1, {high}]")
            kw[name] = v
    if "breaker_failure_rate" in d:
        v = d["breaker_failure_rate"]
        if not _is_number(v) or not 0 < v <= 1:
            raise SpecError(f"{path}.breaker_failure_rate", "must be a rate in (0, 1]")
        kw["breaker_failure_rate"] = float(v)
    if "approval" in d:
        v = d["approval"]
        if not isinstance(v, str) or v not in Approval._value2member_map_:
            raise SpecError(f"{path}.approval", "must be one of wait, refuse")
        kw["approval"] = Approval(v)
    return Guards(**kw)


def _selector(data: object, path: str) -> Selector:
    d = _mapping(data if data is not None else {}, path)
    _check_keys(d, _SELECTOR_FIELDS, path)
    return Selector(
        **{k: _strings(d[k], f"{path}.{k}", MAX_SELECTOR_ITEMS, 100) for k in d if d[k] is not None}
    )


# -- helpers -------------------------------------------------------------------------------


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _minutes(v: object, path: str) -> float:
    if not _is_number(v) or not 0 < v <= MAX_MINUTES:  # type: ignore[operator]
        raise SpecError(path, f"must be a number of minutes in (0, {MAX_MINUTES}]")
    return float(v)  # type: ignore[arg-type]


def _mapping(v: object, path: str) -> Mapping[Any, Any]:
    if not isinstance(v, Mapping):
        raise SpecError(path, "must be an object")
    return v


def _check_keys(d: Mapping[Any, Any], allowed: Sequence[str], path: str, what: str = "") -> None:
    for key in d:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(
                where[:200], f"unknown field; {what or 'allowed'}: {', '.join(allowed)}"
            )


def _strings(v: object, path: str, most: int, longest: int) -> tuple[str, ...]:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise SpecError(path, "must be a list of strings")
    if len(v) > most:
        raise SpecError(path, f"at most {most} values")
    for i, item in enumerate(v):
        if not isinstance(item, str) or not item.strip() or len(item) > longest:
            raise SpecError(f"{path}[{i}]", f"must be a non-empty string of at most {longest}")
        if not item.isprintable():
            raise SpecError(f"{path}[{i}]", "must be printable (no control characters)")
    return tuple(dict.fromkeys(v))


def _bool(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(path, "must be true or false")
    return v


# -- the JSON shape ------------------------------------------------------------------------


def to_dict(p: Playbook) -> dict[str, Any]:
    """The JSON shape :func:`parse` reads: ``parse(to_dict(p)) == p``."""
    return {
        "name": p.name,
        "version": p.version,
        "enabled": p.enabled,
        "dry_run": p.dry_run,
        **definition(p),
    }


def definition(p: Playbook) -> dict[str, Any]:
    """What an operator defines (what the ``spec`` column stores and its hash covers): the
    playbook without its name, version and on/off switches."""
    t = p.trigger
    trigger: dict[str, Any] = {"kind": t.kind.value}
    for name in TRIGGER_FIELDS[t.kind]:
        v = getattr(t, name)
        if isinstance(v, frozenset):
            trigger[name] = sorted(v)
        elif v is not None:
            trigger[name] = v
    out: dict[str, Any] = {"description": p.description, "trigger": trigger}
    out["target"] = {
        k: list(getattr(p.target, k)) for k in _SELECTOR_FIELDS if getattr(p.target, k)
    }
    out["steps"] = [_step_dict(s) for s in p.steps]
    g = p.guards
    out["guards"] = {f.name: getattr(g, f.name) for f in fields(Guards)}
    out["guards"]["approval"] = g.approval.value
    return out


def _step_dict(s: Step) -> dict[str, Any]:
    if s.escalate is not None:
        e = s.escalate
        esc: dict[str, Any] = {"alert": e.alert}
        if e.webhook_url is not None:
            esc["webhook_url"] = e.webhook_url
        if e.message is not None:
            esc["message"] = e.message
        return {"escalate": esc}
    out: dict[str, Any] = {"command": s.command, "params": dict(s.params)}
    if s.wait is not None:
        out["wait"] = {"until": s.wait.kind.value, "minutes": s.wait.minutes}
    return out


def spec_hash(p: Playbook) -> str:
    """SHA-256 of the canonical JSON of :func:`definition`: what enabling a playbook
    records in the audit log, so the entry names exactly what was switched on."""
    canonical = json.dumps(definition(p), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
