"""Access control: every route × every role, MFA gating, scopes, token limits, and the
generated docs/permissions.md kept in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from evota.api.access import markdown, route_access
from evota.api.app import create_app
from evota.config import Settings
from evota.operators.permissions import ROLE_PERMISSIONS, ROLES
from evota.runtime import Runtime
from tests.conftest import api_client, session_for, start_runtime

DOC = Path(__file__).parent.parent / "docs" / "permissions.md"


def test_permissions_doc_is_generated_from_the_routes() -> None:
    expected = markdown(create_app(Runtime(Settings())))
    assert DOC.read_text() == expected, (
        "run: uv run python -m evota.api.access > docs/permissions.md"
    )


def test_every_api_route_declares_its_access() -> None:
    """A new route without require(...) or authentication would be public by accident."""
    allowed_public = {"/api/v1/auth/login"}
    for r in route_access(create_app(Runtime(Settings()))):
        if r.public:
            assert r.path in allowed_public or r.path.startswith("/api/v1/uploads/"), r


def _fill(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith(("_id", "id")) else "x", path)


async def test_every_route_refuses_every_role_without_its_permission(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        tokens = {role: await session_for(rt, f"rbac-{role}", [role]) for role in ROLES}
        checked = 0
        for r in route_access(create_app(rt)):
            if r.public or r.permission is None:
                continue
            for role in ROLES:
                async with api_client(rt, tokens[role]) as api:
                    kwargs = {"json": {}} if r.method in ("POST", "PUT", "PATCH") else {}
                    async with api.stream(r.method, _fill(r.path), **kwargs) as res:
                        status = res.status_code
                        body = (await res.aread()) if status != 200 else b""
                if r.permission in ROLE_PERMISSIONS[role]:
                    assert status not in (401, 403), (r, role, status, body[:300])
                else:
                    assert status == 403, (r, role, status, body[:300])
                    assert b"forbidden" in body, body
                checked += 1
        assert checked >= 5 * 40
    finally:
        await rt.stop()


async def test_a_changing_role_without_mfa_can_read_but_not_change(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        token = await session_for(rt, "no-mfa", ["operator"], mfa=False)
        async with api_client(rt) as admin:
            await admin.post("/api/v1/chargers", json={"id": "CP-1", "auth_key": "k" * 16 + "X1"})
        async with api_client(rt, token) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200
            res = await api.post(
                "/api/v1/chargers/CP-1/commands/reset", json={"type": "Soft", "reason": "x"}
            )
            assert res.status_code == 403
            assert res.json()["type"].endswith("/mfa-enrolment-required")
        viewer = await session_for(rt, "viewer-no-mfa", ["viewer"], mfa=False)
        async with api_client(rt, viewer) as api:  # MFA is not required for read-only roles
            assert (await api.get("/api/v1/chargers/CP-1")).status_code == 200
    finally:
        await rt.stop()


async def _fleet(admin: httpx.AsyncClient) -> None:
    for site, region in (("s-north", "north"), ("s-south", "south")):
        res = await admin.post(
            "/api/v1/sites", json={"id": site, "name": site, "timezone": "UTC", "region": region}
        )
        assert res.status_code == 201, res.text
    for cid, site, tags in (
        ("N-1", "s-north", []),
        ("N-2", "s-north", ["vip"]),
        ("S-1", "s-south", []),
        ("S-2", "s-south", ["vip"]),
    ):
        res = await admin.post(
            "/api/v1/chargers",
            json={"id": cid, "auth_key": "key-0123456789abcdef", "site_id": site, "tags": tags},
        )
        assert res.status_code == 201, res.text


@pytest.mark.parametrize(
    ("scope", "visible"),
    [
        ({"sites": ["s-north"]}, {"N-1", "N-2"}),
        ({"regions": ["south"]}, {"S-1", "S-2"}),
        ({"tags": ["vip"]}, {"N-2", "S-2"}),
        ({}, {"N-1", "N-2", "S-1", "S-2"}),
    ],
)
async def test_scoped_grants_limit_lists_reads_and_commands(
    tmp_path: Path, database_url: str, scope: dict[str, list[str]], visible: set[str]
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            await _fleet(admin)
        token = await session_for(rt, "scoped", ["operator"], **scope)  # type: ignore[arg-type]
        async with api_client(rt, token) as api:
            listed = {c["id"] for c in (await api.get("/api/v1/chargers")).json()["items"]}
            assert listed == visible
            for cid in ("N-1", "N-2", "S-1", "S-2"):
                shown = await api.get(f"/api/v1/chargers/{cid}")
                reset = await api.post(
                    f"/api/v1/chargers/{cid}/commands/reset", json={"type": "Soft", "reason": "t"}
                )
                if cid in visible:
                    assert shown.status_code == 200
                    assert reset.status_code == 409, reset.text  # allowed, but offline
                else:  # out of scope reads as unknown: scopes do not reveal other chargers
                    assert shown.status_code == 404
                    assert reset.status_code == 404
    finally:
        await rt.stop()


async def test_api_token_site_limit_narrows_its_user(tmp_path: Path, sqlite_url: str) -> None:
    from sqlalchemy import insert, select

    from evota.runtime import token_hash
    from evota.store.models import ApiToken, User

    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        async with api_client(rt) as admin:
            await _fleet(admin)
        await session_for(rt, "automation", ["operator", "viewer"])
        async with rt.engine.begin() as conn:
            uid = (
                await conn.execute(select(User.id).where(User.username == "automation"))
            ).scalar()
            await conn.execute(
                insert(ApiToken).values(
                    name="north-bot",
                    token_hash=token_hash("evota_north-bot-token"),
                    role="user",
                    user_id=uid,
                    roles=["viewer"],
                    sites=["s-north"],
                    created_at=rt.clock.now(),
                )
            )
        async with api_client(rt, "evota_north-bot-token") as api:
            listed = {c["id"] for c in (await api.get("/api/v1/chargers")).json()["items"]}
            assert listed == {"N-1", "N-2"}
            # the token carries only the viewer role: no commands even on its own site
            res = await api.post(
                "/api/v1/chargers/N-1/commands/reset", json={"type": "Soft", "reason": "t"}
            )
            assert res.status_code == 403
            # and no fleet-wide actions at all
            assert (await api.get("/api/v1/firmware")).status_code == 403
    finally:
        await rt.stop()


async def test_console_cookie_needs_the_csrf_header_for_changes(
    tmp_path: Path, sqlite_url: str
) -> None:
    from sqlalchemy import select

    from evota.runtime import token_hash
    from evota.store.models import LoginSession

    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        token = await session_for(rt, "console", ["security_admin"])
        async with rt.engine.connect() as conn:
            csrf = (
                await conn.execute(
                    select(LoginSession.csrf_token).where(
                        LoginSession.token_hash == token_hash(token)
                    )
                )
            ).scalar()
        base = f"http://127.0.0.1:{rt.http_port}"
        site = {"id": "s1", "name": "S", "timezone": "UTC"}
        async with httpx.AsyncClient(base_url=base, cookies={"evota_session": token}) as web:
            assert (await web.get("/api/v1/chargers")).status_code == 200
            res = await web.post("/api/v1/sites", json=site)
            assert res.status_code == 403 and res.json()["field"] == "X-CSRF-Token"
            res = await web.post("/api/v1/sites", json=site, headers={"X-CSRF-Token": "wrong"})
            assert res.status_code == 403
            res = await web.post("/api/v1/sites", json=site, headers={"X-CSRF-Token": csrf})
            assert res.status_code == 201, res.text
    finally:
        await rt.stop()


async def test_idle_sessions_end(tmp_path: Path, sqlite_url: str) -> None:
    from tests.conftest import ShiftedClock

    clock = ShiftedClock()
    rt = await start_runtime(tmp_path, sqlite_url, clock=clock, session_idle_minutes=30)
    try:
        token = await session_for(rt, "idle", ["viewer"])
        async with api_client(rt, token) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200
            clock.advance(minutes=20)
            assert (await api.get("/api/v1/chargers")).status_code == 200  # activity renews
            # an open console tab refreshing itself is not activity
            poll = {"X-Evota-Poll": "1"}
            for _ in range(3):
                clock.advance(minutes=9)
                assert (await api.get("/api/v1/chargers", headers=poll)).status_code == 200
            clock.advance(minutes=4)  # 31 idle minutes since the last real request
            res = await api.get("/api/v1/chargers", headers=poll)
            assert res.status_code == 401 and res.json()["title"] == "Session expired"
            res = await api.get("/api/v1/chargers")
            assert res.status_code == 401
    finally:
        await rt.stop()
