"""OCPP-J framing: decode a text frame into a typed message and encode messages back.

Pure functions, no I/O. Decoding raises :class:`RpcError` with the error kind the spec asks
for, carrying the message id when it could be read so the CALLERROR can reference it.

Kinds follow OCPP-J 2.0.1 §4.3 (1.6 spells both framework kinds ``FormationViolation``):
a frame that is not a valid RPC message (not JSON, not an array, no readable id, a CALL
without action or payload) is ``RpcFrameworkError``; an unknown message type number is
``MessageTypeNotSupported``; a payload that is not an object is ``FormatViolation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from evota.ocpp.errors import ErrorKind, RpcError

CALL = 2
CALLRESULT = 3
CALLERROR = 4
MAX_ID_LENGTH = 36


# Not frozen: a frozen dataclass pays object.__setattr__ per field, on every message.
@dataclass(slots=True)
class Call:
    message_id: str
    action: str
    payload: dict[str, Any]
    #: The frame holds a ``\u0000`` escape: :func:`refuse_nul` decides once the action is
    #: known to be one evota takes (an unknown action's error comes first).
    nul: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class CallResult:
    message_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    message_id: str
    code: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)


Message = Call | CallResult | CallError


def _read_id(frame: list[Any]) -> str:
    if len(frame) < 2 or not isinstance(frame[1], str):
        raise RpcError(ErrorKind.RPC_FRAMEWORK, "message id missing or not a string")
    message_id = frame[1]
    if not message_id or len(message_id) > MAX_ID_LENGTH:
        raise RpcError(ErrorKind.RPC_FRAMEWORK, f"message id must be 1..{MAX_ID_LENGTH} characters")
    return message_id


def decode(text: str | bytes | bytearray | memoryview) -> Message:
    """Parse one OCPP-J frame. Payload shape is checked later, against the action's schema."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RpcError(ErrorKind.RPC_FRAMEWORK, f"invalid JSON: {exc}") from None
    if not isinstance(frame, list) or not frame:
        raise RpcError(ErrorKind.RPC_FRAMEWORK, "frame is not a non-empty JSON array")
    type_id = frame[0]
    message_id = _read_id(frame)
    if type_id == CALL and type(type_id) is int:
        if len(frame) != 4:
            raise RpcError(ErrorKind.RPC_FRAMEWORK, "CALL must have 4 elements", message_id)
        action, payload = frame[2], frame[3]
        if not isinstance(action, str) or not action:
            raise RpcError(
                ErrorKind.RPC_FRAMEWORK, "CALL action must be a non-empty string", message_id
            )
        if not isinstance(payload, dict):
            raise RpcError(ErrorKind.FORMAT, "CALL payload must be a JSON object", message_id)
        return Call(message_id, action, payload, _may_hold_nul(text))
    if type_id == CALLRESULT and type(type_id) is int:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise RpcError(
                ErrorKind.RPC_FRAMEWORK, "CALLRESULT must be [3, id, {payload}]", message_id
            )
        return CallResult(message_id, frame[2])
    if type_id == CALLERROR and type(type_id) is int:
        if (
            len(frame) != 5
            or not isinstance(frame[2], str)
            or not isinstance(frame[3], str)
            or not isinstance(frame[4], dict)
        ):
            raise RpcError(
                ErrorKind.RPC_FRAMEWORK,
                "CALLERROR must be [4, id, code, description, {details}]",
                message_id,
            )
        return CallError(message_id, frame[2], frame[3], frame[4])
    raise RpcError(
        ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED, f"unknown message type id {type_id!r}", message_id
    )


def _may_hold_nul(text: str | bytes | bytearray | memoryview) -> bool:
    """JSON cannot carry a raw NUL in a string, only its escape: a substring search is
    enough to pass the usual frame without walking it."""
    if isinstance(text, str):
        return "\\u0000" in text
    if isinstance(text, memoryview):
        text = text.tobytes()
    return b"\\u0000" in text


def refuse_nul(call: Call) -> None:
    """No OCPP field holds a NUL character, and PostgreSQL cannot store one in text: refuse
    the CALL, naming the field (the escape may also have been a literal ``\\u0000``)."""
    message_id = call.message_id
    stack: list[tuple[str, Any]] = [("", call.payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise RpcError(
                    ErrorKind.PROPERTY_CONSTRAINT,
                    f"{path or '(payload)'}: NUL characters are not allowed",
                    message_id,
                    {"field": path or "(payload)"},
                )
        elif isinstance(value, dict):
            for key, member in value.items():
                if "\x00" in key:
                    raise RpcError(
                        ErrorKind.FORMAT, "a property name holds a NUL character", message_id
                    )
                stack.append((f"{path}.{key}" if path else key, member))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", member) for i, member in enumerate(value))


def encode_call(message_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALL, message_id, action, payload])


def encode_result(message_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALLRESULT, message_id, payload])


def encode_error(
    message_id: str, code: str, description: str, details: dict[str, Any] | None = None
) -> bytes:
    # Descriptions are free text for humans; keep them bounded so a peer's limit is respected.
    return orjson.dumps([CALLERROR, message_id, code, description[:255], details or {}])
