"""The operator's web console: server-rendered pages over the REST API (see routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the console's pages and its static files (CSS, JS, vendored htmx)."""
    from evota.console.routes import router

    app.include_router(router)
    app.mount("/static/console", StaticFiles(directory=STATIC), name="console-static")
