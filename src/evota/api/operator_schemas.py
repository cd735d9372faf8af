"""Request and response bodies for logins, MFA, API tokens and users.

No response carries a password hash, a TOTP secret (except the enrolment answer, to the
user enrolling) or a recovery-code digest; tokens and recovery codes appear once, in the
answer that creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from evota.operators import permissions as perms
from evota.operators.users import role_problem

Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Secret = Annotated[str, Field(min_length=1, max_length=1024)]


class ScopeIn(BaseModel):
    """Where the roles apply: chargers at these sites, in these regions or with these tags.
    All empty (the default) means the whole fleet."""

    model_config = ConfigDict(extra="forbid")
    sites: list[Label] = Field(default_factory=list, max_length=1000)
    regions: list[Label] = Field(default_factory=list, max_length=1000)
    tags: list[Label] = Field(default_factory=list, max_length=1000)

    def scope(self) -> perms.Scope:
        return perms.Scope(frozenset(self.sites), frozenset(self.regions), frozenset(self.tags))


class ScopeOut(BaseModel):
    sites: list[str]
    regions: list[str]
    tags: list[str]

    @classmethod
    def of(cls, scope: perms.Scope) -> ScopeOut:
        return cls(
            sites=sorted(scope.sites), regions=sorted(scope.regions), tags=sorted(scope.tags)
        )


def _roles(value: list[str] | None) -> list[str] | None:
    if value is not None and (problem := role_problem(value)):
        raise ValueError(problem)
    return value


class UserIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "ann",
                    "password": "a long passphrase",
                    "roles": ["operator"],
                    "scopes": {"sites": ["berlin-1"]},
                }
            ]
        },
    )
    username: str = Field(min_length=1, max_length=64)
    password: Secret
    roles: list[str] = Field(
        description="viewer, operator, firmware_manager, security_admin, auditor"
    )
    scopes: ScopeIn | None = Field(None, description="applies to every role given")

    _check_roles = field_validator("roles")(_roles)


class UserPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"roles": ["operator", "auditor"], "scopes": {"regions": ["DE-East"]}}]
        },
    )
    roles: list[str] | None = None
    scopes: ScopeIn | None = None
    disabled: bool | None = None

    _check_roles = field_validator("roles")(_roles)


class PasswordIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"password": "a new long passphrase", "current_password": "the old passphrase"}
            ]
        },
    )
    password: Secret
    current_password: Secret | None = Field(
        None, description="required when changing your own password"
    )


class GrantOut(BaseModel):
    role: str
    scope: ScopeOut


class UserOut(BaseModel):
    id: str
    username: str
    roles: list[str]
    scopes: ScopeOut
    grants: list[GrantOut]
    disabled: bool
    mfa_enabled: bool
    mfa_pending: bool
    recovery_codes_left: int
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class LoginIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"username": "ann", "password": "a long passphrase", "otp": "123456"}]
        },
    )
    username: str = Field(min_length=1, max_length=200)
    password: Secret
    otp: str | None = Field(
        None, max_length=64, description="the authenticator's code, or a recovery code"
    )


class LoginOut(BaseModel):
    token: str
    csrf_token: str
    expires_at: datetime
    mfa: bool = Field(description="this session gave a second factor")
    mfa_required: bool = Field(description="the user's roles need MFA before changing anything")
    username: str
    roles: list[str]


class MeOut(BaseModel):
    name: str
    kind: str
    roles: list[str]
    grants: list[GrantOut]
    mfa: bool
    mfa_required: bool
    mfa_enabled: bool | None
    site_limit: list[str]
    csrf_token: str | None = None


class EnrollOut(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str | None = Field(None, description="the URI as a QR code (SVG), when available")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"otp": "123456"}]})
    otp: str = Field(min_length=1, max_length=16)


class ConfirmOut(BaseModel):
    recovery_codes: list[str] = Field(description="shown only this once; each works once")


class TokenIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "ci", "roles": ["viewer"], "expires_in_days": 30}]
        },
    )
    name: str = Field(min_length=1, max_length=32)
    roles: list[str] | None = Field(None, description="a subset of your roles (default: all)")
    sites: list[Label] = Field(default_factory=list, max_length=1000)
    expires_in_days: int = Field(90, ge=1, le=730)


class TokenOut(BaseModel):
    id: int
    name: str
    username: str | None
    roles: list[str]
    sites: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool


class TokenCreated(TokenOut):
    token: str = Field(description="shown only this once")
