"""The FastAPI application: REST under /api/v1, health, metrics and a landing page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from evota import __version__, metrics
from evota.api import campaigns, chargers, firmware, jobs, problems, sites
from evota.api.middleware import AuditMiddleware

if TYPE_CHECKING:
    from evota.runtime import Runtime


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
    problems.install(app)
    app.include_router(sites.router)
    app.include_router(chargers.router)
    app.include_router(firmware.router)
    app.include_router(jobs.router)
    app.include_router(campaigns.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, object]:
        return {
            "status": "ok",
            "connected_chargers": len(runtime.gateway.connections),
            "write_backlog": runtime.fleet.writer.backlog,
        }

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def landing() -> str:
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>evota</title></head>"
            "<body><main><h1>evota</h1><p>The operator console arrives with the console issue."
            " Until then, use the <a href='/api/docs'>REST API</a> (bearer token) or the "
            "<code>evota</code> CLI.</p></main></body></html>"
        )

    return app
