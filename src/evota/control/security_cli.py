"""``evota charger-security upgrade|password``: raise a charger's security profile and give it
a new password, each without a lock-out, over the REST API (docs/security-profiles.md,
"Upgrading a charger's security profile" and "Changing a charger's password")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from evota.cli_support import ChargerArg, JsonOpt, TokenOpt, UrlOpt, api, fail, out, print_json

app = typer.Typer(
    help="A charger's security profile upgrade and password change, without lock-outs.",
    no_args_is_help=True,
)


@app.command("upgrade")
def upgrade(
    charger: ChargerArg,
    profile: Annotated[int, typer.Option(min=2, max=3, help="the profile to move it to")],
    root: Annotated[
        Path | None, typer.Option(help="PEM file of the CSMS root, installed first if missing")
    ] = None,
    deadline: Annotated[
        float, typer.Option(min=1, max=600, help="seconds to wait for the reconnection")
    ] = 120.0,
    reason: Annotated[str | None, typer.Option(help="why (kept in the audit log)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Install the root if needed, switch, wait for the reconnection, then enforce it."""
    body: dict[str, Any] = {"profile": profile, "deadline_seconds": deadline}
    if root is not None:
        try:
            body["root"] = root.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"--root: cannot read {root}: {exc}") from None
    if reason:
        body["reason"] = reason
    path = f"/api/v1/chargers/{charger}/security-profile/upgrade"
    done = api(url, token, "POST", path, json=body, timeout=deadline + 30)
    if json:
        print_json(done)
    elif done["state"] == "upgraded":
        out.print(f"{escape(charger)}: upgraded to profile {done['security_profile']}")
    else:
        out.print(
            f"{escape(charger)}: upgrade failed ({escape(done.get('why') or '?')}); "
            f"stays on profile {done['security_profile']}"
        )
    if done["state"] != "upgraded":
        raise typer.Exit(1)


@app.command("password")
def password(
    charger: ChargerArg,
    reason: Annotated[str | None, typer.Option(help="why (needed for approval)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Send the charger a new password evota makes; it switches when the charger uses it."""
    body = {"reason": reason} if reason else {}
    done = api(url, token, "POST", f"/api/v1/chargers/{charger}/password", json=body)
    if json:
        print_json(done)
    elif done.get("state") == "awaiting_approval":
        out.print(f"{escape(charger)}: waiting for approval {done['approval_id']}")
    else:
        out.print(f"{escape(charger)}: new password {done['state']}")
    if done.get("state") == "rejected":
        raise typer.Exit(1)
