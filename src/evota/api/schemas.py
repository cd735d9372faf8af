"""Request and response bodies of the REST API."""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from evota.csvcells import safe_cell
from evota.fleet.bounds import STORED, bound
from evota.fleet.credentials import key_problem
from evota.ocpp import identity
from evota.rollout.policy import PolicyError, window_to_dict, windows_from_list

Identity = Annotated[
    str,
    StringConstraints(min_length=1, max_length=identity.MAX_LENGTH, pattern=identity.PATTERN),
]
SiteId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]
RegistrationStatus = Literal["Accepted", "Pending", "Rejected"]
Tags = Annotated[list[Tag], Field(max_length=50)]
#: As chargers.hardware_revision stores it; printable, so it reads the same in every list.
HardwareRevision = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]*$"
    ),
]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


#: When self-healing playbooks may act on a site's chargers, in its timezone (docs/playbooks.md):
#: maintenance windows as campaigns write them; null: any time.
AllowedHours = Annotated[
    list[Any] | None,
    Field(
        max_length=20,
        description="windows in the site's timezone when playbooks may act on its chargers "
        '([{"days": ["mon"], "start": "22:00", "end": "05:00"}]); null: any time',
    ),
]


def allowed_hours(value: list[Any] | None) -> list[dict[str, Any]] | None:
    """The windows, checked and in their canonical form; the error names the window's field."""
    if value is None:
        return None
    try:
        windows = windows_from_list(value, "allowed_hours")
    except PolicyError as exc:
        raise ValueError(f"{exc.field}: {exc.message}") from None
    return [window_to_dict(w) for w in windows]


class SiteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "berlin-hbf",
                    "name": "Berlin Hbf garage",
                    "timezone": "Europe/Berlin",
                    "region": "DE-East",
                    "tags": ["garage"],
                }
            ]
        },
    )
    id: SiteId | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    timezone: str = "UTC"
    region: Annotated[str, StringConstraints(max_length=100)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    allowed_hours: AllowedHours = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)

    @field_validator("allowed_hours")
    @classmethod
    def _hours(cls, value: list[Any] | None) -> list[dict[str, Any]] | None:
        return allowed_hours(value)


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


class SitePatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Berlin Hbf P2", "tags": ["garage", "dc"]}]},
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | SkipJsonSchema[None] = (
        None
    )
    timezone: str | SkipJsonSchema[None] = None
    region: Annotated[str, StringConstraints(max_length=100)] | None = None
    tags: Tags | SkipJsonSchema[None] = None
    allowed_hours: AllowedHours = None

    @field_validator("allowed_hours")
    @classmethod
    def _hours(cls, value: list[Any] | None) -> list[dict[str, Any]] | None:
        return allowed_hours(value)

    @field_validator("name", "timezone", "tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave it out to keep it)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)


class SiteOut(BaseModel):
    id: str
    name: str
    timezone: str
    region: str | None
    tags: list[str]
    created_at: datetime
    allowed_hours: list[dict[str, Any]] | None = None  # playbooks act only then (None: any time)


SecurityProfile = Annotated[
    int,
    Field(
        ge=1,
        le=3,
        description="the least OCPP security profile the charger may connect with: 1 Basic "
        "over ws://, 2 Basic over wss://, 3 wss:// with a client certificate "
        "(docs/security-profiles.md); a connection below it is refused as a downgrade",
    ),
]


class ChargerIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "CP-0001",
                    "auth_key": "k3y-0f-at-least-16-chars",
                    "site_id": "berlin-hbf",
                    "tags": ["dc"],
                }
            ]
        },
    )
    id: Identity
    auth_key: AuthKey
    site_id: SiteId | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    registration: RegistrationStatus = "Accepted"
    security_profile: SecurityProfile = 1

    @field_validator("auth_key")
    @classmethod
    def _key_policy(cls, value: str) -> str:
        problem = key_problem(value)
        if problem:
            raise ValueError(problem)
        return value


AuthKey = Annotated[
    str,
    StringConstraints(min_length=16, max_length=40, pattern=r"^[\x21-\x7e]+$"),
    Field(description="The charger's AuthorizationKey (16-40 printable ASCII, no spaces)"),
]


class ChargerPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"site_id": "berlin-hbf", "tags": ["dc", "pilot"]},
                {"registration": "Rejected", "reason": "stolen unit"},
            ]
        },
    )
    registration: RegistrationStatus | SkipJsonSchema[None] = None
    site_id: SiteId | None = Field(None, description="null: no site")
    tags: Tags | SkipJsonSchema[None] = None
    auth_key: AuthKey | SkipJsonSchema[None] = None
    security_profile: SecurityProfile | SkipJsonSchema[None] = None
    hardware_revision: HardwareRevision | None = Field(
        None,
        description="the charger's hardware revision, for images restricted by revision "
        "(OCPP 1.6 does not report one); null clears it",
    )
    reason: str | None = Field(
        None, max_length=1000, description="why: required when the change needs approval"
    )

    @field_validator("registration", "tags", "auth_key", "security_profile")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave it out to keep it)")
        return value

    @field_validator("auth_key")
    @classmethod
    def _key_policy(cls, value: str) -> str:
        if problem := key_problem(value):
            raise ValueError(problem)
        return value


class ConnectorOut(BaseModel):
    connector_id: int
    status: str
    error_code: str
    info: str | None
    updated_at: datetime


class EventOut(BaseModel):
    kind: str
    status: str | None
    request_id: int | None
    data: dict[str, Any]
    charger_timestamp: datetime | None
    received_at: datetime

    @field_validator("data", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        """What a charger sent, as stored before evota bounded it too, must still render."""
        return bound(value, STORED) if isinstance(value, dict) else {}


class ChargerOut(BaseModel):
    id: str
    registration: str
    site_id: str | None
    tags: list[str]
    vendor: str | None
    model: str | None
    serial_number: str | None
    box_serial_number: str | None
    hardware_revision: str | None
    firmware_version: str | None
    firmware_delivery: str | None = Field(
        None, description="how the charger takes firmware (signed or plain), learned"
    )
    protocol: str | None
    security_profile: int = Field(
        description="the least OCPP security profile the charger may connect with (1-3)"
    )
    connected: bool
    node: str | None = Field(
        None, description="the evota node holding the charger's connection (None: not connected)"
    )
    last_seen: datetime | None
    last_boot_at: datetime | None
    created_at: datetime


class ChargerDetail(ChargerOut):
    connectors: list[ConnectorOut]
    recent_events: list[EventOut]


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"type": "Soft"}]})
    type: Literal["Soft", "Hard"] = "Soft"


class CommandOut(BaseModel):
    charger_id: str
    command: str
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


CSV_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with a header row (format=csv)",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
"""The 200 answer of a report route that also exports CSV (its JSON schema comes from the
route's ``response_model``)."""


def csv_response(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> Response:
    """A report as a CSV download; every cell made safe for spreadsheets (:func:`safe_cell`)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
