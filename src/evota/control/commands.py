"""Remote commands to one charger, as typed requests and answers independent of OCPP version."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Reset:
    type: Literal["Soft", "Hard"]
    name = "reset"


@dataclass(frozen=True, slots=True)
class UpdateFirmware:
    """Plain (unsigned) delivery: the charger learns only where and when to download."""

    location: str
    retrieve_at: datetime
    retries: int | None = None
    retry_interval: int | None = None
    name = "update_firmware"


@dataclass(frozen=True, slots=True)
class SignedUpdateFirmware:
    """Signed delivery (1.6 security extension, 2.0.1 UpdateFirmware): the charger verifies
    ``signature`` over the whole file with ``signing_certificate`` before installing."""

    request_id: int
    location: str
    retrieve_at: datetime
    signing_certificate: str
    signature: str
    install_at: datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    name = "signed_update_firmware"


Command = Reset | UpdateFirmware | SignedUpdateFirmware


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
