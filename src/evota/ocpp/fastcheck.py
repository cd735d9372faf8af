"""A fast, sound but incomplete acceptor for the OCPP JSON schemas.

``fastjsonschema`` turns each schema into Python code that is correct and names the field
at fault, but pays for that on every message: a function call per ``$ref``, a formatted
field path per array item, a list scan per enum. A 2.0.1 TransactionEvent with a few sampled
values took ~80 µs that way, most of a core's budget per message. This module generates a
tighter check for the subset of JSON Schema the OCPP schemas use (types, properties,
required, additionalProperties, enum, maxLength, items, minItems, maxItems, minimum,
maximum, the date-time format, local ``$ref``s), inlined into one function.

It only ever *accepts*: ``True`` means the payload is valid; ``False`` means "not sure". Any
construct it does not model exactly (``multipleOf``, floats where an integer is expected,
other formats, ...) answers ``False``, and the caller then runs the full validator, which
either accepts after all or raises the precise CALLERROR. So the verdict and the error for an
invalid payload are always ``fastjsonschema``'s; ``tests/ocpp/test_fastcheck.py`` checks that
the two agree on random payloads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastjsonschema.draft04 import CodeGeneratorDraft04

#: Keywords that do not constrain the value (annotations, bookkeeping).
_IGNORED = frozenset(
    {"$schema", "$id", "id", "title", "description", "comment", "javaType", "default"}
)
_TYPED = {
    "object": frozenset({"type", "properties", "required", "additionalProperties", "definitions"}),
    "array": frozenset({"type", "items", "minItems", "maxItems", "additionalItems"}),
    "string": frozenset(
        {"type", "enum", "maxLength", "minLength", "format", "additionalProperties"}
    ),
    "integer": frozenset({"type", "minimum", "maximum"}),
    "number": frozenset({"type", "minimum", "maximum"}),
    "boolean": frozenset({"type"}),
}
# The very pattern fastjsonschema checks date-time with, so both agree on every string.
_FORMATS = {"date-time": re.compile(CodeGeneratorDraft04.FORMAT_REGEXS["date-time"]).match}


class _Unsupported(Exception):
    pass


class _Generator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.definitions: dict[str, Any] = root.get("definitions", {})
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.counter = 0

    def constant(self, value: Any) -> str:
        name = f"_k{len(self.names)}"
        self.names[name] = value
        return name

    def variable(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def node(self, schema: dict[str, Any], var: str, depth: int, nesting: int = 0) -> None:
        """Checks for ``var`` against ``schema``; ``return False`` where unsure."""
        if nesting > 40:
            raise _Unsupported("schema too deep (recursive reference?)")
        ref = schema.get("$ref")
        if ref is not None:
            if not ref.startswith("#/definitions/") or len(schema) != 1:
                self.emit(depth, "return False")
                return
            target = self.definitions.get(ref.removeprefix("#/definitions/"))
            if target is None:
                raise _Unsupported(f"unresolved {ref}")
            self.node(target, var, depth, nesting + 1)
            return
        keys = set(schema) - _IGNORED
        kind = schema.get("type")
        if kind is None:
            if keys - {"definitions"}:  # constraints without a type: not modelled
                self.emit(depth, "return False")
            return  # anything goes (e.g. DataTransfer.data)
        allowed = _TYPED.get(kind) if isinstance(kind, str) else None
        if allowed is None or not keys <= allowed:
            self.emit(depth, "return False")
            return
        getattr(self, "_" + kind)(schema, var, depth, nesting)

    def _object(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        self.emit(depth, f"if type({var}) is not dict: return False")
        properties: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required")
        if required:
            self.emit(
                depth, f"if not {self.constant(frozenset(required))} <= {var}.keys(): return False"
            )
        extra = schema.get("additionalProperties", True)
        if extra is False:
            self.emit(
                depth,
                f"if not {var}.keys() <= {self.constant(frozenset(properties))}: return False",
            )
        elif extra is not True:
            self.emit(depth, "return False")
            return
        for key, sub in properties.items():
            if not isinstance(sub, dict) or not (set(sub) - _IGNORED):
                continue  # no constraint on this property
            value = self.variable()
            self.emit(depth, f"if {key!r} in {var}:")  # cheaper than .get for absent keys
            self.emit(depth + 1, f"{value} = {var}[{key!r}]")
            self.node(sub, value, depth + 1, nesting + 1)

    def _array(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        self.emit(depth, f"if type({var}) is not list: return False")
        if "minItems" in schema:
            self.emit(depth, f"if len({var}) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            self.emit(depth, f"if len({var}) > {int(schema['maxItems'])}: return False")
        items = schema.get("items")
        if items is None:
            return
        if not isinstance(items, dict):  # tuple validation: not modelled
            self.emit(depth, "return False")
            return
        item = self.variable()
        self.emit(depth, f"for {item} in {var}:")
        mark = len(self.lines)
        self.node(items, item, depth + 1, nesting + 1)
        if len(self.lines) == mark:
            self.emit(depth + 1, "pass")

    def _string(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        if "enum" in schema:
            values = schema["enum"]
            if not all(isinstance(v, str) for v in values):
                self.emit(depth, "return False")
                return
            allowed = self.constant(frozenset(values))
            self.emit(depth, f"if type({var}) is not str or {var} not in {allowed}: return False")
        else:
            self.emit(depth, f"if type({var}) is not str: return False")
        if "maxLength" in schema:
            self.emit(depth, f"if len({var}) > {int(schema['maxLength'])}: return False")
        if "minLength" in schema:
            self.emit(depth, f"if len({var}) < {int(schema['minLength'])}: return False")
        if "format" in schema:
            check = _FORMATS.get(schema["format"])
            if check is None:
                self.emit(depth, "return False")
                return
            self.emit(depth, f"if {self.constant(check)}({var}) is None: return False")

    def _bounds(self, schema: dict[str, Any], var: str, depth: int) -> None:
        for keyword, op in (("minimum", "<"), ("maximum", ">")):
            if keyword in schema:
                bound = schema[keyword]
                if type(bound) not in (int, float):
                    self.emit(depth, "return False")
                    return
                self.emit(depth, f"if {var} {op} {bound!r}: return False")

    def _integer(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        # 1.0 is a valid JSON integer, but rare: the full validator decides those.
        self.emit(depth, f"if type({var}) is not int: return False")
        self._bounds(schema, var, depth)

    def _number(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        self.emit(depth, f"if type({var}) is not float and type({var}) is not int: return False")
        self._bounds(schema, var, depth)

    def _boolean(self, schema: dict[str, Any], var: str, depth: int, nesting: int) -> None:
        self.emit(depth, f"if type({var}) is not bool: return False")


def compile_acceptor(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A function that answers True only for payloads ``schema`` accepts (None when the
    schema is outside the modelled subset altogether)."""
    gen = _Generator(schema)
    try:
        gen.node(schema, "data", 1)
    except _Unsupported:
        return None
    source = "def accept(data):\n" + "\n".join(gen.lines) + "\n    return True\n"
    namespace: dict[str, Any] = dict(gen.names)
    exec(compile(source, "<ocpp-fastcheck>", "exec"), namespace)  # the code generated above
    accept: Callable[[Any], bool] = namespace["accept"]
    return accept
