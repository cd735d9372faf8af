"""Schema validation of OCPP payloads, compiled once per action for speed.

The official JSON schemas come from the ``ocpp`` package. ``fastjsonschema`` compiles each to
Python code, which is one to two orders of magnitude faster than the ``jsonschema`` Draft 4
validator the ``ocpp`` package uses, so validation can stay on in the hot path. In front of
it, :mod:`evota.ocpp.fastcheck` accepts the valid payloads several times faster again (it
matters for big 2.0.1 messages such as TransactionEvent); whatever it is not sure of, and
every invalid payload, goes to the compiled ``fastjsonschema`` validator, which decides and
names the fault.

Which CALLERROR a violation earns (the spec names the codes but not the mapping):

=====================  =======================================================
schema keyword         error kind
=====================  =======================================================
required               OccurrenceConstraintViolation (a field occurs 0 times)
type                   TypeConstraintViolation
additionalProperties   FormatViolation (payload does not conform to the PDU)
enum, maxLength, ...   PropertyConstraintViolation (valid type, invalid value)
=====================  =======================================================
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema

from evota.fleet.bounds import clean_text
from evota.ocpp.errors import ErrorKind, RpcError
from evota.ocpp.fastcheck import compile_acceptor

_KIND_BY_RULE = {
    "required": ErrorKind.OCCURRENCE_CONSTRAINT,
    "minItems": ErrorKind.OCCURRENCE_CONSTRAINT,
    "maxItems": ErrorKind.OCCURRENCE_CONSTRAINT,
    "minProperties": ErrorKind.OCCURRENCE_CONSTRAINT,
    "maxProperties": ErrorKind.OCCURRENCE_CONSTRAINT,
    "type": ErrorKind.TYPE_CONSTRAINT,
    "additionalProperties": ErrorKind.FORMAT,
}

Validator = Callable[[Any], Any]
#: A field path in a CALLERROR and the log is cut here: an unknown property's name is the
#: charger's choice and may be as long as the message.
MAX_FIELD_NAME = 100


class SchemaSet:
    """The request and response schemas of one OCPP version, compiled lazily per action."""

    def __init__(self, package: str, response_suffix: str, request_suffix: str = "") -> None:
        self._dir = importlib.resources.files(package)
        self._request_suffix = request_suffix
        self._response_suffix = response_suffix
        self._cache: dict[str, Validator] = {}
        # Schemas an empty payload satisfies: {} is the commonest answer, and its verdict
        # never changes, so it is computed once per schema.
        self._empty_ok: set[str] = set()
        names = [p.name.removesuffix(".json") for p in self._dir.iterdir()]
        self.actions = frozenset(
            n.removesuffix(request_suffix)
            for n in names
            if n.endswith(request_suffix) and not n.endswith(response_suffix)
        )

    def _validator(self, name: str) -> Validator:
        validator = self._cache.get(name)
        if validator is None:
            schema = json.loads((self._dir / f"{name}.json").read_text(encoding="utf-8"))
            schema.pop("$id", None)
            _int32(schema)
            _connector_ids(schema)
            # The payload is freshly parsed JSON, so defaults need not be filled in.
            full = fastjsonschema.compile(schema, use_default=False, detailed_exceptions=True)
            accept = compile_acceptor(schema)
            validator = full if accept is None else _fast_first(accept, full)
            self._cache[name] = validator
        return validator

    def validate_request(self, action: str, payload: dict[str, Any], message_id: str) -> None:
        self._check(self._validator(action + self._request_suffix), payload, message_id)

    def validate_response(self, action: str, payload: dict[str, Any], message_id: str) -> None:
        name = action + self._response_suffix
        if not payload and name in self._empty_ok:
            return
        self._check(self._validator(name), payload, message_id)
        if not payload:
            self._empty_ok.add(name)

    @staticmethod
    def _check(validator: Validator, payload: dict[str, Any], message_id: str) -> None:
        try:
            validator(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            kind = _KIND_BY_RULE.get(exc.rule or "", ErrorKind.PROPERTY_CONSTRAINT)
            field = clean_text(_field_of(exc), MAX_FIELD_NAME)  # the peer chose the names
            raise RpcError(
                kind,
                clean_text(f"{field}: {exc.message}", 255),  # the message quotes the value
                message_id,
                {"field": field, "rule": exc.rule},
            ) from None


#: OCPP's ``integer`` is 32 bits, sign included (1.6 and 2.0.1 part 2, "Data types"); the
#: JSON schemas do not say so, and a larger value would fail where evota stores it.
INT32 = (-(2**31), 2**31 - 1)


def _int32(node: Any) -> None:
    """Bound every ``integer`` of a schema to :data:`INT32`, keeping tighter bounds."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node["minimum"] = max(node.get("minimum", INT32[0]), INT32[0])
            node["maximum"] = min(node.get("maximum", INT32[1]), INT32[1])
        for value in node.values():
            _int32(value)
    elif isinstance(node, list):
        for value in node:
            _int32(value)


#: The largest connector or EVSE id evota accepts. The schemas leave them unbounded, and
#: evota keeps a status per id per charger (in memory and in the ``connectors`` table): a
#: charger counting its ids upwards must not grow either without limit. Real chargers have
#: a handful; 255 leaves room for the largest hubs.
MAX_CONNECTOR_ID = 255
_ID_PROPERTIES = ("connectorId", "evseId")


def _connector_ids(node: Any, evse: bool = False) -> None:
    """Bound ``connectorId``, ``evseId`` and an EVSE's ``id`` to :data:`MAX_CONNECTOR_ID`."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            names = (*_ID_PROPERTIES, "id") if evse else _ID_PROPERTIES
            for name in names:
                prop = properties.get(name)
                if isinstance(prop, dict) and prop.get("type") == "integer":
                    prop["maximum"] = min(prop.get("maximum", MAX_CONNECTOR_ID), MAX_CONNECTOR_ID)
        definitions = node.get("definitions")
        for key, value in node.items():
            if key == "definitions" and isinstance(definitions, dict):
                for name, definition in definitions.items():
                    _connector_ids(definition, evse=name == "EVSEType")
            else:
                _connector_ids(value)
    elif isinstance(node, list):
        for value in node:
            _connector_ids(value)


def _fast_first(accept: Callable[[Any], bool], full: Validator) -> Validator:
    def validate(payload: Any) -> Any:
        if accept(payload):
            return payload
        return full(payload)

    return validate


_SETS: dict[str, SchemaSet] = {}


def v16() -> SchemaSet:
    if "1.6" not in _SETS:
        _SETS["1.6"] = SchemaSet("ocpp.v16.schemas", response_suffix="Response")
    return _SETS["1.6"]


def v201() -> SchemaSet:
    """2.0.1 schemas are named ``<Action>Request.json`` / ``<Action>Response.json``."""
    if "2.0.1" not in _SETS:
        _SETS["2.0.1"] = SchemaSet(
            "ocpp.v201.schemas", response_suffix="Response", request_suffix="Request"
        )
    return _SETS["2.0.1"]


def _field_of(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """Name the offending field the way an integrator reads it: ``idTagInfo.status``."""
    base = (exc.name or "data").removeprefix("data").lstrip(".")
    culprit = ""
    if exc.rule == "required" and isinstance(exc.value, dict):
        culprit = next((f for f in exc.rule_definition or () if f not in exc.value), "")
    elif exc.rule == "additionalProperties" and isinstance(exc.value, dict) and exc.definition:
        known = exc.definition.get("properties", {})
        culprit = next((str(f) for f in exc.value if f not in known), "")
    name = ".".join(p for p in (base, culprit) if p)
    return name or "(payload)"
