"""``evota certificate show|renew|inventory|expiring``: chargers' certificates over the REST
API (docs/security-profiles.md "Certificate inventory and renewal"); ``evota certificate
rotate-root start|status|switch|finish|stop``: the CSMS root rotation ("Rotating the CSMS
root")."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from evota.cli_support import ChargerArg, JsonOpt, TokenOpt, UrlOpt, api, out, print_json, table

app = typer.Typer(
    help="Charger certificates: what a charger holds and what evota's CA signed for it, a "
    "renewal or an inventory now, the fleet's soonest-expiring certificates.",
    no_args_is_help=True,
)


def _day(value: str | None) -> str:
    return value[:10] if value else "-"


@app.command("show")
def show(
    charger: ChargerArg, url: UrlOpt = None, token: TokenOpt = None, json: JsonOpt = False
) -> None:
    """A charger's certificates: signed by evota (with its answer) and its last inventory."""
    found: dict[str, Any] = api(url, token, "GET", f"/api/v1/chargers/{charger}/certificates")
    if json:
        print_json(found)
        return
    current = found["current"]
    out.print(
        f"{escape(charger)}: current certificate "
        + (f"serial {current['serial']} until {_day(current['not_after'])}" if current else "none"),
        soft_wrap=True,
    )
    rows = [
        (s["serial"], s["key"], _day(s["not_after"]), s["status"], _day(s["created_at"]))
        for s in found["signed"]
    ]
    out.print(table("Signed by evota", ("serial", "key", "expires", "answer", "signed"), rows))
    checked = found["inventory_checked_at"]
    title = f"Installed (inventory {found['inventory_outcome'] or 'never'} {_day(checked)})"
    rows = [
        (
            i["certificate_type"],
            i["serial"],
            i["known_as"] or "-",
            escape(i["subject"] or "-"),
            _day(i["not_after"]),
        )
        for i in found["installed"]
    ]
    out.print(table(title, ("type", "serial", "known as", "subject", "expires"), rows))


@app.command("renew")
def renew(
    charger: ChargerArg,
    reason: Annotated[str | None, typer.Option(help="why (kept in the audit log)")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ask the charger for a new CSR; evota checks it, signs it and sends the certificate."""
    body = {"reason": reason} if reason else {}
    done = api(url, token, "POST", f"/api/v1/chargers/{charger}/certificates/renew", json=body)
    if json:
        print_json(done)
        return
    out.print(f"{escape(charger)}: renewal trigger answered {done['status']}")


@app.command("inventory")
def inventory(
    charger: ChargerArg, url: UrlOpt = None, token: TokenOpt = None, json: JsonOpt = False
) -> None:
    """Ask the charger now which certificates it holds (GetInstalledCertificateIds)."""
    done = api(url, token, "POST", f"/api/v1/chargers/{charger}/certificates/inventory")
    if json:
        print_json(done)
        return
    out.print(f"{escape(charger)}: {done['outcome']}, {done['certificates']} certificate(s)")


@app.command("expiring")
def expiring(
    days: Annotated[int, typer.Option(min=0, max=3650, help="ending within this many days")] = 30,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Your chargers' certificates that end soonest (expired ones first)."""
    found = api(
        url, token, "GET", "/api/v1/certificates/expiring", params={"days": days, "limit": limit}
    )
    if json:
        print_json(found)
        return
    rows = [
        (
            escape(e["charger_id"]),
            e["source"],
            e["certificate_type"],
            e["serial"],
            _day(e["not_after"]),
        )
        for e in found
    ]
    out.print(
        table(
            f"Expiring within {days} days ({len(rows)})",
            ("charger", "source", "type", "serial", "expires"),
            rows,
        )
    )


# -- rotate-root: the CSMS root rotation (docs/security-profiles.md "Rotating the CSMS root") --

rotate_root = typer.Typer(
    help="Rotate the CSMS root without locking chargers out: start (install the new root, "
    "staged), status, switch (the server certificate), finish (remove the old root), stop.",
    no_args_is_help=True,
)
app.add_typer(rotate_root, name="rotate-root")
ROTATION = "/api/v1/certificates/root-rotation"
PemFile = Annotated[
    typer.FileText, typer.Option(help="PEM file", exists=True, dir_okay=False, readable=True)
]
RotationArg = Annotated[str, typer.Argument(help="the rotation id (see status)")]
ReasonOpt = Annotated[str, typer.Option(help="why (kept in the audit log)")]


def _rotation_line(found: dict[str, Any]) -> None:
    out.print(
        f"rotation {found['id']}: {found['state']}; new root {escape(found['new_root']['subject'])}"
        f"; install {found['install_state'] or '-'}, remove {found['remove_state'] or '-'}; "
        f"{found['holding_new_root']} of {found['connected']} connected chargers hold it",
        soft_wrap=True,
    )
    for key, label in (("switch_problem", "switch"), ("finish_problem", "finish")):
        if found[key]:
            out.print(f"  {label}: {escape(found[key])}", soft_wrap=True)
    for key, label in (("lacking_new_root", "lacking"), ("not_reconnected", "not reconnected")):
        if found[key]:
            out.print(f"  {label}: {escape(', '.join(found[key][:50]))}", soft_wrap=True)


@rotate_root.command("start")
def rotate_start(
    new_root: PemFile,
    old_root: PemFile,
    reason: ReasonOpt,
    charger: Annotated[
        list[str] | None, typer.Option(help="a charger to include (default: every charger)")
    ] = None,
    stage: Annotated[list[int] | None, typer.Option(help="a stage size, in order")] = None,
    min_share: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="share that must hold the new root")
    ] = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Install the new root on the chargers in stages; the first that lacks it stops it."""
    body: dict[str, Any] = {
        "new_root": new_root.read(),
        "old_root": old_root.read(),
        "reason": reason,
        "min_share": min_share,
    }
    if charger:
        body["charger_ids"] = charger
    if stage:
        body["stages"] = stage
    done = api(url, token, "POST", ROTATION, json=body)
    if json:
        print_json(done)
        return
    approval = done["detail"].get("approval_id")
    waits = f" (awaiting approval {approval})" if approval else ""
    state = "installing the new root" if done["state"] == "installing" else done["state"]
    out.print(f"rotation {done['id']}: {state}{waits}")


@rotate_root.command("status")
def rotate_status(
    rotation: Annotated[
        str | None, typer.Argument(help="the rotation id (default: newest)")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Where the rotation is and what its next move waits for."""
    found = api(url, token, "GET", f"{ROTATION}/{rotation}" if rotation else ROTATION)
    if json:
        print_json(found)
        return
    _rotation_line(found)


@rotate_root.command("switch")
def rotate_switch(
    rotation: RotationArg, url: UrlOpt = None, token: TokenOpt = None, json: JsonOpt = False
) -> None:
    """Use the server certificate under the new root (EVOTA_OCPP_TLS_CERT.next / KEY.next)."""
    done = api(url, token, "POST", f"{ROTATION}/{rotation}/switch")
    if json:
        print_json(done)
        return
    out.print(f"rotation {done['id']}: switched; {done['detail']['reconnecting']} reconnecting")


@rotate_root.command("finish")
def rotate_finish(
    rotation: RotationArg,
    reason: ReasonOpt,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove the old root from the chargers (staged, stop on failure)."""
    done = api(url, token, "POST", f"{ROTATION}/{rotation}/finish", json={"reason": reason})
    if json:
        print_json(done)
        return
    out.print(f"rotation {done['id']}: removing the old root")


@rotate_root.command("stop")
def rotate_stop(
    rotation: RotationArg, url: UrlOpt = None, token: TokenOpt = None, json: JsonOpt = False
) -> None:
    """End a rotation that has not switched."""
    done = api(url, token, "POST", f"{ROTATION}/{rotation}/stop")
    if json:
        print_json(done)
        return
    out.print(f"rotation {done['id']}: stopped")
