"""Request body limits, enforced before any body byte is read.

Without them a route that declares a JSON body has the whole body read (and parsed) before
authentication runs: a 150 MB body without a token cost the server 430 MB. This pure ASGI
middleware sits outside every other one and decides from the request head alone:

* a request with a body that needs credentials and carries none (no ``Authorization``
  header, no session cookie) may send at most ``ANONYMOUS_MAX_BYTES``: a larger (or
  unknown, chunked) length is answered 401 at once, a small one reaches the route, which
  answers 401 as usual (and is audited); whether credentials are *valid* is still the
  route's business, but then the body is bounded by the next rule;
* a declared ``Content-Length`` over the route's limit is answered 413 at once;
* a body without a length (chunked) is counted as it streams, and the request is answered
  413 as soon as it passes the limit (whatever the route was doing with it).

Refusals carry ``Connection: close``, so the server stops reading the rest of the body.
The limits per route are :func:`body_rule` (pure): charger uploads (token in the URL) and
firmware uploads have their own, larger limits and stream to disk; everything else is small
JSON (``EVOTA_API_MAX_BODY_BYTES``, 1 MiB by default). The routes keep their own exact
checks (a firmware image over ``EVOTA_FIRMWARE_MAX_BYTES`` is still the route's 413).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evota.api.deps import SESSION_COOKIE
from evota.api.problems import PROBLEM

if TYPE_CHECKING:
    from evota.config import Settings

log = structlog.get_logger("evota.api")

__all__ = ["BodyLimits", "BodyRule", "body_rule"]

FORM_OVERHEAD: Final = 1024 * 1024
"""Multipart framing and the text fields next to an uploaded file."""
ANONYMOUS_MAX_BYTES: Final = 64 * 1024
"""A body without credentials up to this size is left to the route to refuse (401): reading
it costs nothing, and closing a connection with unread input can reset it before the client
has read the answer."""
LOGIN_MAX_BYTES: Final = 64 * 1024
"""A login body (username, password, code) is tiny; it is the one JSON body sent without
credentials, so it gets a tight limit of its own."""
_UPLOADS: Final = "/api/v1/uploads/"
_FIRMWARE: Final = "/api/v1/firmware"
_ID_TOKEN_IMPORT: Final = "/api/v1/id-tokens/import"
_LOGIN: Final = "/api/v1/auth/login"


@dataclass(frozen=True, slots=True)
class BodyRule:
    """At most ``limit`` body bytes; ``credentials``: refuse a body sent without any."""

    limit: int
    credentials: bool
    what: str
    field: str = "(body)"


def body_rule(method: str, path: str, settings: Settings) -> BodyRule:
    """The body limit of a route, from its method and path alone (no routing needed)."""
    if path.startswith(_UPLOADS):  # chargers: the signed token in the URL is the credential
        return BodyRule(settings.upload_max_bytes + FORM_OVERHEAD, False, "charger upload", "file")
    if method == "POST" and path.rstrip("/") == _FIRMWARE:
        return BodyRule(
            settings.firmware_max_bytes + FORM_OVERHEAD, True, "firmware upload", "file"
        )
    if method == "POST" and path.rstrip("/") == _ID_TOKEN_IMPORT:
        from evota.api.id_tokens import MAX_IMPORT_BYTES  # the route's own exact limit

        return BodyRule(MAX_IMPORT_BYTES, True, "id token import")
    if method == "POST" and path.rstrip("/") == _LOGIN:
        return BodyRule(LOGIN_MAX_BYTES, False, "login")
    return BodyRule(settings.api_max_body_bytes, True, "request")


def _has_credentials(headers: dict[bytes, bytes]) -> bool:
    if headers.get(b"authorization", b"").strip():
        return True
    for cookie in headers.get(b"cookie", b"").split(b";"):
        name, _, value = cookie.strip().partition(b"=")
        if name == SESSION_COOKIE.encode() and value:
            return True
    return False


def _declared_length(headers: dict[bytes, bytes]) -> int | None:
    """The Content-Length, None without one; -1 if it is not a number (the server refuses)."""
    raw = headers.get(b"content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        return -1
    return int(raw)


class _TooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes its limit."""


class BodyLimits:
    """See the module docstring. ``settings`` is a callable (the runtime's settings)."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Starlette joins repeated headers: the last one wins here, as in Request.headers.
        headers = {k.lower(): v for k, v in scope.get("headers") or ()}
        method: str = scope["method"]
        rule = body_rule(method, scope["path"], self._settings())
        length = _declared_length(headers)
        has_body = (length is not None and length != 0) or b"transfer-encoding" in headers
        if has_body and rule.credentials and not _has_credentials(headers):
            if length is None or length < 0 or length > ANONYMOUS_MAX_BYTES:
                log.info("request body without credentials refused", path=scope["path"])
                await _refuse(
                    send,
                    401,
                    "Authentication required",
                    "send Authorization: Bearer <token> (or the session cookie) with a "
                    "request body",
                    "Authorization",
                )
                return
            rule = BodyRule(ANONYMOUS_MAX_BYTES, True, "request without credentials")
        if length is not None and length > rule.limit:
            log.info("request body refused", path=scope["path"], declared=length, limit=rule.limit)
            await _refuse(send, 413, "Request body too large", _limit_detail(rule), rule.field)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, rule)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, rule: BodyRule) -> None:
        """Run the app with a ``receive`` that stops at the limit and a 413 in place of
        whatever the app answers after that."""
        seen = 0
        exceeded = False
        started = False
        dropping = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > rule.limit:
                    exceeded = True
                    log.info("request body refused", path=scope["path"], limit=rule.limit)
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, dropping
            if message["type"] == "http.response.start":
                # The app's answer to a body it never got whole is replaced below, unless
                # it is the route's own (more precise) 413.
                dropping = exceeded and message["status"] != 413
                started = not dropping
            if not dropping:
                await send(message)

        with contextlib.suppress(_TooLarge):  # the app let it through: answered below
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await _refuse(send, 413, "Request body too large", _limit_detail(rule), rule.field)


def _limit_detail(rule: BodyRule) -> str:
    return f"a {rule.what} body may be at most {rule.limit} bytes"


async def _refuse(send: Send, status: int, title: str, detail: str, field: str) -> None:
    problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body = json.dumps({**problem, "field": field}).encode()
    headers = [
        (b"content-type", PROBLEM.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # do not read the rest of the body
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
