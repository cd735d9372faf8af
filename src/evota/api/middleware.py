"""Request ids and the audit entry for every state-changing API call.

A raw ASGI middleware (not BaseHTTPMiddleware) so streamed uploads and server-sent events
pass through untouched. Routes that record a richer entry themselves (commands with the
charger's answer, logins) set ``request.state.audited``; every other POST/PUT/PATCH/DELETE
under ``/api/`` gets one entry here with the caller, the route, its path parameters, the
reason the route saw (``request.state.audit_reason``) and the HTTP status as the outcome.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evota.audit.log import Actor, AuditLog

log = structlog.get_logger("evota.api")

_UNSAFE = {b"POST", b"PUT", b"PATCH", b"DELETE", "POST", "PUT", "PATCH", "DELETE"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit: Any) -> None:
        self.app = app
        self._audit = audit  # a callable returning the AuditLog (the runtime sets it later)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if (
                scope["method"] in _UNSAFE
                and scope["path"].startswith("/api/")
                and not state.get("audited")
            ):
                await self._record(scope, state, status, request_id)

    async def _record(
        self, scope: Scope, state: dict[str, Any], status: int, request_id: str
    ) -> None:
        audit: AuditLog = self._audit()
        who = state.get("principal")
        actor = (
            Actor(who.name, who.roles, request_id)
            if who is not None
            else Actor("anonymous", (), request_id)
        )
        endpoint = scope.get("endpoint")
        name = getattr(endpoint, "__name__", None) or "unrouted"
        params = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
        charger = params.get("charger_id")
        try:
            await audit.record(
                actor,
                f"api.{name}",
                "ok" if status < 400 else f"http_{status}",
                target=next(iter(params.values()), None),
                chargers=[charger] if charger else [],
                reason=state.get("audit_reason"),
                detail={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    **({"params": params} if params else {}),
                    **state.get("audit_detail", {}),
                },
            )
        except Exception:  # the response is already sent; never turn it into a crash
            log.exception("audit record failed", path=scope["path"])
