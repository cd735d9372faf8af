"""Logins, sessions, MFA and API tokens end to end: a real evota on loopback, real Argon2,
real TOTP codes (pyotp at the runtime's clock), a simulated charger for the done-when case.

The runtime's clock can be moved forward, so lockouts, idle timeouts and token expiry are
tested without sleeping.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
from argon2 import PasswordHasher
from sqlalchemy import select, update

from evota.audit.chain import Entry
from evota.operators.credentials import token_hash
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.store.models import ApiToken, AuditEntry, LoginSession, User

from .conftest import TOKEN, ShiftedClock, api_client, start_runtime
from .sim.conftest import fast

PASSWORD = "correct horse battery staple"
MFA_REQUIRED = "https://evota.dev/problems/mfa-required"
ENROL = "https://evota.dev/problems/mfa-enrolment-required"


@dataclass
class Desk:
    """One evota, its clock, and the bootstrap admin's API client."""

    rt: Runtime
    clock: ShiftedClock
    admin: httpx.AsyncClient

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.rt.http_port}"

    async def user(
        self, name: str, roles: tuple[str, ...] = ("operator",), **scopes: list[str]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": name, "password": PASSWORD, "roles": list(roles)}
        if scopes:
            body["scopes"] = scopes
        r = await self.admin.post("/api/v1/users", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def login(
        self, name: str, password: str = PASSWORD, otp: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"username": name, "password": password}
        if otp is not None:
            body["otp"] = otp
        async with httpx.AsyncClient(base_url=self.base, timeout=15) as c:
            return await c.post("/api/v1/auth/login", json=body)

    async def session(self, name: str, otp: str | None = None) -> httpx.AsyncClient:
        """A client carrying the login token as its bearer token."""
        r = await self.login(name, otp=otp)
        assert r.status_code == 200, r.text
        return api_client(self.rt, r.json()["token"])

    def code(self, secret: str, ahead: int = 0) -> str:
        return str(pyotp.TOTP(secret).at(self.clock.now() + timedelta(seconds=30 * ahead)))

    async def enrol(self, client: httpx.AsyncClient) -> tuple[str, list[str]]:
        r = await client.post("/api/v1/auth/mfa/enroll")
        assert r.status_code == 200, r.text
        secret = r.json()["secret"]
        assert r.json()["qr_svg"].startswith("<svg")
        assert secret in r.json()["otpauth_uri"]
        r = await client.post("/api/v1/auth/mfa/confirm", json={"otp": self.code(secret)})
        assert r.status_code == 200, r.text
        return secret, r.json()["recovery_codes"]

    async def entries(self, action: str | None = None) -> list[Entry]:
        found = [e async for e in self.rt.audit.entries()]
        return [e for e in found if action is None or e.action == action]

    async def all_audit_text(self) -> str:
        """The whole audit table as stored, to search for leaked secrets."""
        async with self.rt.engine.connect() as conn:
            rows = (await conn.execute(select(AuditEntry))).all()
        return json.dumps([list(r) for r in rows], default=str)


@contextlib.asynccontextmanager
async def desk(tmp_path: Path, database_url: str, **overrides: Any) -> AsyncIterator[Desk]:
    clock = ShiftedClock()
    rt = await start_runtime(tmp_path, database_url, clock=clock, **overrides)
    admin = api_client(rt)
    try:
        yield Desk(rt, clock, admin)
    finally:
        await admin.aclose()
        await rt.stop()


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return str(r.json()["type"])


# -- done when: an operator without MFA cannot reset a charger; with MFA they can ------------


async def test_operator_needs_mfa_to_reset_a_charger(tmp_path: Path, database_url: str):
    async with desk(tmp_path, database_url) as d:
        spec = fleet_from_flags(1, prefix="MFA-", seed="mfa")
        fleet = Fleet.from_spec(spec, f"ws://127.0.0.1:{d.rt.ocpp_port}/ocpp", config=fast())
        await fleet.provision(f"{d.base}", TOKEN)
        await fleet.start()
        try:
            charger = fleet.chargers[0]
            await fleet.wait_until(lambda f: charger.accepted, 10)
            await d.user("ann", ("operator",))
            ann = await d.session("ann")
            path = f"/api/v1/chargers/{charger.identity}/commands/reset"
            body = {"type": "Soft", "reason": "stuck connector, ticket 4711"}

            r = await ann.get(f"/api/v1/chargers/{charger.identity}")
            assert r.status_code == 200  # reading needs no second factor
            r = await ann.post(path, json=body)
            assert r.status_code == 403, r.text
            assert problem_type(r) == ENROL
            assert not [e for e in await d.entries("command.reset") if e.actor == "ann"]

            await d.enrol(ann)  # the same session gives its second factor
            r = await ann.post(path, json=body)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "Accepted"
            [entry] = [e for e in await d.entries("command.reset") if e.actor == "ann"]
            assert entry.reason == "stuck connector, ticket 4711"
            assert entry.outcome == "Accepted"  # the charger's answer, not a generic "ok"
            assert entry.detail["answer"]["status"] == "Accepted"
            assert "operator" in entry.role
            await ann.aclose()
        finally:
            await fleet.stop()


# -- login -------------------------------------------------------------------------------


async def test_bad_credentials_are_401_alike_and_audited_without_secrets(
    tmp_path: Path, sqlite_url: str
):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("bob", ("viewer",))
        wrong = await d.login("bob", "not the password at all")
        unknown = await d.login("nobody", PASSWORD)
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        assert wrong.json()["field"] == "password"
        r = await d.login("BOB ")  # usernames are case-insensitive
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["username"] == "bob" and data["roles"] == ["viewer"]
        assert data["mfa"] is False and data["mfa_required"] is False
        logins = await d.entries("auth.login")
        assert [(e.actor, e.outcome) for e in logins] == [
            ("bob", "failed"),
            ("nobody", "failed"),
            ("bob", "ok"),
        ]
        assert logins[0].detail["client"] == "127.0.0.1"
        text = await d.all_audit_text()
        for secret in (PASSWORD, "not the password at all", data["token"], data["csrf_token"]):
            assert secret not in text
        # a disabled user is refused like a wrong password
        assert (await d.admin.post("/api/v1/users/bob/disable")).status_code == 200
        assert (await d.login("bob")).json() == unknown.json()


async def test_lockout_refuses_even_the_right_password_until_it_ends(
    tmp_path: Path, sqlite_url: str
):
    async with desk(tmp_path, sqlite_url, login_max_failures=3, login_lockout_minutes=10) as d:
        await d.user("cy", ("viewer",))
        assert (await d.login("cy", "wrong password one")).status_code == 401
        assert (await d.login("cy", "wrong password two")).status_code == 401
        assert (await d.admin.get("/api/v1/users/cy")).json()["failed_logins"] == 2
        assert (await d.login("cy")).status_code == 200  # a success resets the count
        for n in range(2):
            assert (await d.login("cy", f"wrong password {n}")).status_code == 401
        r = await d.login("cy", "wrong password 3")
        assert r.status_code == 423, r.text
        assert problem_type(r) == "https://evota.dev/problems/account-locked"
        assert 590 <= int(r.headers["retry-after"]) <= 600
        locked_until = datetime.fromisoformat(r.json()["locked_until"])
        r = await d.login("cy")
        assert r.status_code == 423  # the right password does not help
        d.clock.advance(minutes=9)
        assert (await d.login("cy")).status_code == 423
        d.clock.advance(minutes=1, seconds=1)
        assert d.clock.now() > locked_until
        assert (await d.login("cy")).status_code == 200
        user = (await d.admin.get("/api/v1/users/cy")).json()
        assert user["failed_logins"] == 0 and user["locked_until"] is None
        outcomes = [e.outcome for e in await d.entries("auth.login")]
        assert outcomes.count("locked") == 3 and outcomes[-1] == "ok"


async def test_login_rate_limit_per_address(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url, login_rate_per_minute=3) as d:
        for _ in range(3):
            assert (await d.login("nobody", "whatever password")).status_code == 401
        r = await d.login("nobody", "whatever password")
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert problem_type(r) == "https://evota.dev/problems/too-many-logins"
        d.clock.advance(seconds=61)
        assert (await d.login("nobody", "whatever password")).status_code == 401


async def test_login_with_mfa_codes_recovery_codes_and_replay(tmp_path: Path, database_url: str):
    async with desk(tmp_path, database_url) as d:
        await d.user("dee", ("firmware_manager",))
        dee = await d.session("dee")
        secret, codes = await d.enrol(dee)
        assert len(codes) == 10 and len(set(codes)) == 10
        user = (await d.admin.get("/api/v1/users/dee")).json()
        assert user["mfa_enabled"] and user["recovery_codes_left"] == 10

        r = await d.login("dee")
        assert r.status_code == 403 and problem_type(r) == MFA_REQUIRED
        assert r.json()["field"] == "otp"
        r = await d.login("dee", otp="000000" if d.code(secret, 1) != "000000" else "111111")
        assert r.status_code == 401 and r.json()["field"] == "otp"
        assert (await d.admin.get("/api/v1/users/dee")).json()["failed_logins"] == 1

        code = d.code(secret, 1)  # a step after the one confirming used
        r = await d.login("dee", otp=code)
        assert r.status_code == 200, r.text
        assert r.json()["mfa"] is True and r.json()["mfa_required"] is True
        assert (await d.login("dee", otp=code)).status_code == 401  # replay refused

        r = await d.login("dee", otp=codes[0].upper())
        assert r.status_code == 200, r.text
        assert (await d.login("dee", otp=codes[0])).status_code == 401  # used up
        assert (await d.admin.get("/api/v1/users/dee")).json()["recovery_codes_left"] == 9
        text = await d.all_audit_text()
        assert secret not in text and code not in text and codes[0] not in text
        outcomes = [e.outcome for e in await d.entries("auth.login")]
        assert outcomes == ["ok", "mfa_required", "failed", "ok", "failed", "ok", "failed"]
        await dee.aclose()


async def test_password_is_rehashed_on_login_when_parameters_changed(
    tmp_path: Path, sqlite_url: str
):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("eve", ("viewer",))
        weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
        async with d.rt.engine.begin() as conn:
            await conn.execute(
                update(User).where(User.username == "eve").values(password_hash=weak)
            )
        assert (await d.login("eve")).status_code == 200
        async with d.rt.engine.connect() as conn:
            stored = (
                await conn.execute(select(User.password_hash).where(User.username == "eve"))
            ).scalar()
        assert stored is not None and stored != weak and stored.startswith("$argon2id$")
        assert (await d.login("eve")).status_code == 200


# -- sessions: cookie, CSRF, idle timeout, logout --------------------------------------------


async def test_cookie_session_needs_csrf_and_expires_when_idle(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url, session_idle_minutes=30, session_max_hours=2) as d:
        await d.user("fay", ("viewer",))
        async with httpx.AsyncClient(base_url=d.base, timeout=15) as browser:
            r = await browser.post(
                "/api/v1/auth/login", json={"username": "fay", "password": PASSWORD}
            )
            assert r.status_code == 200
            cookie = r.headers["set-cookie"].lower()
            assert "evota_session=" in cookie and "httponly" in cookie
            assert "samesite=strict" in cookie and "secure" not in cookie  # plain http here
            csrf = r.json()["csrf_token"]
            me = await browser.get("/api/v1/auth/me")
            assert me.status_code == 200 and me.json()["name"] == "fay"
            assert me.json()["kind"] == "session" and me.json()["csrf_token"] == csrf
            r = await browser.post("/api/v1/auth/logout")
            assert r.status_code == 403 and r.json()["field"] == "X-CSRF-Token"
            d.clock.advance(minutes=29)
            assert (await browser.get("/api/v1/auth/me")).status_code == 200  # activity
            d.clock.advance(minutes=29)
            assert (await browser.get("/api/v1/auth/me")).status_code == 200
            d.clock.advance(minutes=31)
            assert (await browser.get("/api/v1/auth/me")).status_code == 401  # idle too long

        fay = await d.session("fay")
        d.clock.advance(minutes=25)
        assert (await fay.get("/api/v1/auth/me")).status_code == 200
        d.clock.advance(minutes=25)
        assert (await fay.get("/api/v1/auth/me")).status_code == 200
        r = await fay.post("/api/v1/auth/logout")  # bearer: no CSRF needed
        assert r.status_code == 204
        assert (await fay.get("/api/v1/auth/me")).status_code == 401
        assert [e.actor for e in await d.entries("auth.logout")] == ["fay"]
        await fay.aclose()

        fay = await d.session("fay")
        d.clock.advance(hours=2, seconds=1)  # the absolute limit, however active
        assert (await fay.get("/api/v1/auth/me")).status_code == 401
        await fay.aclose()


async def test_me_shows_grants_and_scopes(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("gus", ("operator", "auditor"), sites=["berlin"], tags=["dc"])
        gus = await d.session("gus")
        me = (await gus.get("/api/v1/auth/me")).json()
        assert me["roles"] == ["operator", "auditor"]
        assert me["grants"][0] == {
            "role": "operator",
            "scope": {"sites": ["berlin"], "regions": [], "tags": ["dc"]},
        }
        assert me["mfa"] is False and me["mfa_required"] is True and me["mfa_enabled"] is False
        admin = (await d.admin.get("/api/v1/auth/me")).json()
        assert admin["kind"] == "admin" and admin["roles"] == ["admin"]
        await gus.aclose()


async def test_mfa_enrolment_rules(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("hal", ("operator",))
        hal = await d.session("hal")
        r = await hal.post("/api/v1/auth/mfa/confirm", json={"otp": "123456"})
        assert r.status_code == 409  # nothing to confirm yet
        enrol = (await hal.post("/api/v1/auth/mfa/enroll")).json()
        assert enrol["otpauth_uri"].startswith("otpauth://totp/evota:hal?secret=")
        assert enrol["secret"] in enrol["otpauth_uri"]
        wrong = "000000" if d.code(enrol["secret"]) != "000000" else "111111"
        r = await hal.post("/api/v1/auth/mfa/confirm", json={"otp": wrong})
        assert r.status_code == 422 and r.json()["field"] == "otp"
        # a new enrolment replaces the pending secret
        secret = (await hal.post("/api/v1/auth/mfa/enroll")).json()["secret"]
        assert secret != enrol["secret"]
        r = await hal.post("/api/v1/auth/mfa/confirm", json={"otp": d.code(enrol["secret"])})
        assert r.status_code == 422
        r = await hal.post("/api/v1/auth/mfa/confirm", json={"otp": d.code(secret)})
        assert r.status_code == 200
        assert (await hal.post("/api/v1/auth/mfa/enroll")).status_code == 409  # enrolled
        assert [e.actor for e in await d.entries("auth.mfa_enrolled")] == ["hal"]
        # the admin token is not a user: nothing to enrol
        assert (await d.admin.post("/api/v1/auth/mfa/enroll")).status_code == 403
        async with d.rt.engine.connect() as conn:
            mfa = (
                await conn.execute(
                    select(LoginSession.mfa).where(LoginSession.revoked_at.is_(None))
                )
            ).scalars()
            assert list(mfa) == [True]
        await hal.aclose()


# -- API tokens --------------------------------------------------------------------------


async def test_api_tokens_are_shown_once_scoped_expiring_and_revocable(
    tmp_path: Path, sqlite_url: str
):
    async with desk(tmp_path, sqlite_url) as d:
        await d.admin.post("/api/v1/sites", json={"id": "berlin", "name": "Berlin"})
        await d.user("ivy", ("operator", "auditor"))
        ivy = await d.session("ivy")
        r = await ivy.post("/api/v1/auth/tokens", json={"name": "ci"})
        assert r.status_code == 403 and problem_type(r) == ENROL  # no second factor yet
        await d.enrol(ivy)
        r = await ivy.post("/api/v1/auth/tokens", json={"name": "ci", "roles": ["security_admin"]})
        assert r.status_code == 422 and r.json()["field"] == "roles"
        r = await ivy.post("/api/v1/auth/tokens", json={"name": "ci", "sites": ["nowhere"]})
        assert r.status_code == 422 and r.json()["field"] == "sites"
        r = await ivy.post(
            "/api/v1/auth/tokens",
            json={"name": "ci", "roles": ["auditor"], "sites": ["berlin"], "expires_in_days": 7},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["token"]
        assert secret.startswith("evota_") and len(secret) >= 6 + 43
        assert created["roles"] == ["auditor"] and created["sites"] == ["berlin"]
        r = await ivy.post("/api/v1/auth/tokens", json={"name": "ci"})
        assert r.status_code == 409 and r.json()["field"] == "name"
        async with d.rt.engine.connect() as conn:
            row = (await conn.execute(select(ApiToken).where(ApiToken.id == created["id"]))).one()
        assert row.token_hash == token_hash(secret) and row.user_id is not None

        bot = api_client(d.rt, secret)
        me = (await bot.get("/api/v1/auth/me")).json()
        assert (me["name"], me["kind"], me["roles"]) == ("ivy", "token", ["auditor"])
        assert me["site_limit"] == ["berlin"]
        assert (await bot.post("/api/v1/sites", json={"name": "X"})).status_code == 403
        r = await bot.post("/api/v1/auth/tokens", json={"name": "more"})
        assert r.status_code == 403  # tokens do not mint tokens

        listed = (await ivy.get("/api/v1/auth/tokens")).json()
        assert [t["name"] for t in listed] == ["ci"] and listed[0]["active"]
        assert secret not in json.dumps(listed) and "token" not in listed[0]
        assert secret not in await d.all_audit_text()

        # someone else cannot revoke it; a user admin can revoke anyone's
        await d.user("jo", ("viewer",))
        jo = await d.session("jo")
        assert (await jo.delete(f"/api/v1/auth/tokens/{created['id']}")).status_code == 404
        r = await ivy.delete(f"/api/v1/auth/tokens/{created['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] and not r.json()["active"]
        assert (await bot.get("/api/v1/auth/me")).status_code == 401
        actions = [e.action for e in await d.entries() if e.action.startswith("token.")]
        assert actions == ["token.create", "token.revoke"]

        # a viewer needs no MFA for a token; tokens expire
        r = await jo.post("/api/v1/auth/tokens", json={"name": "ro", "expires_in_days": 1})
        assert r.status_code == 201, r.text
        ro = api_client(d.rt, r.json()["token"])
        assert (await ro.get("/api/v1/chargers")).status_code == 200
        r = await d.admin.delete(f"/api/v1/auth/tokens/{r.json()['id']}")
        assert r.status_code == 200 and r.json()["username"] == "jo"
        r = await jo.post("/api/v1/auth/tokens", json={"name": "ro2", "expires_in_days": 1})
        ro2 = api_client(d.rt, r.json()["token"])
        d.clock.advance(days=1, seconds=1)
        assert (await ro2.get("/api/v1/chargers")).status_code == 401
        for c in (ivy, bot, jo, ro, ro2):
            await c.aclose()


async def test_a_token_does_not_gain_roles_granted_later(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("kim", ("viewer",))
        kim = await d.session("kim")
        secret = (await kim.post("/api/v1/auth/tokens", json={"name": "t"})).json()["token"]
        r = await d.admin.patch("/api/v1/users/kim", json={"roles": ["viewer", "operator"]})
        assert r.status_code == 200
        bot = api_client(d.rt, secret)
        assert (await bot.get("/api/v1/auth/me")).json()["roles"] == ["viewer"]
        await kim.aclose()
        await bot.aclose()
