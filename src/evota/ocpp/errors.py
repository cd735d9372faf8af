"""OCPP-J RPC error codes, spelled per protocol version.

1.6 uses the official misspellings ``FormationViolation`` and ``OccurenceConstraintViolation``;
2.0.1 fixed them and added codes. Code that raises errors uses the neutral ``ErrorKind`` and the
dialect spells it on the wire, so a 2.0.1 adapter reuses every check.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorKind(enum.Enum):
    NOT_IMPLEMENTED = "NotImplemented"  # action unknown to the receiver
    NOT_SUPPORTED = "NotSupported"  # action known but not supported
    INTERNAL = "InternalError"
    PROTOCOL = "ProtocolError"
    SECURITY = "SecurityError"
    FORMAT = "FormatViolation"
    PROPERTY_CONSTRAINT = "PropertyConstraintViolation"
    OCCURRENCE_CONSTRAINT = "OccurrenceConstraintViolation"
    TYPE_CONSTRAINT = "TypeConstraintViolation"
    GENERIC = "GenericError"
    RPC_FRAMEWORK = "RpcFrameworkError"
    MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"


V16_SPELLING: dict[ErrorKind, str] = {
    ErrorKind.NOT_IMPLEMENTED: "NotImplemented",
    ErrorKind.NOT_SUPPORTED: "NotSupported",
    ErrorKind.INTERNAL: "InternalError",
    ErrorKind.PROTOCOL: "ProtocolError",
    ErrorKind.SECURITY: "SecurityError",
    ErrorKind.FORMAT: "FormationViolation",
    ErrorKind.PROPERTY_CONSTRAINT: "PropertyConstraintViolation",
    ErrorKind.OCCURRENCE_CONSTRAINT: "OccurenceConstraintViolation",
    ErrorKind.TYPE_CONSTRAINT: "TypeConstraintViolation",
    ErrorKind.GENERIC: "GenericError",
    # 1.6 has no framework-level codes: fall back to the closest 1.6 code.
    ErrorKind.RPC_FRAMEWORK: "FormationViolation",
    ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED: "ProtocolError",
}

V201_SPELLING: dict[ErrorKind, str] = {kind: kind.value for kind in ErrorKind}


class RpcError(Exception):
    """A failure that is answered to the peer with a CALLERROR.

    ``message_id`` is the id of the offending CALL, or ``"-1"`` when it could not be read.
    """

    def __init__(
        self,
        kind: ErrorKind,
        description: str,
        message_id: str = "-1",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description
        self.message_id = message_id
        self.details = details or {}
