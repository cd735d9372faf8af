"""The FastAPI application: REST under /api/v1, health, metrics and a landing page."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from evota import __version__, metrics
from evota.api import (
    approvals,
    audit,
    auth,
    campaigns,
    chargers,
    firmware,
    jobs,
    problems,
    sites,
    users,
)
from evota.api.headers import SecurityHeaders
from evota.api.limits import BodyLimits
from evota.api.middleware import AuditMiddleware

if TYPE_CHECKING:
    from evota.runtime import Runtime


async def _database_problem(runtime: Runtime) -> str | None:
    """None if the database answers ``SELECT 1`` within two seconds, else why not."""
    try:
        async with asyncio.timeout(2.0):
            async with runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return "no answer within 2 s"
    except Exception as exc:  # refused, reset, shutting down: the reason is in the type
        return type(exc).__name__
    return None


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="evota",
        version=__version__,
        description="OTA firmware lifecycle and OTA control for EV charger fleets (OCPP-J).",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.add_middleware(AuditMiddleware, audit=lambda: runtime.audit)
    app.add_middleware(BodyLimits, settings=lambda: runtime.settings)  # before any body read
    app.add_middleware(SecurityHeaders)  # CSP etc. on every response, refusals included
    problems.install(app)
    app.include_router(sites.router)
    app.include_router(chargers.router)
    from evota.api import commands, uploads  # remote commands; charger uploads

    app.include_router(commands.router)
    app.include_router(uploads.router)
    app.include_router(firmware.router)
    app.include_router(jobs.router)
    app.include_router(campaigns.router)
    from evota.api import operations, profiles  # bulk operations; configuration profiles

    app.include_router(operations.router)
    app.include_router(profiles.router)
    app.include_router(approvals.router)
    app.include_router(audit.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    from evota.api import alerts  # anomaly alerts (evota.audit.alerts)

    app.include_router(alerts.router)
    from evota.api import id_tokens  # the token store (evota.fleet.tokens)

    app.include_router(id_tokens.router)
    from evota.api import fleet_firmware  # version scorecards, the fleet's firmware picture

    app.include_router(fleet_firmware.router)
    from evota.api import resolution  # remote-resolution analytics (evota.evidence.resolution)

    app.include_router(resolution.router)
    from evota.api import kpis  # post-rollout KPIs (evota.evidence.kpi_service)

    app.include_router(kpis.router)
    from evota.api import playbooks  # self-healing playbooks (evota.playbooks)

    app.include_router(playbooks.router)
    from evota.api import vendor_profiles  # vendor and model profiles (evota.fleet.vendors)

    app.include_router(vendor_profiles.router)
    from evota.api import certificates  # charger certificates (evota.control.certificates)

    app.include_router(certificates.router)
    from evota.api import rotation  # CSMS root rotation (evota.control.rotation)

    app.include_router(rotation.router)
    from evota.api import charger_passwords  # password changes (evota.control.passwords)

    app.include_router(charger_passwords.router)
    from evota.api import profile_upgrades  # security profile upgrades (evota.control)

    app.include_router(profile_upgrades.router)

    probing: list[asyncio.Task[str | None]] = []  # the probe in flight, shared by callers

    async def probe() -> str | None:
        if not probing or probing[0].done():
            probing[:] = [asyncio.ensure_future(_database_problem(runtime))]
        return await asyncio.shield(probing[0])

    @app.get("/healthz", tags=["ops"], responses={503: {"description": "evota is failing"}})
    async def healthz() -> JSONResponse:
        writer = runtime.fleet.writer
        problem = writer.problem()  # a stopped writer loses every charger's data: not healthy
        # The database unreachable (a PostgreSQL restart): degraded, not failing. The node
        # still serves its chargers and queues their writes; a load balancer that took
        # every node out because the shared database restarted would drop the whole fleet.
        # The reason is the kind of failure, never the driver's text (it names hosts and
        # users, and /healthz answers anyone); one probe at a time, however many ask.
        database = "writes failing" if writer.database_error else await probe()
        status = "failing" if problem is not None else "degraded" if database else "ok"
        body: dict[str, object] = {
            "status": status,
            "connected_chargers": len(runtime.gateway.connections),
            "write_backlog": writer.backlog,
            "writer_restarts": writer.restarts,
        }
        if writer.shed:  # rows lost to a full backlog during a long database outage
            body["writes_shed"] = writer.shed
        if problem is not None:
            body["reason"] = problem
        elif database:
            body["reason"] = f"database unreachable; charger writes are queued: {database}"
        return JSONResponse(body, status_code=200 if problem is None else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    from evota import console  # the operator's web console (evota.console)

    console.install(app)

    @app.get("/", include_in_schema=False)
    async def landing() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    return app
