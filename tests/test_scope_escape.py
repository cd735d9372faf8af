"""Issue 12, access control: a scoped operator cannot leave its scope through sites,
approvals or tag patterns, and four eyes cannot be sidestepped through a second route
(firmware state, registration Pending) or a second account (role grants)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from evota.operators import four_eyes
from evota.operators import permissions as perms
from evota.store.models import Charger, Site
from tests.conftest import api_client, session_for, start_runtime

ALL = list(four_eyes.ACTIONS)
KEY = "key-0123456789abcdef"
PASSWORD = "correct horse battery staple"


async def _sites_and_chargers(admin: httpx.AsyncClient) -> None:
    for site, region in (("paris", "FR"), ("lyon", "FR"), ("berlin", "DE")):
        res = await admin.post(
            "/api/v1/sites",
            json={"id": site, "name": site.title(), "timezone": "Europe/Paris", "region": region},
        )
        assert res.status_code == 201, res.text
    for cid, site in (("P-1", "paris"), ("B-1", "berlin")):
        res = await admin.post(
            "/api/v1/chargers", json={"id": cid, "auth_key": KEY, "site_id": site}
        )
        assert res.status_code == 201, res.text


async def _site(rt: Any, site_id: str) -> Any:
    async with rt.engine.connect() as conn:
        return (await conn.execute(select(Site).where(Site.id == site_id))).first()


# -- item 7: sites ---------------------------------------------------------------------------


def test_site_scope_decisions_are_pure() -> None:
    de = (perms.RoleGrant("security_admin", perms.Scope(regions=frozenset({"DE"}))),)
    both = (perms.RoleGrant("security_admin", perms.Scope(regions=frozenset({"DE", "FR"}))),)
    paris_fr, paris_de = perms.site_place("paris", "FR"), perms.site_place("paris", "DE")
    assert not perms.site_change_allowed(de, "charger.write", paris_fr, paris_de)
    assert not perms.site_change_allowed(de, "charger.write", paris_de, paris_fr)
    assert perms.site_change_allowed(both, "charger.write", paris_fr, paris_de)
    tagged = (perms.RoleGrant("viewer", perms.Scope(tags=frozenset({"dc"}))),)
    assert not perms.allowed(tagged, "fleet.read", paris_fr)  # tag scopes cover no site


async def test_a_scoped_admin_cannot_move_rename_or_delete_sites_outside_its_scope(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            await _sites_and_chargers(admin)
        de = await session_for(rt, "de-admin", ["security_admin"], regions=["DE"])
        berlin = await session_for(rt, "berlin-admin", ["security_admin"], sites=["berlin"])
        tagged = await session_for(rt, "tag-viewer", ["viewer"], tags=["dc"])
        async with (
            api_client(rt, de) as d,
            api_client(rt, berlin) as b,
            api_client(rt, tagged) as t,
        ):
            # the reported escape: pull paris (and its chargers) into region DE
            res = await d.patch("/api/v1/sites/paris", json={"region": "DE"})
            assert res.status_code == 404, res.text  # out of scope reads as unknown
            assert (await _site(rt, "paris")).region == "FR"
            assert (await d.get("/api/v1/chargers/P-1")).status_code == 404
            # nor push a site of its own out of its scope
            res = await d.patch("/api/v1/sites/berlin", json={"region": "FR"})
            assert res.status_code == 403 and res.json()["permission"] == "charger.write"
            assert (await _site(rt, "berlin")).region == "DE"
            # creating: inside its scope only
            site = {"name": "X", "timezone": "UTC"}
            res = await d.post("/api/v1/sites", json={**site, "id": "nice", "region": "FR"})
            assert res.status_code == 403, res.text
            res = await d.post("/api/v1/sites", json={**site, "id": "nowhere"})
            assert res.status_code == 403, res.text  # no region: outside a region scope
            res = await d.post("/api/v1/sites", json={**site, "id": "munich", "region": "DE"})
            assert res.status_code == 201, res.text
            assert (await d.patch("/api/v1/sites/berlin", json={"name": "B"})).status_code == 200
            listed = (await d.get("/api/v1/sites")).json()
            assert [s["id"] for s in listed["items"]] == ["berlin", "munich"]
            assert listed["total"] == 2
            assert (await d.get("/api/v1/sites/paris")).status_code == 404
            # a site-scoped admin: the rename, re-timezone and delete of the report
            res = await b.patch(
                "/api/v1/sites/paris", json={"name": "Mine", "timezone": "Asia/Tokyo"}
            )
            assert res.status_code == 404
            assert (await b.delete("/api/v1/sites/lyon")).status_code == 404
            assert (await _site(rt, "lyon")) is not None
            assert (await _site(rt, "paris")).name == "Paris"
            # a tag scope covers chargers, not sites
            assert (await t.get("/api/v1/sites")).json()["items"] == []
        both = await session_for(rt, "eu-admin", ["security_admin"], regions=["DE", "FR"])
        async with api_client(rt, both) as e:
            res = await e.patch("/api/v1/sites/paris", json={"region": "DE"})
            assert res.status_code == 200 and res.json()["region"] == "DE"
    finally:
        await rt.stop()


# -- item 8: firmware state route --------------------------------------------------------------


async def test_the_state_route_cannot_revoke_around_four_eyes(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            await admin.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
            form = {"vendor": "Acme", "version": "1.0.0", "models": ["M1"], "state": "released"}
            res = await admin.post(
                "/api/v1/firmware", data=form, files={"file": ("fw.bin", b"image bytes")}
            )
            assert res.status_code == 201, res.text
            fw = res.json()["id"]
        ann = await session_for(rt, "ann", ["firmware_manager"])
        async with api_client(rt, ann) as a:
            res = await a.post(
                f"/api/v1/firmware/{fw}/state", json={"state": "revoked", "reason": "now"}
            )
            assert res.status_code == 422, res.text
            assert res.json()["field"] == "state" and "/revoke" in res.json()["detail"]
            assert (await a.get(f"/api/v1/firmware/{fw}")).json()["state"] == "released"
            res = await a.post(f"/api/v1/firmware/{fw}/revoke", json={"reason": "CVE"})
            assert res.status_code == 202 and res.json()["action"] == "firmware.revoke"
            # the other moves still go through the state route
            res = await a.post(f"/api/v1/firmware/{fw}/state", json={"state": "deprecated"})
            assert res.status_code == 200 and res.json()["state"] == "deprecated"
    finally:
        await rt.stop()


# -- item 9: out of service is charger.disable -----------------------------------------------


def test_every_registration_but_accepted_is_a_disable() -> None:
    assert four_eyes.charger_change_actions({"registration": "Pending"}) == ["charger.disable"]
    assert four_eyes.charger_change_actions({"registration": "Rejected"}) == ["charger.disable"]
    assert four_eyes.charger_change_actions({"registration": "Accepted"}) == []
    assert four_eyes.charger_change_actions({"tags": ["x"], "site_id": None}) == []


async def test_setting_registration_pending_waits_for_a_second_operator(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            res = await admin.post("/api/v1/chargers", json={"id": "CP-1", "auth_key": KEY})
            assert res.status_code == 201
        alice = await session_for(rt, "alice", ["security_admin"])
        async with api_client(rt, alice) as a:
            res = await a.patch(
                "/api/v1/chargers/CP-1", json={"registration": "Pending", "reason": "x"}
            )
            assert res.status_code == 202, res.text
            assert res.json()["action"] == "charger.disable"
            async with rt.engine.connect() as conn:
                registration = (
                    await conn.execute(select(Charger.registration).where(Charger.id == "CP-1"))
                ).scalar()
            assert registration == "Accepted"
            # putting a charger back in service does not wait
            res = await a.patch("/api/v1/chargers/CP-1", json={"registration": "Accepted"})
            assert res.status_code == 200
    finally:
        await rt.stop()


# -- item 10: grants of approval power --------------------------------------------------------


def test_what_counts_as_granting_approval_power() -> None:
    def g(role: str, **scope: list[str]) -> perms.RoleGrant:
        return perms.RoleGrant(role, perms.Scope(**{k: frozenset(v) for k, v in scope.items()}))

    power = four_eyes.grants_approval_power
    assert power([g("security_admin")], [g("security_admin"), g("operator")])
    assert power([], [g("firmware_manager")])
    assert power([g("operator", sites=["a"])], [g("operator", sites=["a", "b"])])
    assert power([g("operator", sites=["a"])], [g("operator")])  # unlimited is wider
    assert not power([g("operator")], [g("operator", sites=["a"])])  # narrowing
    assert not power([g("viewer")], [g("viewer"), g("auditor")])
    assert not power([g("operator"), g("viewer")], [g("operator")])


async def test_a_user_admin_cannot_empower_itself_or_a_second_account(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        alice = await session_for(rt, "alice", ["security_admin"])
        bob = await session_for(rt, "bob", ["security_admin"])
        async with api_client(rt, alice) as a, api_client(rt, bob) as b:
            # granting itself operator and firmware_manager
            res = await a.patch(
                "/api/v1/users/alice",
                json={"roles": ["security_admin", "operator", "firmware_manager"]},
            )
            assert res.status_code == 202, res.text
            self_grant = res.json()["approval_id"]
            assert (await a.get("/api/v1/users/alice")).json()["roles"] == ["security_admin"]
            res = await a.post(f"/api/v1/approvals/{self_grant}/approve")
            assert res.status_code == 403 and res.json()["reason"] == "self_approval"
            # a sock puppet: created at once, but without approval power
            res = await a.post(
                "/api/v1/users",
                json={"username": "sock", "password": PASSWORD, "roles": ["operator", "viewer"]},
            )
            assert res.status_code == 202, res.text
            assert res.json()["user"]["roles"] == ["viewer"]
            sock_grant = res.json()["approval_id"]
            # the subject of a grant cannot approve it either
            res = await b.patch("/api/v1/users/bob", json={"roles": ["security_admin", "operator"]})
            bob_grant = res.json()["approval_id"]
            res = await b.post(f"/api/v1/approvals/{bob_grant}/approve")
            assert res.status_code == 403 and res.json()["reason"] == "self_approval"
            # no new power: at once
            res = await a.patch("/api/v1/users/bob", json={"scopes": {"regions": ["DE"]}})
            assert res.status_code == 200 and res.json()["scopes"]["regions"] == ["DE"]
            res = await a.post(
                "/api/v1/users",
                json={"username": "audrey", "password": PASSWORD, "roles": ["auditor"]},
            )
            assert res.status_code == 201
        # a second user admin (fleet-wide) approves; the grant runs as approved
        carol = await session_for(rt, "carol", ["security_admin"])
        async with api_client(rt, carol) as c:
            res = await c.post(f"/api/v1/approvals/{sock_grant}/approve")
            assert res.status_code == 200 and res.json()["state"] == "executed", res.text
            assert (await c.get("/api/v1/users/sock")).json()["roles"] == ["operator", "viewer"]
        # the bootstrap token (break-glass, sets up the first operators) grants at once
        async with api_client(rt) as admin:
            res = await admin.post(
                "/api/v1/users",
                json={"username": "first", "password": PASSWORD, "roles": ["operator"]},
            )
            assert res.status_code == 201, res.text
    finally:
        await rt.stop()


# -- item 11: approvals are scope-filtered ---------------------------------------------------


async def test_approvals_and_their_payloads_follow_scope_and_permission(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            await _sites_and_chargers(admin)
            await admin.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
            form = {"vendor": "Acme", "version": "1.0.0", "models": ["M1"], "state": "released"}
            res = await admin.post(
                "/api/v1/firmware", data=form, files={"file": ("fw.bin", b"image bytes")}
            )
            fw = res.json()["id"]
        sec = await session_for(rt, "sec", ["security_admin"])
        fm = await session_for(rt, "fm", ["firmware_manager"])
        berlin_op = await session_for(rt, "berlin-op", ["operator"], sites=["berlin"])
        paris_sec = await session_for(rt, "paris-sec", ["security_admin"], sites=["paris"])
        async with api_client(rt, sec) as s, api_client(rt, fm) as f:
            res = await s.patch(
                "/api/v1/chargers/P-1",
                json={"auth_key": "new-key-0123456789abc", "reason": "rotation"},
            )
            rotation = res.json()["approval_id"]
            res = await f.post(f"/api/v1/firmware/{fw}/revoke", json={"reason": "CVE-1"})
            revoke = res.json()["approval_id"]
        async with api_client(rt, berlin_op) as b:
            listed = (await b.get("/api/v1/approvals")).json()
            assert [i["id"] for i in listed["items"]] == [] and listed["total"] == 0
            assert (await b.get(f"/api/v1/approvals/{rotation}")).status_code == 404
            assert (await b.post(f"/api/v1/approvals/{rotation}/approve")).status_code == 404
        base = f"http://127.0.0.1:{rt.http_port}"
        async with httpx.AsyncClient(base_url=base, cookies={"evota_session": berlin_op}) as web:
            page = await web.get("/console/approvals")  # the console goes through the API
            assert page.status_code == 200, page.text
            assert rotation not in page.text and "P-1" not in page.text
        async with api_client(rt, paris_sec) as p:
            listed = (await p.get("/api/v1/approvals")).json()
            assert [i["id"] for i in listed["items"]] == [rotation]  # no firmware.read
            shown = (await p.get(f"/api/v1/approvals/{rotation}")).json()
            assert shown["payload"]["charger_id"] == "P-1" and not shown["details_hidden"]
        async with api_client(rt, sec) as s:  # may see the revoke, not do it
            shown = (await s.get(f"/api/v1/approvals/{revoke}")).json()
            assert shown["details_hidden"] and shown["payload"] == {}
            assert "CVE-1" not in str(shown["payload"])
            ids = {i["id"] for i in (await s.get("/api/v1/approvals")).json()["items"]}
            assert ids == {rotation, revoke}
    finally:
        await rt.stop()


async def test_the_console_badge_counts_only_visible_requests(
    tmp_path: Path, sqlite_url: str
) -> None:
    from evota.api.deps import authenticate
    from evota.console import queries

    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        async with api_client(rt) as admin:
            await _sites_and_chargers(admin)
        sec = await session_for(rt, "sec", ["security_admin"])
        async with api_client(rt, sec) as s:
            res = await s.patch(
                "/api/v1/chargers/P-1", json={"registration": "Rejected", "reason": "x"}
            )
            assert res.status_code == 202
        berlin_op = await session_for(rt, "berlin-op", ["operator"], sites=["berlin"])
        paris_op = await session_for(rt, "paris-op", ["operator"], sites=["paris"])
        now = rt.clock.now()
        berlin = await authenticate(rt, berlin_op)
        paris = await authenticate(rt, paris_op)
        assert (await queries.badges(rt, berlin, now)).approvals == 0
        assert (await queries.badges(rt, paris, now)).approvals == 1
    finally:
        await rt.stop()


# -- item 12: tags match exactly ------------------------------------------------------------


async def test_tag_scopes_and_filters_match_exactly(tmp_path: Path, database_url: str) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            for cid, tags in (
                ("C-1", ["fast_dc"]),
                ("C-2", ["fastXdc"]),
                ("C-3", ['a"', "b"]),
                ("C-4", ['a"b']),
                ("C-5", ["100%"]),
            ):
                res = await admin.post(
                    "/api/v1/chargers", json={"id": cid, "auth_key": KEY, "tags": tags}
                )
                assert res.status_code == 201, res.text
            res = await admin.post(
                "/api/v1/sites", json={"id": "s1", "name": "S", "timezone": "UTC", "tags": ["x_y"]}
            )
            await admin.post(
                "/api/v1/sites", json={"id": "s2", "name": "S", "timezone": "UTC", "tags": ["xzy"]}
            )

            async def tagged(path: str, tag: str) -> set[str]:
                res = await admin.get(path, params={"tag": tag})
                assert res.status_code == 200, res.text
                return {i["id"] for i in res.json()["items"]}

            assert await tagged("/api/v1/chargers", "fast_dc") == {"C-1"}
            assert await tagged("/api/v1/chargers", "%") == set()
            assert await tagged("/api/v1/chargers", "100%") == {"C-5"}
            assert await tagged("/api/v1/chargers", "b") == {"C-3"}  # not C-4's 'a"b'
            assert await tagged("/api/v1/sites", "x_y") == {"s1"}
            assert await tagged("/api/v1/sites", "%") == set()
        viewer = await session_for(rt, "fast", ["viewer"], tags=["fast_dc"])
        pct = await session_for(rt, "pct", ["viewer"], tags=["%"])
        async with api_client(rt, viewer) as v, api_client(rt, pct) as p:
            listed = {c["id"] for c in (await v.get("/api/v1/chargers")).json()["items"]}
            assert listed == {"C-1"}
            assert (await v.get("/api/v1/chargers/C-2")).status_code == 404
            assert (await p.get("/api/v1/chargers")).json()["items"] == []
    finally:
        await rt.stop()


# -- the same class, found while hunting ------------------------------------------------------


async def test_a_scoped_operator_cannot_rewrite_profiles_reaching_beyond_its_scope(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A Berlin operator used to be able to change the settings (or delete) a fleet-wide
    profile that a fleet-wide operator would later apply to Paris."""
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        async with api_client(rt) as admin:
            await _sites_and_chargers(admin)
            res = await admin.post(
                "/api/v1/config-profiles",
                json={"name": "fleet", "target": {"models": ["AC22"]}, "settings": {"A": "1"}},
            )
            fleet = res.json()["id"]
            res = await admin.post(
                "/api/v1/operations",
                json={"command": "clear-cache", "target": {"sites": ["paris"]}, "reason": "r"},
            )
            paris_op = res.json()["id"]
        berlin = await session_for(rt, "berlin-op", ["operator"], sites=["berlin"])
        async with api_client(rt, berlin) as b:
            res = await b.patch(f"/api/v1/config-profiles/{fleet}", json={"settings": {"A": "2"}})
            assert res.status_code == 404, res.text
            assert (await b.delete(f"/api/v1/config-profiles/{fleet}")).status_code == 404
            body = {"name": "mine", "settings": {"A": "1"}}
            res = await b.post(
                "/api/v1/config-profiles", json={**body, "target": {"models": ["x"]}}
            )
            assert res.status_code == 403 and res.json()["field"] == "target"
            res = await b.post(
                "/api/v1/config-profiles", json={**body, "target": {"sites": ["berlin"]}}
            )
            assert res.status_code == 201, res.text
            mine = res.json()["id"]
            res = await b.patch(
                f"/api/v1/config-profiles/{mine}", json={"target": {"sites": ["paris"]}}
            )
            assert res.status_code == 403
            # an operation on chargers it cannot see reads as unknown, naming none of them
            res = await b.post(f"/api/v1/operations/{paris_op}/cancel", json={"reason": "x"})
            assert res.status_code == 404 and "P-1" not in res.text
            # a command to an out-of-scope charger is unknown before its body is looked at
            res = await b.post("/api/v1/chargers/P-1/commands/reset", json={"type": "Nope"})
            assert res.status_code == 404
        async with api_client(rt) as admin:
            shown = (await admin.get(f"/api/v1/config-profiles/{fleet}")).json()
            assert shown["settings"] == {"A": "1"}
    finally:
        await rt.stop()


async def test_the_cli_says_a_grant_waits_for_a_second_user_admin(
    tmp_path: Path, sqlite_url: str
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from evota.cli import app

    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        alice = await session_for(rt, "alice", ["security_admin"])
        env = {"EVOTA_URL": f"http://127.0.0.1:{rt.http_port}", "EVOTA_TOKEN": alice}

        async def cli(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)

        r = await asyncio.to_thread(  # the password is prompted for, twice
            CliRunner().invoke,
            app,
            ["user", "add", "sock", "--role", "operator"],
            env=env,
            input=f"{PASSWORD}\n{PASSWORD}\n",
        )
        assert r.exit_code == 0, r.output
        assert "wait for a second user admin" in r.output and "no roles yet" in r.output
        r = await cli(
            "user", "set-roles", "alice", "--role", "security_admin", "--role", "operator"
        )
        assert r.exit_code == 0 and "waits for a second user admin" in r.output, r.output
    finally:
        await rt.stop()


async def test_a_user_admin_cannot_take_over_an_approvers_login(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Resetting the password and second factor of someone with approval power would let a
    user admin log in as them and approve its own requests: both wait for a second admin."""
    from evota.store.models import User

    rt = await start_runtime(tmp_path, sqlite_url, approval_actions=ALL)
    try:
        alice = await session_for(rt, "alice", ["security_admin"])
        await session_for(rt, "bob", ["operator"])
        await session_for(rt, "vic", ["viewer"])

        async def user(name: str) -> Any:
            async with rt.engine.connect() as conn:
                return (await conn.execute(select(User).where(User.username == name))).first()

        before = await user("bob")
        async with api_client(rt, alice) as a:
            res = await a.post("/api/v1/users/bob/reset-mfa")
            assert res.status_code == 202 and res.json()["action"] == "user.credentials"
            mfa_reset = res.json()["approval_id"]
            res = await a.post("/api/v1/users/bob/password", json={"password": PASSWORD})
            assert res.status_code == 202, res.text
            password_reset = res.json()["approval_id"]
            shown = (await a.get(f"/api/v1/approvals/{password_reset}")).json()
            assert shown["payload"]["password_hash"] == "[redacted]"
            assert (await user("bob")).password_hash == before.password_hash
            assert (await user("bob")).mfa_enabled
            # someone without approval power: at once, as before
            res = await a.post("/api/v1/users/vic/password", json={"password": PASSWORD})
            assert res.status_code == 200, res.text
        bob = await session_for(rt, "bob", ["operator"])
        async with api_client(rt, bob) as b:  # deciding it takes user.admin: not even shown
            res = await b.post(f"/api/v1/approvals/{mfa_reset}/approve")
            assert res.status_code == 404
        carol = await session_for(rt, "carol", ["security_admin"])
        async with api_client(rt, carol) as c:
            res = await c.post(f"/api/v1/approvals/{password_reset}/approve")
            assert res.status_code == 200 and res.json()["state"] == "executed", res.text
            res = await c.post(f"/api/v1/approvals/{mfa_reset}/approve")
            assert res.status_code == 200 and res.json()["state"] == "executed", res.text
        after = await user("bob")
        assert after.password_hash != before.password_hash and not after.mfa_enabled
    finally:
        await rt.stop()
