"""``evota certificate show|renew|inventory|expiring``: chargers' certificates over the REST
API (docs/security-profiles.md "Certificate inventory and renewal")."""

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
