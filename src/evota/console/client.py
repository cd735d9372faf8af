"""The console reads through the REST API, in process, as the logged-in operator.

Pages call ``/api/v1`` over an ASGI transport with the operator's session cookie, so every
permission and scope check a page relies on is the API's own: the console cannot show what
the API would refuse. Writes never go through here; the browser sends them to the API itself
(with the CSRF header), so approvals and the audit log see the operator's own request.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from evota.api.deps import POLL_HEADER, SESSION_COOKIE
from evota.client import ApiError


class Api:
    """GETs against the API with the operator's cookie; JSON in, problems raised."""

    def __init__(self, app: FastAPI, cookie: str, poll: bool = False) -> None:
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://evota.console",
            cookies={SESSION_COOKIE: cookie},
            # a background refresh reads without renewing the session (idle timeout)
            headers={POLL_HEADER: "1"} if poll else {},
            timeout=30,
        )

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None and v != ""}
        r = await self._http.get(path, params=query)
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"title": r.reason_phrase}
            raise ApiError.of_problem(r.status_code, problem)
        return r.json()

    async def maybe(self, path: str, **params: Any) -> Any:
        """Like :meth:`get`, but None when the operator may not read it (403)."""
        try:
            return await self.get(path, **params)
        except ApiError as exc:
            if exc.status == 403:
                return None
            raise

    async def aclose(self) -> None:
        await self._http.aclose()
