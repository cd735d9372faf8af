"""Request ids and the audit entry for every state-changing API call.

A raw ASGI middleware (not BaseHTTPMiddleware) so streamed uploads and server-sent events
pass through untouched. Routes that record a richer entry themselves (commands with the
charger's answer, logins) set ``request.state.audited``; every other POST/PUT/PATCH/DELETE
under ``/api/`` gets one entry here with the caller, the route, its target (type and id:
what the route named with ``evota.api.auditing.note``, else the path's first parameter), the
fields that changed, the reason the route saw (``request.state.audit_reason``) and the HTTP
status as the outcome. The entry is committed before the answer's last byte is sent, so a
caller holding the answer can read it back.

It also refuses text no database can store before any route sees it: a NUL character in the
URL or in a JSON body (PostgreSQL rejects it in text; SQLite would keep a string no other
tool reads back the same) is a 422 problem naming the field, and is audited like any other
refused call.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evota.api.problems import PROBLEM
from evota.audit import changes
from evota.audit.log import Actor, AuditLog

log = structlog.get_logger("evota.api")

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""The JSON escape of NUL, not preceded by an odd number of backslashes."""
_MAX_CHECKED_BODY: Final = 4 * 1024 * 1024
"""JSON bodies up to this size are checked (larger ones are refused by their routes)."""


def nul_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in a JSON value holding a NUL."""
    if isinstance(value, str):
        return (path or "(body)") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return _CONTROL.sub("?", here)
            if (found := nul_field(item, here)) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := nul_field(item, f"{path}.{i}" if path else str(i))) is not None:
                return found
    return None


def body_nul_field(body: bytes) -> str | None:
    """Where a JSON body carries a NUL character, or None (also for bodies that are not JSON:
    the route's own parsing refuses those)."""
    if not _NUL_ESCAPE.search(body):
        return None
    try:
        return nul_field(json.loads(body)) or "(body)"
    except ValueError:
        return None


def _is_json(headers: dict[bytes, bytes]) -> bool:
    kind = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or kind.endswith(b"+json")


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
        audited = scope["method"] in _UNSAFE and scope["path"].startswith("/api/")
        recorded = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body")
                and audited
                and not recorded
                and not state.get("audited")
            ):
                # Committed before the answer's last byte: a caller that has its answer
                # finds the entry (and a crash cannot leave an answered call unaudited).
                recorded = True
                await self._record(scope, state, status, request_id)
            await send(message)

        try:
            refused, receive = await self._refuse_nul(scope, headers, receive)
            if refused is not None:
                await _send_problem(send_wrapper, refused)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            if audited and not recorded and not state.get("audited"):
                await self._record(scope, state, status, request_id)

    async def _refuse_nul(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[str | None, Receive]:
        """The field a NUL is in (or None), and a ``receive`` that replays a read body."""
        if (
            "\x00" in scope["path"]
            or b"%00" in scope.get("query_string", b"")
            or (b"\x00" in scope.get("query_string", b""))
        ):
            return "(url)", receive
        if scope["method"] not in _UNSAFE or not _is_json(headers):
            return None, receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
            if size > _MAX_CHECKED_BODY:
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        field = None if more else body_nul_field(body)
        return field, replay

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
        params = {  # a credential in a path (an upload token) is never written
            k: changes.REDACTED if changes.is_secret(k) else _CONTROL.sub("?", str(v))
            for k, v in (scope.get("path_params") or {}).items()
        }
        # The target a route named (``evota.api.auditing.note``), else the path's.
        noted = state.get("audit_target")
        target = _CONTROL.sub("?", str(noted)) if noted is not None else None
        kind = state.get("audit_target_type") or target_type(params)
        target = target or next(iter(params.values()), None)
        charger = params.get("charger_id") or (target if kind == "charger" else None)
        try:
            await audit.record(
                actor,
                f"api.{name}",
                "ok" if status < 400 else f"http_{status}",
                target=target,
                chargers=[charger] if charger else [],
                reason=state.get("audit_reason"),
                detail={
                    "method": scope["method"],
                    "path": _CONTROL.sub("?", scope["path"]),
                    "status": status,
                    **({"target_type": kind} if kind else {}),
                    **({"params": params} if params else {}),
                    **state.get("audit_detail", {}),
                },
            )
        except Exception:  # the response is already sent; never turn it into a crash
            log.exception("audit record failed", path=scope["path"])


_PARAM_TYPES: Final = {"username": "user", "root_id": "trusted_root", "token_id": "api_token"}


def target_type(params: dict[str, str]) -> str | None:
    """The kind of thing a path names by its first parameter (``site_id`` → ``site``)."""
    if not params:
        return None
    name = next(iter(params))
    return _PARAM_TYPES.get(name, name.removesuffix("_id"))


async def _send_problem(send: Send, field: str) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Invalid request",
            "status": 422,
            "detail": f"{field}: must not contain NUL characters",
            "field": field,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
