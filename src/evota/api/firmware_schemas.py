"""Bodies of the firmware repository API (kept apart from api/schemas.py, which others edit)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from evota.firmware import signing, versions

UploadState = Literal["draft", "pilot", "released"]
State = Literal["draft", "pilot", "released", "deprecated", "revoked"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# Strings stored in String(50) columns: vendor, model, hardware revision, version.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class UploadFields(BaseModel):
    """The text fields of ``POST /api/v1/firmware``, validated after the file has streamed."""

    model_config = ConfigDict(extra="forbid")

    vendor: Name
    version: Name
    models: list[Name] = Field(min_length=1, max_length=100)
    hardware_revisions: list[Name] = Field(default_factory=list, max_length=100)
    signature: str | None = Field(None, max_length=signing.MAX_SIGNATURE_B64_CHARS + 100)
    signing_certificate: str | None = Field(None, max_length=signing.MAX_CERTIFICATE_PEM_CHARS)
    release_notes: str = Field("", max_length=64 * 1024)
    state: UploadState = "draft"
    min_current_version: Annotated[str, StringConstraints(max_length=50)] | None = None
    supersedes: list[Name] = Field(default_factory=list, max_length=100)

    @field_validator("vendor", "version")
    @classmethod
    def _no_controls(cls, value: str) -> str:
        return _printable(value)

    @field_validator("models", "hardware_revisions", "supersedes")
    @classmethod
    def _no_controls_in_list(cls, values: list[str]) -> list[str]:
        return [_printable(v) for v in values]

    @field_validator("min_current_version")
    @classmethod
    def _a_version(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = _printable(value)
        versions.version_key(value)  # total over str, but keeps the contract explicit
        return value

    @field_validator("signature", "signing_certificate")
    @classmethod
    def _blank_is_absent(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip() else None


class ImportIn(UploadFields):
    """``POST /api/v1/firmware/import``: the upload's fields, and where to fetch the image."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://downloads.acme.example/fw/acme-2.4.1.bin",
                    "vendor": "Acme",
                    "version": "2.4.1",
                    "models": ["AC22"],
                    "signature": "MEUCIQ…",
                    "signing_certificate": "-----BEGIN CERTIFICATE-----\n…",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                }
            ]
        },
    )
    url: str = Field(min_length=1, max_length=2048, description="https URL of the image")
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        None, description="expected SHA-256 (hex); the import is refused if the bytes differ"
    )
    filename: str | None = Field(None, max_length=255, description="label; default: from url")


class FeedIn(BaseModel):
    """``POST /api/v1/firmware/feeds``: a vendor's release feed (docs/firmware.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"vendor": "Acme", "url": "https://downloads.acme.example/feed.json"}]
        },
    )
    vendor: Name
    url: str = Field(min_length=1, max_length=2048, description="https URL of the JSON feed")

    @field_validator("vendor")
    @classmethod
    def _no_controls(cls, value: str) -> str:
        return _printable(value)


class FeedEntryOut(BaseModel):
    version: str
    sha256: str
    firmware_id: str | None = None
    field: str | None = None
    detail: str | None = None


class FeedCheckOut(BaseModel):
    releases: int = Field(description="entries in the feed")
    created: list[FeedEntryOut] = Field(description="imported as drafts")
    refused: list[FeedEntryOut] = Field(description="refused for their content or trust")
    failed: list[FeedEntryOut] = Field(description="network failures, tried again next time")
    error: dict[str, str] | None = Field(description="the feed itself could not be read")


class FeedOut(BaseModel):
    id: int
    vendor: str
    url: str = Field(description="the feed URL without its query string (which may hold a token)")
    created_by: str
    created_at: datetime
    checked_at: datetime | None
    last_result: FeedCheckOut | None


class FeedPage(BaseModel):
    items: list[FeedOut]
    total: int


class SourceOut(BaseModel):
    """Where an imported image came from (null for uploads)."""

    url: str = Field(description="the URL fetched (last redirect hop), without query string")
    host: str
    address: str = Field(description="the IP address connected to")
    certificate_sha256: str | None = Field(
        description="SHA-256 of the server's TLS certificate (DER, hex)"
    )
    fetched_at: datetime
    fetched_by: str | None


class FirmwareOut(BaseModel):
    id: str
    vendor: str
    version: str
    models: list[str]
    hardware_revisions: list[str]
    sha256: str
    size: int
    filename: str | None
    state: State
    state_reason: str | None
    signed: bool
    signature: str | None
    signing_certificate: str | None
    release_notes: str
    min_current_version: str | None
    supersedes: list[str]
    created_at: datetime
    updated_at: datetime
    source: SourceOut | None = None


class FirmwareDetail(FirmwareOut):
    chargers_running: int = Field(
        description="chargers of this vendor that report exactly this version"
    )


class FirmwarePage(BaseModel):
    items: list[FirmwareOut]
    total: int
    limit: int
    offset: int


class StateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"state": "released", "reason": "pilot passed"}]},
    )
    state: State
    reason: Reason | None = None


class ReasonIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "CVE-2026-1234"}]}
    )
    reason: Reason


class OptionalReasonIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "superseded by 2.4.1"}]}
    )
    reason: Reason | None = None


class VendorPolicyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"allow_unsigned": True}]}
    )
    allow_unsigned: bool


class VendorPolicyOut(BaseModel):
    vendor: str
    allow_unsigned: bool
    updated_at: datetime


class VendorPolicyPage(BaseModel):
    items: list[VendorPolicyOut]
    total: int


class TrustedRootIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "vendor": "Acme",
                    "certificate": "-----BEGIN CERTIFICATE-----\nMIIB…\n-----END CERTIFICATE-----",
                }
            ]
        },
    )
    vendor: Name
    certificate: str = Field(min_length=1, description="PEM CA certificate")

    @field_validator("vendor")
    @classmethod
    def _no_controls(cls, value: str) -> str:
        return _printable(value)


class TrustedRootOut(BaseModel):
    id: int
    vendor: str
    fingerprint: str = Field(description="SHA-256 of the DER certificate, hex")
    subject: str
    not_after: datetime
    created_at: datetime
    certificate: str


class TrustedRootPage(BaseModel):
    items: list[TrustedRootOut]
    total: int
