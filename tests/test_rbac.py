"""Access control: every route × every role, MFA gating, scopes, token limits, and the
generated docs/permissions.md kept in step with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from evota.api.access import markdown, route_access, scope_rule
from evota.api.app import create_app
from evota.config import Settings
from evota.operators.permissions import ROLE_PERMISSIONS, ROLES
from evota.runtime import Runtime
from tests.conftest import Keys, api_client, session_for, start_runtime

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


@pytest.mark.slow
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

    from evota.operators.credentials import token_hash
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

    from evota.operators.credentials import token_hash
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


# -- the route × role × scope matrix ----------------------------------------------------------
#
# Every route is tried with every role that holds its permission, once with a grant scoped to
# the region of the objects it acts on ("in") and once scoped to another region ("out"):
#
# - fleet-wide permissions (firmware, campaigns, operations' and profiles' reads, alerts,
#   audit, users, id tokens): a scoped grant does not hold them, 403 both ways;
# - a route on one object (a charger, site, approval, job, file, operation or profile):
#   out of scope 404, exactly as an unknown id (reads and changes alike, so scopes do not
#   reveal what exists), in scope never 404 and never a 403 for the route's own permission
#   (a 403 for the action's permission, e.g. approving a change one may not make, is fine);
# - a list: 200, with the in-scope objects in and none of them out;
# - a create: in scope 2xx, out of scope 403 or 422 (as for an unknown site or charger) and
#   nothing created.
# The routes come from the app: a new route is covered without touching this test, and one
# whose object the test cannot place fails until it is added to OBJECTS.

# Aggregates whose default rows name no charger or site: asked for rows that do.
LIST_QUERIES = {"/api/v1/analytics/resolution": "?group_by=site"}

OUT_OF_SCOPE_EXCEPTIONS = {
    # A profile is a shared definition; applying one only ever touches the caller's own
    # chargers, so out of scope it is "nothing to fix in your scope".
    ("POST", "/api/v1/config-profiles/{profile_id}/apply"): 409,
    # An image is fleet-wide; its scorecard counts only the caller's chargers (none here).
    ("GET", "/api/v1/firmware/{firmware_id}/scorecard"): 200,
}


def _example(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """A value that satisfies ``schema``: its first example, else a minimal one."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("examples"):
        return schema["examples"][0]
    if "anyOf" in schema:
        return _example(next(s for s in schema["anyOf"] if s.get("type") != "null"), spec)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        return {
            name: _example(sub, spec)
            for name, sub in schema.get("properties", {}).items()
            if name in schema.get("required", ())
        }
    if kind == "array":
        return [_example(schema.get("items", {}), spec)] * schema.get("minItems", 0)
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    size = max(int(schema.get("minLength", 1)), 1)
    for seed in ("x", "0", "a", "A", "1"):
        if re.fullmatch(schema.get("pattern", ".*"), seed * size):
            return seed * size
    raise AssertionError(f"no example for {schema}: give the model an example")


def _body(spec: dict[str, Any], method: str, path: str) -> Any:
    content = spec["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return _example(content["application/json"]["schema"], spec)


async def _scoped_world(rt: Runtime) -> dict[str, str]:
    """Objects in region r-inside (ids carry "inside") and a charger in r-outside."""
    from sqlalchemy import insert, update

    from evota.audit.log import Actor
    from evota.store.models import Charger, ChargerCertificate, ChargerFile

    async with api_client(rt) as admin:
        for site, region in (("s-inside", "r-inside"), ("s-outside", "r-outside")):
            res = await admin.post(
                "/api/v1/sites",
                json={"id": site, "name": site, "timezone": "UTC", "region": region},
            )
            assert res.status_code == 201, res.text
        for cid, site in (("CP-INSIDE", "s-inside"), ("CP-OUTSIDE", "s-outside")):
            res = await admin.post(
                "/api/v1/chargers",
                json={"id": cid, "auth_key": "key-0123456789abcdef", "site_id": site},
            )
            assert res.status_code == 201, res.text
        async with rt.engine.begin() as conn:
            # The versions carry "inside"/"outside" too, so aggregates by version (the fleet's
            # firmware picture) show which chargers they counted.
            for cid, version in (("CP-INSIDE", "0.9-inside"), ("CP-OUTSIDE", "0.9-outside")):
                await conn.execute(
                    update(Charger)
                    .where(Charger.id == cid)
                    .values(vendor="Acme", model="M1", firmware_version=version)
                )
            await conn.execute(
                insert(ChargerFile).values(
                    id="0b7f4a36-4c2d-4d8e-9f57-2f6f3d1e9a01",
                    charger_id="CP-INSIDE",
                    kind="diagnostics",
                    filename="inside.log",
                    sha256="0" * 64,
                    size=0,
                    created_at=rt.clock.now(),
                )
            )
            # A certificate evota signed for each charger, expiring soon (the fleet's
            # soonest-expiring list, evota.api.certificates).
            for cid in ("CP-INSIDE", "CP-OUTSIDE"):
                await conn.execute(
                    insert(ChargerCertificate).values(
                        charger_id=cid,
                        certificate_type="ChargingStationCertificate",
                        serial="1",
                        sha256="0" * 64,
                        subject=f"CN={cid}",
                        key="EC P-256",
                        not_before=rt.clock.now(),
                        not_after=rt.clock.now(),
                        certificate="",
                        status="Accepted",
                        created_at=rt.clock.now(),
                    )
                )
        # A command each charger answered: the resolution analytics, grouped by site
        # (LIST_QUERIES), then have a row inside and one outside.
        for cid in ("CP-INSIDE", "CP-OUTSIDE"):
            await rt.audit.record(
                Actor("matrix", ("operator",)),
                "command.clear-cache",
                "Accepted",
                target=cid,
                chargers=[cid],
            )
        await admin.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
        form = {"vendor": "Acme", "version": "1.0.0", "models": ["M1"], "state": "released"}
        res = await admin.post("/api/v1/firmware", data=form, files={"file": ("f.bin", b"fw")})
        assert res.status_code == 201, res.text
        firmware = res.json()["id"]
        res = await admin.post(
            "/api/v1/chargers/CP-INSIDE/firmware-update", json={"firmware_id": firmware}
        )
        assert res.status_code == 202, res.text
        job = str(res.json()["job_id"])
        res = await admin.post(
            "/api/v1/operations",
            json={
                "command": "clear-cache",
                "target": {"charger_ids": ["CP-INSIDE"]},
                "reason": "matrix",
            },
        )
        assert res.status_code == 201, res.text
        operation = res.json()["id"]
        res = await admin.post(
            "/api/v1/config-profiles",
            json={
                "name": "inside",
                "target": {"sites": ["s-inside"]},
                "settings": {"HeartbeatInterval": "300"},
            },
        )
        assert res.status_code == 201, res.text
        profile = res.json()["id"]
        res = await admin.post("/api/v1/playbooks", json=PLAYBOOK_INSIDE)
        assert res.status_code == 201, res.text
    await _playbook_runs(rt)
    approval = await rt.approvals.request(
        Actor("requester", ("security_admin",)),
        "charger.disable",
        "change charger CP-INSIDE: registration",
        {"charger_id": "CP-INSIDE", "changes": {"registration": "Rejected"}},
        "matrix",
        charger_count=1,
    )
    return {
        "charger_id": "CP-INSIDE",
        "site_id": "s-inside",
        "approval_id": approval,
        "job_id": job,
        "file_id": "0b7f4a36-4c2d-4d8e-9f57-2f6f3d1e9a01",
        "operation_id": operation,
        "profile_id": profile,
        "firmware_id": firmware,
        "playbook": "inside",
    }


PLAYBOOK_INSIDE = {
    "name": "inside",
    "trigger": {"kind": "repeated_boots", "count": 3, "within_minutes": 60},
    "target": {"sites": ["s-inside"]},
    "steps": [{"escalate": {"message": "boot loop"}}],
}


async def _playbook_runs(rt: Runtime) -> None:
    """A playbook run on each charger (a fleet-wide playbook's): lists show the caller's."""
    from sqlalchemy import insert

    from evota.store.models import PlaybookRun

    now = rt.clock.now()
    async with rt.engine.begin() as conn:
        for cid in ("CP-INSIDE", "CP-OUTSIDE"):
            await conn.execute(
                insert(PlaybookRun).values(
                    id=f"run-{cid}",
                    playbook="fleet",
                    playbook_version=1,
                    charger_id=cid,
                    fault_key="boots",
                    trigger={},
                    state="resolved",
                    step_index=0,
                    outcome="resolved",
                    dry_run=False,
                    started_at=now,
                    updated_at=now,
                    log=[],
                )
            )


def _create_body(path: str, label: str, where: str) -> dict[str, Any]:
    """A body creating something at the in-scope place (ids unique per call)."""
    bodies: dict[str, dict[str, Any]] = {
        "/api/v1/sites": {"id": f"s-{label}", "name": "n", "timezone": "UTC",
                          "region": "r-inside"},
        "/api/v1/chargers": {"id": f"CP-{label}", "auth_key": "key-0123456789abcdef",
                             "site_id": "s-inside"},
        "/api/v1/operations": {"command": "clear-cache", "reason": "matrix",
                               "target": {"charger_ids": ["CP-INSIDE"]}},
        "/api/v1/config-profiles": {"name": f"p-{label}", "target": {"sites": ["s-inside"]},
                                    "settings": {"HeartbeatInterval": "300"}},
        "/api/v1/playbooks": {**PLAYBOOK_INSIDE, "name": f"p-{label}".replace("_", "-")},
        "/api/v1/security-profile/upgrades": {"profile": 2, "deadline_seconds": 1,
                                              "reason": "matrix",
                                              "target": {"charger_ids": ["CP-INSIDE"]}},
    }  # fmt: skip
    assert path in bodies, f"add a create body for {path} to the scope matrix"
    return bodies[path]


@pytest.mark.slow
async def test_every_route_keeps_a_scoped_role_inside_its_scope(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    import json

    from evota.operators.permissions import CHARGER_LEVEL

    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        ids = await _scoped_world(rt)
        app = create_app(rt)
        spec = app.openapi()
        tokens = {
            (role, where): await session_for(
                rt, f"{where}-{role}", [role], regions=[f"r-{where}side"]
            )
            for role in ROLES
            for where in ("in", "out")
        }
        checked: set[str] = set()
        for r in route_access(app):
            if r.public or r.permission is None:
                continue
            params = re.findall(r"\{(\w+)\}", r.path)
            for role in ROLES:
                if r.permission not in ROLE_PERMISSIONS[role]:
                    continue  # the other test: 403
                for where in ("in", "out"):
                    label = f"{where}-{role}-{len(checked)}"
                    path = r.path
                    for name in params:
                        if r.permission in CHARGER_LEVEL:
                            assert name in ids, f"place an object for {{{name}}} ({r})"
                        path = path.replace(f"{{{name}}}", ids.get(name, "1"))
                    body: Any = _body(spec, r.method, r.path)
                    if isinstance(body, dict) and "certificate" in body:
                        body["certificate"] = keys.ca_cert.decode()  # parsed, must be real
                    creates = r.method == "POST" and not params
                    if creates and r.permission in CHARGER_LEVEL:
                        body = _create_body(r.path, label, where)
                    kwargs = {"json": body} if body is not None else {}
                    path += LIST_QUERIES.get(r.path, "") if r.method == "GET" else ""
                    async with (
                        api_client(rt, tokens[role, where]) as api,
                        api.stream(r.method, path, **kwargs) as res,
                    ):
                        status = res.status_code
                        raw = (
                            await res.aread()
                            if "event-stream" not in res.headers.get("content-type", "")
                            else b""
                        )
                    case = (r.method, r.path, role, where, status, raw[:300])
                    rule = scope_rule(r)  # what docs/permissions.md says
                    if rule == "fleet-wide":
                        assert status == 403, case
                    elif rule == "object":
                        if where == "out":
                            expected = OUT_OF_SCOPE_EXCEPTIONS.get((r.method, r.path), 404)
                            assert status == expected, case
                        else:
                            assert status not in (401, 404), case
                            if status == 403:
                                assert json.loads(raw)["permission"] != r.permission, case
                        if r.method == "DELETE" and status == 204:  # put it back
                            ids.update(await _recreate(rt, r.path))
                    elif rule == "create":
                        if where == "out":
                            assert status in (403, 422), case
                        else:
                            assert 200 <= status < 300, case
                    else:
                        assert rule == "list", case
                        assert status == 200, case
                        assert (b"inside" in raw.lower()) == (where == "in"), case
                        assert b"outside" not in raw.lower() or where == "out", case
                    checked.add(f"{r.method} {r.path} {role} {where}")
        assert len(checked) > 100
    finally:
        await rt.stop()


async def _recreate(rt: Runtime, path: str) -> dict[str, str]:
    if path == "/api/v1/playbooks/{playbook}":
        async with api_client(rt) as admin:
            res = await admin.post("/api/v1/playbooks", json=PLAYBOOK_INSIDE)
            assert res.status_code == 201, res.text
            return {"playbook": "inside"}
    assert path == "/api/v1/config-profiles/{profile_id}", f"recreate what {path} deleted"
    async with api_client(rt) as admin:
        res = await admin.post(
            "/api/v1/config-profiles",
            json={
                "name": "inside",
                "target": {"sites": ["s-inside"]},
                "settings": {"HeartbeatInterval": "300"},
            },
        )
        assert res.status_code == 201, res.text
        return {"profile_id": res.json()["id"]}
