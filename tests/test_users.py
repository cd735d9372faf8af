"""User administration over the API and the CLI (including the offline first user)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy import select
from typer.testing import CliRunner

from evota.cli import app
from evota.store.models import LoginSession

from .conftest import api_client, start_runtime
from .test_auth import ENROL, PASSWORD, desk, problem_type

runner = CliRunner()


async def test_create_user_validation(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        body: dict[str, Any] = {"username": "ann", "password": PASSWORD, "roles": ["operator"]}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"password": "short"}, "password"),
            ({"password": "ann-is-my-password"}, "password"),
            ({"password": "password1234"}, "password"),
            ({"roles": ["wizard"]}, "roles"),
            ({"roles": ["admin"]}, "roles"),
            ({"roles": []}, "roles"),
            ({"username": "has space"}, "username"),
            ({"scopes": {"sites": ["x"], "planets": ["mars"]}}, "scopes.planets"),
            ({"extra": 1}, "extra"),
        ]
        for change, field in cases:
            r = await d.admin.post("/api/v1/users", json={**body, **change})
            assert r.status_code == 422, (change, r.text)
            assert r.json()["field"] == field, (change, r.json())
            assert "ann-is-my-password" not in r.text
        r = await d.admin.post(
            "/api/v1/users", json={**body, "username": "Ann", "scopes": {"sites": ["berlin"]}}
        )
        assert r.status_code == 201, r.text
        u = r.json()
        assert u["username"] == "ann" and u["roles"] == ["operator"]
        assert u["scopes"] == {"sites": ["berlin"], "regions": [], "tags": []}
        assert not u["mfa_enabled"] and not u["disabled"]
        r = await d.admin.post("/api/v1/users", json=body)
        assert r.status_code == 409 and r.json()["field"] == "username"
        listed = await d.admin.get("/api/v1/users")
        assert listed.json()["total"] == 1
        for leak in ("$argon2", "password_hash", "mfa_secret", 'recovery_codes"'):
            assert leak not in listed.text
        assert (await d.admin.get("/api/v1/users/nobody")).status_code == 404
        [entry] = await d.entries("user.create")
        assert entry.target == "ann" and entry.detail["roles"] == ["operator"]
        assert PASSWORD not in await d.all_audit_text()


async def test_only_user_admins_with_mfa_manage_users(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("op", ("operator",))
        await d.user("sec", ("security_admin",))
        op = await d.session("op")
        await d.enrol(op)
        new = {"username": "zed", "password": PASSWORD, "roles": ["viewer"]}
        r = await op.post("/api/v1/users", json=new)
        assert r.status_code == 403 and r.json()["permission"] == "user.admin"
        assert (await op.get("/api/v1/users")).status_code == 403
        sec = await d.session("sec")
        r = await sec.post("/api/v1/users", json=new)
        assert r.status_code == 403 and problem_type(r) == ENROL
        await d.enrol(sec)
        assert (await sec.post("/api/v1/users", json=new)).status_code == 201
        r = await sec.post("/api/v1/users/sec/disable")
        assert r.status_code == 409  # not on yourself
        assert [e.target for e in await d.entries("user.create") if e.actor == "sec"] == ["zed"]
        await op.aclose()
        await sec.aclose()


async def test_patch_disable_and_enable(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("lu", ("viewer",), sites=["a"])
        r = await d.admin.patch("/api/v1/users/lu", json={"roles": ["viewer", "auditor"]})
        assert r.status_code == 200, r.text
        assert r.json()["roles"] == ["viewer", "auditor"]
        assert [g["scope"]["sites"] for g in r.json()["grants"]] == [["a"], ["a"]]
        r = await d.admin.patch("/api/v1/users/lu", json={"scopes": {"regions": ["north"]}})
        assert r.json()["scopes"] == {"sites": [], "regions": ["north"], "tags": []}
        assert r.json()["roles"] == ["viewer", "auditor"]
        r = await d.admin.patch("/api/v1/users/lu", json={"roles": ["root"]})
        assert r.status_code == 422 and r.json()["field"] == "roles"

        lu = await d.session("lu")
        token = (await lu.post("/api/v1/auth/tokens", json={"name": "t"})).json()["token"]
        bot = api_client(d.rt, token)
        assert (await bot.get("/api/v1/auth/me")).status_code == 200
        r = await d.admin.post("/api/v1/users/lu/disable")
        assert r.status_code == 200 and r.json()["disabled"]
        assert (await lu.get("/api/v1/auth/me")).status_code == 401
        assert (await bot.get("/api/v1/auth/me")).status_code == 401
        assert (await d.login("lu")).status_code == 401
        r = await d.admin.patch("/api/v1/users/lu", json={"disabled": False})
        assert r.status_code == 200 and not r.json()["disabled"]
        assert (await d.login("lu")).status_code == 200
        assert (await bot.get("/api/v1/auth/me")).status_code == 401  # stays revoked
        actions = [e.action for e in await d.entries() if e.action.startswith("user.")]
        assert actions == [
            "user.create",
            "user.update",
            "user.update",
            "user.disable",
            "user.update",
        ]
        await lu.aclose()
        await bot.aclose()


async def test_reset_mfa_makes_the_user_enrol_again(tmp_path: Path, sqlite_url: str):
    async with desk(tmp_path, sqlite_url) as d:
        await d.user("mo", ("operator",))
        mo = await d.session("mo")
        secret, _ = await d.enrol(mo)
        r = await d.admin.post("/api/v1/users/mo/reset-mfa")
        assert r.status_code == 200
        assert not r.json()["mfa_enabled"] and r.json()["recovery_codes_left"] == 0
        assert (await mo.get("/api/v1/auth/me")).status_code == 401  # sessions ended
        r = await d.login("mo")  # no code asked any more
        assert r.status_code == 200 and r.json()["mfa"] is False
        mo2 = api_client(d.rt, r.json()["token"])
        r = await mo2.post("/api/v1/sites", json={"name": "X"})
        assert r.status_code == 403 and problem_type(r) == ENROL
        new_secret, _ = await d.enrol(mo2)
        assert new_secret != secret
        assert [e.target for e in await d.entries("user.reset_mfa")] == ["mo"]
        await mo.aclose()
        await mo2.aclose()


async def test_password_changes(tmp_path: Path, sqlite_url: str):
    new = "an entirely new passphrase"
    async with desk(tmp_path, sqlite_url, login_max_failures=2) as d:
        await d.user("ned", ("viewer",))
        await d.user("ola", ("viewer",))
        ned = await d.session("ned")
        other = await d.session("ned")
        path = "/api/v1/users/ned/password"
        r = await ned.post(path, json={"password": new})
        assert r.status_code == 422 and r.json()["field"] == "current_password"
        r = await ned.post(path, json={"password": new, "current_password": "wrong password!"})
        assert r.status_code == 403 and r.json()["field"] == "current_password"
        r = await ned.post(path, json={"password": "short", "current_password": PASSWORD})
        assert r.status_code == 422 and r.json()["field"] == "password"
        r = await ned.post(path, json={"password": new, "current_password": PASSWORD})
        assert r.status_code == 200, r.text
        assert (await ned.get("/api/v1/auth/me")).status_code == 200  # this session stays
        assert (await other.get("/api/v1/auth/me")).status_code == 401  # others end
        assert (await d.login("ned")).status_code == 401
        assert (await d.login("ned", new)).status_code == 200
        # a viewer cannot reset someone else's password
        r = await ned.post("/api/v1/users/ola/password", json={"password": new})
        assert r.status_code == 403
        # an admin reset lifts a lockout
        for _ in range(2):
            await d.login("ola", "wrong password!!")
        assert (await d.login("ola")).status_code == 423
        r = await d.admin.post("/api/v1/users/ola/password", json={"password": new})
        assert r.status_code == 200 and r.json()["locked_until"] is None
        assert (await d.login("ola", new)).status_code == 200
        outcomes = [(e.actor, e.outcome) for e in await d.entries("user.password")]
        assert outcomes == [("ned", "failed"), ("ned", "ok"), ("bootstrap-admin", "ok")]
        assert new not in await d.all_audit_text()
        await ned.aclose()
        await other.aclose()


# -- CLI ---------------------------------------------------------------------------------


async def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env or {}, input=input)


async def test_cli_bootstraps_the_first_user_offline_then_works_through_the_api(
    tmp_path: Path, sqlite_url: str
):
    db = sqlite_url
    pw = f"{PASSWORD}\n{PASSWORD}\n"
    r = await invoke(
        "user", "add", "root", "--role", "security_admin", "--database-url", db, input=pw
    )
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.stdout
    r = await invoke("user", "add", "root", "--role", "viewer", "--database-url", db, input=pw)
    assert r.exit_code == 1 and "exists" in r.output
    r = await invoke("user", "add", "x2", "--role", "wizard", "--database-url", db, input=pw)
    assert r.exit_code == 1 and "unknown role" in r.output
    short = "short\nshort\n"
    r = await invoke("user", "add", "x3", "--role", "viewer", "--database-url", db, input=short)
    assert r.exit_code == 1 and "at least 12" in r.output and len(r.output.splitlines()) <= 3

    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        url = f"http://127.0.0.1:{rt.http_port}"
        env = {"EVOTA_URL": url, "EVOTA_TOKEN": ""}
        r = await invoke("login", "root", "--json", env=env, input=f"{PASSWORD}\n")
        assert r.exit_code == 0, r.output
        login = json.loads(r.stdout)
        assert login["mfa"] is False and login["mfa_required"] is True
        env["EVOTA_TOKEN"] = login["token"]
        r = await invoke("charger", "list", env=env)
        assert r.exit_code == 0  # reading needs no second factor
        r = await invoke("user", "add", "amy", "--role", "viewer", env=env, input=pw)
        assert r.exit_code == 1 and "403" in r.output and "enrol" in r.output.lower()

        r = await invoke("mfa", "enroll", "--json", env=env)
        assert r.exit_code == 0, r.output
        secret = json.loads(r.stdout)["secret"]
        code = pyotp.TOTP(secret).at(rt.clock.now())
        r = await invoke("mfa", "confirm", code, env=env)
        assert r.exit_code == 0 and len(r.stdout.split()) == 10  # the recovery codes

        r = await invoke(
            "user", "add", "amy", "--role", "viewer", "--site", "s1", env=env, input=pw
        )
        assert r.exit_code == 0, r.output
        r = await invoke("user", "list", env=env)
        assert r.exit_code == 0 and "root" in r.stdout and "amy" in r.stdout
        r = await invoke("user", "set-roles", "amy", "--role", "operator", "--fleet-wide", env=env)
        assert r.exit_code == 0 and "whole fleet" in r.stdout
        r = await invoke("user", "show", "amy", "--json", env=env)
        assert json.loads(r.stdout)["roles"] == ["operator"]
        r = await invoke("user", "reset-mfa", "amy", env=env)
        assert r.exit_code == 0

        r = await invoke("token", "create", "ci", "--role", "security_admin", env=env)
        assert r.exit_code == 0, r.output
        bot_token = r.stdout.strip()
        assert bot_token.startswith("evota_")
        r = await invoke("token", "list", "--json", env=env)
        [listed] = json.loads(r.stdout)
        assert listed["name"] == "ci" and bot_token not in r.stdout
        r = await invoke("user", "list", env={**env, "EVOTA_TOKEN": bot_token})
        assert r.exit_code == 0
        r = await invoke("token", "revoke", str(listed["id"]), env=env)
        assert r.exit_code == 0
        r = await invoke("user", "list", env={**env, "EVOTA_TOKEN": bot_token})
        assert r.exit_code == 1 and "401" in r.output

        new = "a brand new passphrase"
        r = await invoke("user", "password", "amy", env=env, input=f"{new}\n{new}\n")
        assert r.exit_code == 0, r.output
        r = await invoke("login", "amy", env=env, input=f"{new}\n")
        assert r.exit_code == 0, r.output
        r = await invoke("user", "disable", "amy", env=env)
        assert r.exit_code == 0
        r = await invoke("login", "amy", env=env, input=f"{PASSWORD}\n")
        assert r.exit_code == 1 and "401" in r.output and len(r.output.splitlines()) <= 2

        # with MFA on, login asks for the code
        code = pyotp.TOTP(secret).at(rt.clock.now().timestamp() + 30)
        r = await invoke("login", "root", env=env, input=f"{PASSWORD}\n{code}\n")
        assert r.exit_code == 0, r.output
        token = r.stdout.strip()  # prompts go to stderr: $(evota login …) gets the token
        assert token.count("\n") == 0 and "Password" not in r.stdout
        async with rt.engine.connect() as conn:
            mfa = (
                await conn.execute(
                    select(LoginSession.mfa).where(LoginSession.revoked_at.is_(None))
                )
            ).scalars()
            assert sorted(mfa) == [True, True]
        assert token != login["token"]
        entries = [e async for e in rt.audit.entries()]
        creates = [(e.actor, e.target) for e in entries if e.action == "user.create"]
        assert creates[0][1] == "root" and creates[0][0].startswith("cli:")
        assert creates[1] == ("root", "amy")
    finally:
        await rt.stop()
