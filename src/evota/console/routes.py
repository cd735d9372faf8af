"""The console's pages: server-rendered HTML over the REST API, live through htmx.

Every page needs a login session (the ``evota_session`` cookie the login API sets) and
redirects to ``/login`` without one. Data comes from the API in process (see
:mod:`evota.console.client`), plus a few scoped aggregates (:mod:`evota.console.queries`).
Actions are sent by the browser straight to the API with the CSRF token from the page's
``<meta>`` tag (``static/console.js``), so permissions, approvals and audit entries are the
API's. A request from htmx naming a target (``HX-Target: live``) gets only that block back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from evota import __version__
from evota.api.deps import POLL_HEADER, SESSION_COOKIE, Principal, authenticate, principal
from evota.api.problems import Problem, problem_response
from evota.client import ApiError
from evota.console import kpi_charts, overview, page_charts, playbook_view, queries
from evota.console.client import Api
from evota.console.fleet_firmware_view import fleet_firmware_context
from evota.console.forms import command_forms
from evota.console.preview import preview
from evota.console.resolution_view import resolution_context
from evota.control.operation import ACTIVE, OperationState
from evota.firmware import lifecycle
from evota.firmware.lifecycle import FirmwareState
from evota.fleet import vendor_learning, vendors
from evota.operators import permissions as perms
from evota.operators import sessions
from evota.operators.permissions import ROLES
from evota.rollout.campaign import TERMINAL as CAMPAIGN_TERMINAL
from evota.rollout.policy import policy_from_dict, policy_to_dict
from evota.runtime import Runtime

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 50
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


# -- template helpers --------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def when(value: Any) -> Markup:
    """A time as ``<time>``, shown in UTC to the second."""
    at = _parse_time(value)
    if at is None:
        return Markup("—")
    utc = at.astimezone(UTC)
    return Markup('<time datetime="{iso}">{shown}</time>').format(
        iso=utc.isoformat(), shown=utc.strftime("%Y-%m-%d %H:%M:%S")
    )


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "—"


_env.filters["when"] = when
_env.filters["q"] = lambda s: quote(str(s), safe="")
_env.globals["percent"] = percent
_env.globals["standing"] = overview.standing
_env.globals["when"] = when
_env.globals["version"] = __version__
# The macros are globals too, so a block rendered alone (an htmx refresh) can call them.
_macros = _env.get_template("macros.html").module
_env.globals.update(
    {name: getattr(_macros, name) for name in dir(_macros) if not name.startswith("_")}
)


# -- the page context ------------------------------------------------------------------------


@dataclass
class Page:
    """One page request: who is asking, and an API client acting as them."""

    request: Request
    rt: Runtime
    who: Principal
    api: Api
    csrf: str

    def can(self, permission: str) -> bool:
        """Whether some grant carries ``permission`` (and MFA does not block it yet)."""
        if self.who.mfa_required and not self.who.mfa and permission not in perms.READ_ONLY:
            return False
        if permission in perms.CHARGER_LEVEL:
            return perms.holds_anywhere(self.who.grants, permission)
        return self.who.can(permission)


@dataclass(frozen=True, slots=True)
class NavItem:
    href: str
    label: str
    permission: str
    badge_key: str = ""


NAV = (
    NavItem("/console/", "Overview", "fleet.read"),
    NavItem("/console/chargers", "Chargers", "fleet.read"),
    NavItem("/console/firmware", "Firmware", "firmware.read"),
    NavItem("/console/vendor-profiles", "Vendor profiles", "firmware.read"),
    NavItem("/console/campaigns", "Campaigns", "campaign.read", "campaigns"),
    NavItem("/console/operations", "Operations", "operation.read"),
    NavItem("/console/approvals", "Approvals", "fleet.read", "approvals"),
    NavItem("/console/alerts", "Alerts", "alert.read", "alerts"),
    NavItem("/console/resolution", "Remote resolution", "fleet.read"),
    NavItem("/console/playbooks", "Playbooks", "playbook.read"),
    NavItem("/console/audit", "Audit log", "audit.read"),
    NavItem("/console/users", "Users", "user.admin"),
)
_BADGE_LABELS = {"campaigns": "active", "approvals": "pending", "alerts": "open"}


def _safe_next(value: str | None) -> str:
    """Only a console path: never an open redirect."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console/"


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login?" + urlencode({"next": target})
    if request.headers.get("HX-Request"):
        return Response(status_code=200, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def _is_poll(request: Request) -> bool:
    """A live region refreshing itself (htmx ``every Ns`` on ``#live``), not the operator."""
    return request.headers.get("HX-Trigger") == "live" or request.headers.get(POLL_HEADER) == "1"


async def _who(request: Request) -> Principal | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return await authenticate(
            request.app.state.runtime, cookie, cookie=True, touch=not _is_poll(request)
        )
    except Problem:
        return None


Loader = Callable[[Page], Awaitable[dict[str, Any]]]


async def render(
    request: Request, template: str, load: Loader, *, title: str, mfa_page: bool = False
) -> Response:
    """Authenticate, load the page's data through the API, render (or one block of it)."""
    rt: Runtime = request.app.state.runtime
    who = await _who(request)
    if who is None:
        return _to_login(request)
    if who.mfa_required and not who.mfa and not mfa_page:
        return RedirectResponse("/console/mfa", status_code=303)
    cookie = request.cookies[SESSION_COOKIE]
    csrf = await sessions.session_csrf(rt.engine, who.session_hash) if who.session_hash else ""
    page = Page(request, rt, who, Api(request.app, cookie, poll=_is_poll(request)), csrf or "")
    try:
        try:
            data = await load(page)
            status = int(data.pop("status", 200))
        except ApiError as exc:
            template, status = "error.html", exc.status or 500
            data = {"problem": exc}
            title = "Not found" if exc.status == 404 else exc.title
        return await _html(page, template, {"title": title, **data}, status)
    finally:
        await page.api.aclose()


async def _html(page: Page, template: str, data: dict[str, Any], status: int) -> HTMLResponse:
    request = page.request
    badges = await queries.badges(page.rt, page.who, page.rt.clock.now())
    counts = {"alerts": badges.alerts, "approvals": badges.approvals, "campaigns": badges.campaigns}
    path = request.url.path
    nav = [
        {
            "href": item.href,
            "label": item.label,
            "current": path == item.href
            if item.href == "/console/"
            else path.startswith(item.href),
            "badge": counts.get(item.badge_key) or 0,
            "badge_label": _BADGE_LABELS.get(item.badge_key, ""),
        }
        for item in NAV
        if page.can(item.permission)
    ]
    context = {
        "request": request,
        "who": page.who,
        "can": page.can,
        "csrf": page.csrf,
        "nav": nav,
        "path": path,
        "url": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        "mfa_banner": page.who.mfa_required and not page.who.mfa,
        **data,
    }
    tpl = _env.get_template(template)
    target = request.headers.get("HX-Target", "")
    if request.headers.get("HX-Request") and target in tpl.blocks:
        body = "".join(tpl.blocks[target](tpl.new_context(context)))
    else:
        body = tpl.render(context)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _pager(request: Request, total: int, offset: int, limit: int = PAGE_SIZE) -> dict[str, Any]:
    def link(at: int) -> str:
        params = dict(request.query_params)
        params["offset"] = str(at)
        return request.url.path + "?" + urlencode(params)

    return {
        "total": total,
        "first": offset + 1 if total else 0,
        "last": min(offset + limit, total),
        "prev": link(max(0, offset - limit)) if offset > 0 else None,
        "next": link(offset + limit) if offset + limit < total else None,
    }


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


def _filters(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    return {n: v.strip()[:200] for n in names if (v := request.query_params.get(n, "")).strip()}


def _id(value: str) -> str:
    return quote(value, safe="")


# -- login -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    if await _who(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    body = _env.get_template("login.html").render(
        title="Log in", next=_safe_next(request.query_params.get("next"))
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/console", response_class=HTMLResponse)
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=307)


# -- overview --------------------------------------------------------------------------------


@router.get("/console/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        counts = await queries.fleet_counts(p.rt, p.who)
        releases = await queries.releases(p.rt) if p.can("firmware.read") else []
        models = overview.summarize(await queries.version_counts(p.rt, p.who), releases)
        charts = [(m, overview.bars(m.versions, 260.0)) for m in models]
        exports = p.can("fleet.read")  # the fleet firmware exports' permission
        alerts = await p.api.maybe("/api/v1/alerts", open="true", limit=5)
        campaigns = await p.api.maybe("/api/v1/campaigns", limit=5)
        return {
            "counts": counts,
            "models": models,
            "charts": charts,
            "behind": sum(m.behind for m in models),
            "fleet_charts": page_charts.overview_charts(
                models,
                versions_csv="/api/v1/fleet/firmware?format=csv" if exports else None,
                standing_csv="/api/v1/fleet/firmware/behind?format=csv" if exports else None,
            ),
            "day_charts": await _day_charts(p),
            "overview_days": OVERVIEW_DAYS,
            "security_events": await queries.security_events(p.rt, p.who),
            "rotation": await _root_rotation(p),
            "alerts": alerts,
            "campaigns": campaigns,
        }

    return await render(request, "overview.html", load, title="Fleet overview")


async def _root_rotation(p: Page) -> dict[str, Any] | None:
    """The newest CSMS root rotation unless it is over (docs/security-profiles.md); None
    without ``firmware.trust`` (403) or when there is none (404)."""
    try:
        found = await p.api.maybe("/api/v1/certificates/root-rotation")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    if found is None or found["state"] in {"finished", "stopped"}:
        return None
    return dict(found)


#: How many days of the fleet's daily rollup the overview draws.
OVERVIEW_DAYS = 30


async def _day_charts(p: Page) -> dict[str, Any]:
    """The overview's daily series, read on a full page load only: its 5-second polls
    redraw the live counts, and a day's figures change once per rollup."""
    if not p.can("fleet.read") or p.request.headers.get("HX-Request"):
        return {}
    since = (p.rt.clock.now() - timedelta(days=OVERVIEW_DAYS - 1)).date()
    return page_charts.fleet_day_charts(await queries.fleet_days(p.rt, p.who, since))


@router.get("/console/fleet/firmware", response_class=HTMLResponse)
async def fleet_firmware_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        return await fleet_firmware_context(p.api, request.query_params)

    return await render(request, "fleet_firmware.html", load, title="Firmware over time")


# -- chargers --------------------------------------------------------------------------------

_CHARGER_FILTERS = ("site", "vendor", "model", "firmware_version", "connected", "registration")


@router.get("/console/chargers", response_class=HTMLResponse)
async def chargers_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, _CHARGER_FILTERS)
        offset = _offset(request)
        error = None
        try:
            page = await p.api.get("/api/v1/chargers", **filters, limit=PAGE_SIZE, offset=offset)
        except ApiError as exc:
            if exc.status != 422:
                raise
            error, page = exc, {"items": [], "total": 0}
        sites = await p.api.get("/api/v1/sites", limit=1000)
        known = await queries.version_counts(p.rt, p.who)
        return {
            "filters": filters,
            "error": error,
            "chargers": page["items"],
            "pages": _pager(request, page["total"], offset),
            "sites": sites["items"],
            "vendors": sorted({c.vendor for c in known if c.vendor}),
            "models": sorted({c.model for c in known if c.model}),
            "versions": sorted({c.version for c in known if c.version}),
            "status": 422 if error else 200,
        }

    return await render(request, "chargers.html", load, title="Chargers")


@router.get("/console/chargers/{charger_id}", response_class=HTMLResponse)
async def charger_page(request: Request, charger_id: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        charger = await p.api.get(f"/api/v1/chargers/{_id(charger_id)}")
        jobs = await p.api.maybe("/api/v1/jobs", charger_id=charger_id, limit=20)
        files = await p.api.maybe(f"/api/v1/chargers/{_id(charger_id)}/files", limit=20)
        audit = await p.api.maybe("/api/v1/audit", charger=charger_id, limit=10)
        images = None
        if p.can("job.write") and charger.get("vendor"):
            images = await p.api.maybe(
                "/api/v1/firmware", vendor=charger["vendor"], model=charger.get("model"), limit=50
            )
        return {
            "charger": charger,
            "jobs": jobs["items"] if jobs else [],
            "files": files["items"] if files else [],
            "audit": audit["items"] if audit else None,
            "images": [i for i in images["items"] if i["state"] != FirmwareState.REVOKED]
            if images
            else [],
            "settings": await queries.settings_of(p.rt, charger["id"]),
            "drift": await queries.latest_drift(p.rt, charger["id"]),
            "commands": command_forms() if p.can("command.send") else (),
            "vendor_profile": await p.api.maybe(
                f"/api/v1/chargers/{_id(charger_id)}/vendor-profile"
            ),
            "certificates": await p.api.maybe(f"/api/v1/chargers/{_id(charger_id)}/certificates"),
        }

    return await render(request, "charger.html", load, title=f"Charger {charger_id}")


# -- firmware --------------------------------------------------------------------------------


@router.get("/console/firmware", response_class=HTMLResponse)
async def firmware_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, ("vendor", "model", "state"))
        offset = _offset(request)
        page = await p.api.get("/api/v1/firmware", **filters, limit=PAGE_SIZE, offset=offset)
        running = await queries.running_counts(p.rt, p.who)
        roots = await p.api.get("/api/v1/firmware/trusted-roots")
        vendors = await p.api.get("/api/v1/firmware/vendors")
        feeds = await p.api.get("/api/v1/firmware/feeds")  # vendors' release feeds
        items = [
            {**i, "running": running.get((i["vendor"].lower(), i["version"]), 0)}
            for i in page["items"]
        ]
        return {
            "filters": filters,
            "images": items,
            "pages": _pager(request, page["total"], offset),
            "roots": roots["items"],
            "vendor_policies": vendors["items"],
            "feeds": feeds["items"],
            "states": lifecycle.STATES,
            "upload_states": lifecycle.UPLOAD_STATES,
        }

    return await render(request, "firmware.html", load, title="Firmware library")


@router.get("/console/firmware/{firmware_id}", response_class=HTMLResponse)
async def firmware_detail_page(request: Request, firmware_id: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        image = await p.api.get(f"/api/v1/firmware/{_id(firmware_id)}")
        running = await p.api.get(f"/api/v1/firmware/{_id(firmware_id)}/chargers", limit=200)
        jobs = await p.api.maybe("/api/v1/jobs", firmware_id=image["id"], limit=20)
        campaigns = await p.api.maybe("/api/v1/campaigns", limit=200)
        scorecard = await p.api.maybe(f"/api/v1/firmware/{_id(firmware_id)}/scorecard")
        # The scorecard carries the 30-day KPIs (computed once, not twice per page).
        kpis = (scorecard or {}).get("kpis") or await p.api.maybe(
            f"/api/v1/firmware/{_id(firmware_id)}/kpis"
        )
        return {
            "image": image,
            "scorecard": scorecard,
            "kpis": kpis,
            "kpi_chart": kpi_charts.difference_chart(
                "firmware-kpis", "Version minus predecessor", (kpis or {}).get("comparison")
            ),
            "running": running,
            "jobs": jobs["items"] if jobs else [],
            "campaigns": [
                c for c in (campaigns or {}).get("items", []) if c["firmware_id"] == image["id"]
            ],
            "moves": sorted(
                lifecycle.LIFECYCLE.get(image["state"], ()), key=lifecycle.STATES.index
            ),
        }

    return await render(request, "firmware_detail.html", load, title="Firmware image")


# -- campaigns -------------------------------------------------------------------------------


async def _firmware_names(p: Page) -> dict[str, dict[str, Any]]:
    images = await p.api.maybe("/api/v1/firmware", limit=1000)
    return {i["id"]: i for i in (images or {}).get("items", [])}


@router.get("/console/campaigns", response_class=HTMLResponse)
async def campaigns_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, ("state",))
        offset = _offset(request)
        page = await p.api.get("/api/v1/campaigns", **filters, limit=PAGE_SIZE, offset=offset)
        return {
            "filters": filters,
            "campaigns": page["items"],
            "pages": _pager(request, page["total"], offset),
            "images": await _firmware_names(p),
        }

    return await render(request, "campaigns.html", load, title="Campaigns")


_WIZARD_FIELDS = (
    "success_threshold",
    "soak_seconds",
    "health_window_seconds",
    "max_per_site_fraction",
    "max_concurrent",
    "pause_at_gate",
    "on_inconclusive",
    "group_by",
    "on_group_failure",
)


def wizard_defaults(server: dict[str, Any]) -> dict[str, Any]:
    """The wizard starts from the server's policy defaults (``EVOTA_CAMPAIGN_DEFAULTS`` over
    the product's), not from values of its own; the defaults it has no field for are shown."""
    policy = policy_to_dict(policy_from_dict(server))
    other = {k: v for k, v in server.items() if k not in _WIZARD_FIELDS}
    return {
        "defaults": {k: "" if policy[k] is None else policy[k] for k in _WIZARD_FIELDS},
        "other_defaults": json.dumps(other) if other else "",
    }


@router.get("/console/campaigns/new", response_class=HTMLResponse)
async def campaign_wizard(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        images = [
            i for i in (await _firmware_names(p)).values() if i["state"] != FirmwareState.REVOKED
        ]
        sites = await p.api.get("/api/v1/sites", limit=1000)
        known = await queries.version_counts(p.rt, p.who)
        chosen = request.query_params.get("firmware", "")
        return {
            "images": images,
            "chosen": chosen,
            **wizard_defaults(p.rt.settings.campaign_defaults),
            "sites": sites["items"],
            "vendors": sorted({c.vendor for c in known if c.vendor}),
            "models": sorted({c.model for c in known if c.model}),
            "versions": sorted({c.version for c in known if c.version}),
        }

    return await render(request, "campaign_new.html", load, title="New campaign")


@router.post("/console/api/campaign-preview", response_class=HTMLResponse)
async def campaign_preview(request: Request) -> Response:
    """The wizard's preview (HTML), or the problem the create endpoint would answer."""
    try:
        who = await principal(request, None)  # the cookie, and the CSRF header (a POST)
        who.check("campaign.read")
        try:
            body = await request.json()
        except ValueError:
            raise Problem(422, "Invalid campaign", "send a JSON object", "(body)") from None
        planned = await preview(request.app.state.runtime, who, body)
    except Problem as exc:
        return problem_response(exc.status, exc.title, exc.detail, exc.field, exc.type)
    body_html = _env.get_template("campaign_preview.html").render(preview=planned, when=when)
    return HTMLResponse(body_html, headers={"Cache-Control": "no-store"})


@router.get("/console/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(request: Request, campaign_id: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        campaign = await p.api.get(f"/api/v1/campaigns/{_id(campaign_id)}")
        pending = await p.api.get("/api/v1/approvals", state="pending", limit=200)
        approvals = [
            a
            for a in pending["items"]
            if (a.get("payload") or {}).get("campaign_id") == campaign["id"]
        ]
        images = await _firmware_names(p)
        kpis = await p.api.maybe(f"/api/v1/campaigns/{_id(campaign_id)}/kpis")
        return {
            "campaign": campaign,
            "kpis": kpis,
            "kpi_chart": kpi_charts.difference_chart(
                "campaign-kpis", "After minus before", (kpis or {}).get("before_after")
            ),
            "approvals": approvals,
            "image": images.get(campaign["firmware_id"]),
            "final": campaign["state"] in CAMPAIGN_TERMINAL and not campaign["rollback"],
            "campaign_charts": page_charts.campaign_charts(campaign),
        }

    return await render(request, "campaign.html", load, title="Campaign")


# -- operations ------------------------------------------------------------------------------


@router.get("/console/operations", response_class=HTMLResponse)
async def operations_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, ("state", "command"))
        offset = _offset(request)
        page = await p.api.get("/api/v1/operations", **filters, limit=PAGE_SIZE, offset=offset)
        sites = await p.api.get("/api/v1/sites", limit=1000)
        known = await queries.version_counts(p.rt, p.who)
        return {
            "filters": filters,
            "states": [s.value for s in OperationState],
            "operations": page["items"],
            "pages": _pager(request, page["total"], offset),
            "commands": command_forms(),
            "sites": sites["items"],
            "models": sorted({c.model for c in known if c.model}),
            "preset": {
                "charger_ids": request.query_params.get("chargers", ""),
                "command": request.query_params.get("command", "reset"),
            },
        }

    return await render(request, "operations.html", load, title="Operations")


@router.get("/console/operations/{operation_id}", response_class=HTMLResponse)
async def operation_page(request: Request, operation_id: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        operation = await p.api.get(f"/api/v1/operations/{_id(operation_id)}", limit=500)
        approval = None
        if operation.get("approval_id"):
            approval = await p.api.maybe(f"/api/v1/approvals/{_id(operation['approval_id'])}")
        active = operation["state"] in ACTIVE  # refreshing, cancellable
        return {"op": operation, "approval": approval, "active": active}

    return await render(request, "operation.html", load, title="Operation")


# -- approvals, alerts, audit, users, MFA ----------------------------------------------------


@router.get("/console/approvals", response_class=HTMLResponse)
async def approvals_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        pending = await p.api.get("/api/v1/approvals", state="pending", limit=200)
        recent = await p.api.get("/api/v1/approvals", limit=30)
        return {
            "pending": pending["items"],
            "recent": [a for a in recent["items"] if a["state"] != "pending"],
        }

    return await render(request, "approvals.html", load, title="Approvals")


@router.get("/console/alerts", response_class=HTMLResponse)
async def alerts_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, ("rule", "open"))
        filters.setdefault("open", "true")
        if filters["open"] == "all":
            del filters["open"]
        offset = _offset(request)
        page = await p.api.get("/api/v1/alerts", **filters, limit=PAGE_SIZE, offset=offset)
        summary = await p.api.get("/api/v1/alerts/summary")
        return {
            "filters": {**filters, "open": filters.get("open", "all")},
            "alerts": page["items"],
            "pages": _pager(request, page["total"], offset),
            "summary": summary,
        }

    return await render(request, "alerts.html", load, title="Alerts")


_AUDIT_FILTERS = ("charger", "actor", "action", "outcome", "since", "until")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@router.get("/console/audit", response_class=HTMLResponse)
async def audit_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        filters = _filters(request, _AUDIT_FILTERS)
        query = {
            k: (f"{v}T00:00:00Z" if k in ("since", "until") and _DATE.match(v) else v)
            for k, v in filters.items()
        }
        offset = _offset(request)
        error = None
        try:
            page = await p.api.get("/api/v1/audit", **query, limit=PAGE_SIZE, offset=offset)
        except ApiError as exc:
            if exc.status != 422:
                raise
            error, page = exc, {"items": [], "total": 0}
        return {
            "filters": filters,
            "error": error,
            "entries": page["items"],
            "pages": _pager(request, page["total"], offset),
            "export": urlencode(query),
            "status": 422 if error else 200,
        }

    return await render(request, "audit.html", load, title="Audit log")


@router.get("/console/users", response_class=HTMLResponse)
async def users_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        users = await p.api.get("/api/v1/users", limit=1000)
        return {"users": users["items"], "roles": ROLES}

    return await render(request, "users.html", load, title="Users and roles")


@router.get("/console/mfa", response_class=HTMLResponse)
async def mfa_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        return {"me": await p.api.get("/api/v1/auth/me")}

    return await render(request, "mfa.html", load, title="Second factor", mfa_page=True)


@router.get("/console/resolution", response_class=HTMLResponse)
async def resolution_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        return await resolution_context(p.api, request.query_params)

    return await render(request, "resolution.html", load, title="Remote resolution")


# -- playbooks -------------------------------------------------------------------------------


@router.get("/console/playbooks", response_class=HTMLResponse)
async def playbooks_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        listed = await p.api.get("/api/v1/playbooks")
        return {
            "playbooks": listed["items"],
            "kill_switch": listed["kill_switch"],
            "example": playbook_view.EXAMPLE,
        }

    return await render(request, "playbooks.html", load, title="Playbooks")


@router.get("/console/playbooks/{name}", response_class=HTMLResponse)
async def playbook_page(request: Request, name: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        playbook = await p.api.get(f"/api/v1/playbooks/{_id(name)}")
        runs = await p.api.get("/api/v1/playbooks/runs", playbook=playbook["name"], limit=30)
        return {
            "pb": playbook,
            "document": playbook_view.document(playbook),
            "runs": runs["items"],
            "runs_total": runs["total"],
        }

    return await render(request, "playbook.html", load, title=f"Playbook {name[:64]}")


# -- vendor profiles -------------------------------------------------------------------------


@router.get("/console/vendor-profiles", response_class=HTMLResponse)
async def vendor_profiles_page(request: Request) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        profiles = await p.api.get("/api/v1/vendor-profiles", limit=1000)
        return {
            "profiles": profiles["items"],
            "suggestions": await p.api.get("/api/v1/vendor-profiles/suggestions"),
            "protocols": vendors.DOWNLOAD_PROTOCOLS,
            "triggers": sorted(vendors.TRIGGER_MESSAGES),
            "min_samples": vendor_learning.MIN_SAMPLES,
            "blank": vendors.to_dict(vendors.DEFAULT),  # the new-profile form's values
        }

    return await render(request, "vendor_profiles.html", load, title="Vendor profiles")


@router.get("/console/{rest:path}", response_class=HTMLResponse)
async def not_found(request: Request, rest: str) -> Response:
    async def load(p: Page) -> dict[str, Any]:
        raise ApiError.of_problem(
            404, {"title": "Not found", "detail": f"no console page {rest!r}"}
        )

    return await render(request, "error.html", load, title="Not found")
