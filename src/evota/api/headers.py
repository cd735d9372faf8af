"""Security headers on every HTTP response: the console's Content-Security-Policy and friends.

The console has no inline scripts, styles or event handlers (htmx runs with ``allowEval``
off and without its injected indicator style), so its pages get a strict policy: scripts,
styles and connections from evota itself only, images also as ``data:`` URIs (the MFA QR
code), no plugins, no ``<base>``, forms posting to evota only, and no framing
(``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` against clickjacking). Every other
response (JSON, events, files) gets ``default-src 'none'``: it is data, never a document.
Every response also gets ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: same-origin``. The generated API docs page (``/api/docs``) loads Swagger UI
from a CDN with an inline script, so it keeps the other headers but no CSP.

A header a route set itself is left as it is. Pure ASGI (no body buffering), like
:mod:`evota.api.middleware`.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONSOLE_CSP", "DATA_CSP", "SecurityHeaders", "security_headers"]

CONSOLE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DATA_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
_ALWAYS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)
_NO_CSP_PREFIXES: Final = ("/api/docs",)


def security_headers(path: str, content_type: str) -> list[tuple[bytes, bytes]]:
    """The headers for a response to ``path`` with ``content_type`` (pure)."""
    headers = list(_ALWAYS)
    if not path.startswith(_NO_CSP_PREFIXES):
        html = content_type.split(";", 1)[0].strip().lower() == "text/html"
        headers.append((b"content-security-policy", (CONSOLE_CSP if html else DATA_CSP).encode()))
    return headers


class SecurityHeaders:
    """Adds :func:`security_headers` to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                present = {name.lower() for name, _ in headers}
                content_type = next(
                    (v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), ""
                )
                for name, value in security_headers(path, content_type):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
