"""``evota user …``, ``evota token …``, ``evota mfa …``, ``evota login|logout|whoami``.

``evota user add`` with ``--data-dir`` or ``--database-url`` writes straight to the database
(bootstrapping the first security admin before, or while, a server runs); every other
command talks to the API with ``--url``/``--token``. Passwords and codes are prompted for
(hidden, on stderr), never taken from the command line, where shell history would keep
them; piped into stdin they work for scripts too.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.table import Table

from evota.cli_support import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    api,
    err,
    fail,
    out,
    page_title,
    print_json,
    query,
)

user_app = typer.Typer(
    help="Operators: add, list, show, set-roles, disable, enable, reset-mfa, password.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Your API tokens: create, list, revoke.", no_args_is_help=True)
mfa_app = typer.Typer(help="Your second factor: enroll, confirm.", no_args_is_help=True)

RoleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        help="viewer, operator, firmware_manager, security_admin, auditor (repeatable)",
    ),
]
SiteOpt = Annotated[list[str] | None, typer.Option("--site", help="limit to a site (repeatable)")]
RegionOpt = Annotated[
    list[str] | None, typer.Option("--region", help="limit to a region (repeatable)")
]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", help="limit to a charger tag (repeatable)")
]


def ask(label: str, *, confirm: bool = False) -> str:
    """Hidden input, prompted on stderr so stdout stays clean for ``$(evota login …)``."""
    value: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def _path(username: str) -> str:
    return f"/api/v1/users/{quote(username, safe='')}"


def _scopes(site: list[str] | None, region: list[str] | None, tag: list[str] | None) -> Any:
    return {"sites": site or [], "regions": region or [], "tags": tag or []}


def _scope_text(scopes: dict[str, list[str]]) -> str:
    parts = [f"{k}={','.join(v)}" for k, v in scopes.items() if v]
    return "; ".join(parts) or "whole fleet"


def _print_user(u: dict[str, Any]) -> None:
    table = Table(show_header=False, title=f"User {u['username']}")
    table.add_row("roles", ", ".join(u["roles"]))
    table.add_row("scope", _scope_text(u["scopes"]))
    for key in (
        "disabled",
        "mfa_enabled",
        "mfa_pending",
        "recovery_codes_left",
        "failed_logins",
        "locked_until",
        "last_login_at",
        "created_at",
    ):
        table.add_row(key, str(u[key]))
    out.print(table)


# -- user ----------------------------------------------------------------------------------


async def _add_offline(
    settings: Any, username: str, password: str, roles: list[str], scope: Any
) -> dict[str, Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from evota.audit.log import Actor, AuditLog
    from evota.clock import SystemClock
    from evota.files import private_dir, private_sqlite
    from evota.operators import users
    from evota.store import db

    if not settings.database_url:
        private_dir(settings.data_dir)
    private_sqlite(settings.resolved_database_url())
    engine = db.create_engine(settings.resolved_database_url())
    clock = SystemClock()
    try:
        await db.migrate(engine)
        view = await users.create_user(engine, clock.now(), username, password, roles, scope)
        detail = {
            "roles": view.roles,
            "scopes": _scopes(sorted(scope.sites), sorted(scope.regions), sorted(scope.tags)),
            "via": "database",
        }
        actor = Actor(f"cli:{os.environ.get('USER', 'local')}"[:100], ("local",))
        audit, _ = AuditLog.for_data_dir(engine, clock, settings.data_dir)
        await audit.record(actor, "user.create", "ok", target=view.username, detail=detail)
    except users.UserError as exc:
        raise fail(f"{exc.title}: {exc.detail}") from None
    except (SQLAlchemyError, OSError) as exc:
        raise fail(f"cannot write to the database: {exc}") from None
    finally:
        await engine.dispose()
    return {"id": view.id, "username": view.username, **detail}


@user_app.command("add")
def user_add(
    username: str,
    role: RoleOpt = None,
    site: SiteOpt = None,
    region: RegionOpt = None,
    tag: TagOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="write to this evota data directory's database (offline)"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="write to this database (offline)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user.

    With --data-dir or --database-url, straight into the database (the first security
    admin); otherwise through the API (needs user.admin).
    """
    roles = role or []
    if not roles:
        raise fail("--role: give at least one role")
    password = ask("Password", confirm=True)
    if data_dir is not None or database_url is not None:
        from pydantic import ValidationError

        from evota.config import Settings
        from evota.operators.permissions import Scope

        try:
            overrides: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url}
            settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise fail(f"invalid setting: {exc.errors()[0]['msg']}") from None
        scope = Scope(frozenset(site or ()), frozenset(region or ()), frozenset(tag or ()))
        created = asyncio.run(_add_offline(settings, username, password, roles, scope))
        if as_json:
            return print_json(created)
        out.print(f"added user {created['username']} ({', '.join(created['roles'])})")
        return None
    body = {
        "username": username,
        "password": password,
        "roles": roles,
        "scopes": _scopes(site, region, tag),
    }
    u = api(url, token, "POST", "/api/v1/users", json=body)
    if as_json:
        return print_json(u)
    if u.get("state") == "awaiting_approval":  # roles with approval power: user.grant
        user = u["user"]
        out.print(
            f"added user {user['username']} ({', '.join(user['roles']) or 'no roles yet'}); "
            f"{', '.join(roles)} wait for a second user admin (approval {u['approval_id']})",
            highlight=False,
        )
        return None
    out.print(f"added user {u['username']} ({', '.join(u['roles'])})")
    return None


@user_app.command("list")
def user_list(
    role: Annotated[str | None, typer.Option(help="users holding this role")] = None,
    disabled: Annotated[
        bool | None, typer.Option("--disabled/--enabled", help="only (not) disabled users")
    ] = None,
    search: Annotated[str | None, typer.Option("--search", help="username contains")] = None,
    limit: LimitOpt = 1000,
    offset: OffsetOpt = 0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List users with their roles, scope and MFA state."""
    params = query(role=role, disabled=disabled, q=search, limit=limit, offset=offset)
    page = api(url, token, "GET", "/api/v1/users", params=params)
    if as_json:
        return print_json(page)
    table = Table(title=page_title("Users", page))
    for col in ("username", "roles", "scope", "mfa", "disabled", "locked until", "last login"):
        table.add_column(col)
    for u in page["items"]:
        table.add_row(
            u["username"],
            ", ".join(u["roles"]),
            _scope_text(u["scopes"]),
            "on" if u["mfa_enabled"] else ("pending" if u["mfa_pending"] else "off"),
            "yes" if u["disabled"] else "no",
            str(u["locked_until"] or ""),
            str(u["last_login_at"] or ""),
        )
    out.print(table)
    return None


@user_app.command("show")
def user_show(
    username: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One user."""
    u = api(url, token, "GET", _path(username))
    if as_json:
        return print_json(u)
    _print_user(u)
    return None


@user_app.command("set-roles")
def user_set_roles(
    username: str,
    role: RoleOpt = None,
    site: SiteOpt = None,
    region: RegionOpt = None,
    tag: TagOpt = None,
    fleet_wide: Annotated[
        bool, typer.Option("--fleet-wide", help="remove every site/region/tag limit")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a user's roles and/or scope.

    With --site/--region/--tag (or --fleet-wide) the scope is replaced too; it applies to
    every role.
    """
    body: dict[str, Any] = {}
    if role:
        body["roles"] = role
    if site or region or tag or fleet_wide:
        if fleet_wide and (site or region or tag):
            raise fail("--fleet-wide: not together with --site, --region or --tag")
        body["scopes"] = _scopes(site, region, tag)
    if not body:
        raise fail("give --role and/or a scope (--site, --region, --tag, --fleet-wide)")
    u = api(url, token, "PATCH", _path(username), json=body)
    if as_json:
        return print_json(u)
    if u.get("state") == "awaiting_approval":  # gives approval power: user.grant
        out.print(
            f"{username}: waits for a second user admin (approval {u['approval_id']})",
            highlight=False,
        )
        return None
    out.print(f"{u['username']}: {', '.join(u['roles'])} ({_scope_text(u['scopes'])})")
    return None


@user_app.command("disable")
def user_disable(
    username: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Disable a user: logins refused, their sessions and API tokens revoked."""
    u = api(url, token, "POST", f"{_path(username)}/disable")
    if as_json:
        return print_json(u)
    out.print(f"disabled {u['username']}; their sessions and API tokens are revoked")
    return None


@user_app.command("enable")
def user_enable(
    username: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Enable a disabled user again (revoked tokens stay revoked)."""
    u = api(url, token, "PATCH", _path(username), json={"disabled": False})
    if as_json:
        return print_json(u)
    out.print(f"enabled {u['username']}")
    return None


@user_app.command("reset-mfa")
def user_reset_mfa(
    username: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Forget a user's second factor (lost device): they enrol again at the next login."""
    u = api(url, token, "POST", f"{_path(username)}/reset-mfa")
    if as_json:
        return print_json(u)
    out.print(f"{u['username']}: MFA reset; they must enrol again")
    return None


@user_app.command("password")
def user_password(
    username: str,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a password: your own (asks for the current one) or, as a user admin, anyone's."""
    me = api(url, token, "GET", "/api/v1/auth/me")
    body: dict[str, Any] = {}
    if me["name"] == username.strip().lower():
        body["current_password"] = ask("Current password")
    body["password"] = ask("New password", confirm=True)
    u = api(url, token, "POST", f"{_path(username)}/password", json=body)
    if as_json:
        return print_json(u)
    out.print(f"{u['username']}: password changed; other sessions ended")
    return None


# -- token ---------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="some of your roles (default: all)")
    ] = None,
    site: Annotated[
        list[str] | None, typer.Option("--site", help="only chargers at these sites")
    ] = None,
    expires_in_days: Annotated[int, typer.Option(min=1, max=730)] = 90,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token acting as you.

    Needs a login token (`evota login`). The token is printed once on stdout; only its
    hash is stored.
    """
    body = {"name": name, "roles": role, "sites": site or [], "expires_in_days": expires_in_days}
    t = api(url, token, "POST", "/api/v1/auth/tokens", json=body)
    if as_json:
        return print_json(t)
    err.print(
        f"token {t['id']} {t['name']!r} ({', '.join(t['roles'])}) expires {t['expires_at']}; "
        "shown only this once:"
    )
    typer.echo(t["token"])
    return None


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option("--user", help="another user's (admin)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your API tokens (never their secrets)."""
    params = {"username": user} if user else {}
    tokens = api(url, token, "GET", "/api/v1/auth/tokens", params=params)
    if as_json:
        return print_json(tokens)
    table = Table(title=f"API tokens ({len(tokens)})")
    for col in ("id", "name", "roles", "sites", "expires", "last used", "state"):
        table.add_column(col)
    for t in tokens:
        state = "active" if t["active"] else ("revoked" if t["revoked_at"] else "expired")
        table.add_row(
            str(t["id"]),
            t["name"],
            ", ".join(t["roles"]),
            ", ".join(t["sites"]) or "all",
            str(t["expires_at"] or ""),
            str(t["last_used_at"] or ""),
            state,
        )
    out.print(table)
    return None


@token_app.command("revoke")
def token_revoke(
    token_id: int, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke an API token (yours; a user admin may revoke anyone's)."""
    t = api(url, token, "DELETE", f"/api/v1/auth/tokens/{token_id}")
    if as_json:
        return print_json(t)
    out.print(f"revoked token {t['id']} {t['name']!r}")
    return None


# -- who am I, log out ---------------------------------------------------------------------


def whoami_command(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Who the token belongs to: roles with their scopes, and the second factor's state."""
    me = api(url, token, "GET", "/api/v1/auth/me")
    if as_json:
        return print_json(me)
    mfa = "given" if me["mfa"] else ("required, not given" if me["mfa_required"] else "not needed")
    out.print(f"{me['name']} ({me['kind']}): MFA {mfa}", highlight=False)
    for g in me["grants"]:
        out.print(f"  {g['role']}: {_scope_text(g['scope'])}", highlight=False)
    if me["site_limit"]:
        out.print(f"  token limited to sites {', '.join(me['site_limit'])}", highlight=False)
    return None


def logout_command(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """End this login session (the token from `evota login`)."""
    api(url, token, "POST", "/api/v1/auth/logout")
    if as_json:
        return print_json({"logged_out": True})
    err.print("logged out; unset EVOTA_TOKEN")
    return None


# -- mfa -----------------------------------------------------------------------------------


@mfa_app.command("enroll")
def mfa_enroll(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Start TOTP enrolment for yourself (with your login token).

    Add the secret to an authenticator app, then run `evota mfa confirm CODE`.
    """
    e = api(url, token, "POST", "/api/v1/auth/mfa/enroll")
    if as_json:
        return print_json(e)
    out.print(f"secret: {e['secret']}\nURI:    {e['otpauth_uri']}", soft_wrap=True)
    out.print("Add it to your authenticator app, then run: evota mfa confirm CODE")
    return None


@mfa_app.command("confirm")
def mfa_confirm(
    code: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Finish enrolment with a code from the app; prints your recovery codes, once."""
    r = api(url, token, "POST", "/api/v1/auth/mfa/confirm", json={"otp": code})
    if as_json:
        return print_json(r)
    err.print("MFA is on. Recovery codes (each works once; shown only now, keep them safe):")
    for c in r["recovery_codes"]:
        typer.echo(c)
    return None


# -- login ---------------------------------------------------------------------------------

MFA_REQUIRED = "https://evota.dev/problems/mfa-required"


def _post_login(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        r = httpx.post(f"{base}/api/v1/auth/login", json=body, timeout=60)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach evota at {base}: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = {"title": r.text[:200]}
    return r.status_code, data if isinstance(data, dict) else {}


def login_command(
    username: str,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log in and print a session token for EVOTA_TOKEN.

    Asks for the one-time code when your account has MFA. The session ends after idle
    time or at its absolute limit.
    """
    base = (url or os.environ.get("EVOTA_URL") or "http://127.0.0.1:8000").rstrip("/")
    body: dict[str, Any] = {"username": username, "password": ask("Password")}
    status, data = _post_login(base, body)
    if status == 403 and data.get("type") == MFA_REQUIRED:
        body["otp"] = ask("One-time code (or a recovery code)")
        status, data = _post_login(base, body)
    if status >= 400:
        parts = [str(data.get("title", "error"))]
        if data.get("detail"):
            parts.append(str(data["detail"]))
        raise fail(f"HTTP {status}: " + ": ".join(parts))
    if as_json:
        return print_json(data)
    err.print(
        f"logged in as {data['username']} ({', '.join(data['roles'])}); "
        f"the session ends at {data['expires_at']} or when idle. Use: export EVOTA_TOKEN=…"
    )
    if data["mfa_required"] and not data["mfa"]:
        err.print(
            "[yellow]MFA is not enrolled: changes are refused until you run "
            "`evota mfa enroll` and `evota mfa confirm CODE`.[/]"
        )
    typer.echo(data["token"])
    return None
