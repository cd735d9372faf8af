"""Form fields for remote commands, derived from each catalog entry's parameter model.

The catalog's pydantic models are the single description of what a command takes; the
console turns their JSON schema into labelled inputs (simple fields) or a JSON text area
(nested structures such as charging profiles), so a new catalog entry gets a form for free.
The API validates the values again, and its problems name the field to show them next to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evota.control import catalog


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    label: str
    kind: str  # text | int | float | bool | select | list | json
    required: bool
    options: tuple[str, ...] = ()
    default: str = ""
    help: str = ""


@dataclass(frozen=True, slots=True)
class CommandForm:
    name: str
    summary: str
    critical: bool
    permission: str
    fields: tuple[FormField, ...]


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _unwrap(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The non-null branch of ``X | None`` and whether null was allowed."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1:
            merged = {**prop, **real[0]}
            merged.pop("anyOf", None)
            return merged, len(real) < len(options)
    return prop, False


def field_of(name: str, prop: dict[str, Any], required: bool) -> FormField:
    """One input for a JSON-schema property."""
    prop, nullable = _unwrap(prop)
    required = required and not nullable
    default = prop.get("default")
    shown = "" if default is None or isinstance(default, (dict, list)) else str(default)
    if isinstance(default, bool):
        shown = "true" if default else ""
    help_text = str(prop.get("description") or "")
    kind = "json"
    options: tuple[str, ...] = ()
    if "enum" in prop:
        kind, options = "select", tuple(str(v) for v in prop["enum"])
    elif "const" in prop:
        kind, options = "select", (str(prop["const"]),)
    else:
        t = prop.get("type")
        if t == "string":
            kind = "text"
            if prop.get("format") == "date-time":
                help_text = (help_text + "; " if help_text else "") + "ISO time with offset"
        elif t == "integer":
            kind = "int"
        elif t == "number":
            kind = "float"
        elif t == "boolean":
            kind = "bool"
        elif t == "array" and (prop.get("items") or {}).get("type") == "string":
            kind = "list"
            help_text = (help_text + "; " if help_text else "") + "comma-separated"
    return FormField(name, _label(name), kind, required, options, shown, help_text)


def command_form(spec: catalog.CommandSpec) -> CommandForm:
    schema = spec.params.model_json_schema()
    required = set(schema.get("required") or ())
    fields = tuple(
        field_of(name, prop, name in required)
        for name, prop in (schema.get("properties") or {}).items()
    )
    return CommandForm(spec.name, spec.summary, spec.critical, spec.permission, fields)


def command_forms() -> tuple[CommandForm, ...]:
    """Every catalog command, the commonest first (reset, availability, unlock, ...)."""
    first = ("reset", "change-availability", "unlock-connector", "trigger-message")
    specs = sorted(
        catalog.COMMANDS.values(),
        key=lambda s: (first.index(s.name) if s.name in first else len(first), s.name),
    )
    return tuple(command_form(s) for s in specs)
