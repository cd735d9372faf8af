"""Remote commands to one charger, as typed requests and answers independent of OCPP version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Reset:
    type: Literal["Soft", "Hard"]
    name = "reset"


Command = Reset


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The charger's answer: ``status`` as the charger said it, plus any other fields."""

    status: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status in {"Accepted", "Scheduled"}


class CommandError(Exception):
    """A command that produced no answer from the charger; ``reason`` is machine-readable."""

    reason = "error"

    def __init__(self, charger_id: str, message: str) -> None:
        super().__init__(message)
        self.charger_id = charger_id
        self.message = message


class ChargerOffline(CommandError):
    reason = "offline"


class CommandTimeout(CommandError):
    reason = "timeout"


class CommandRejected(CommandError):
    """The charger answered with a CALLERROR."""

    reason = "callerror"

    def __init__(self, charger_id: str, code: str, description: str) -> None:
        super().__init__(charger_id, f"charger answered CALLERROR {code}: {description}")
        self.code = code
        self.description = description


class CommandNotSupported(CommandError):
    reason = "unsupported"
