"""A small REST client the CLI uses to talk to a running evota server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx


class ApiError(Exception):
    """A call to the evota API that failed: the one error type of every API client (the CLI,
    the console).

    ``str()`` is one line for the user (``HTTP 404: Not found: no charger 'X'``); ``status``,
    ``title``, ``detail`` and ``field`` are the problem answer's, for pages that show it
    (``status`` is None when there was no answer: no token, evota unreachable).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str = "Error",
        detail: str = "",
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field

    @classmethod
    def of_problem(cls, status: int, problem: object, reason: str = "") -> ApiError:
        """The error for a 4xx/5xx answer whose body is ``problem`` (parsed JSON, if any)."""
        body: Mapping[str, Any] = problem if isinstance(problem, Mapping) else {}
        title = str(body.get("title") or reason or "Error")
        detail = str(body.get("detail") or "")
        field = body.get("field")
        message = f"HTTP {status}: {title}" + (f": {detail}" if detail else "")
        return cls(message, status=status, title=title, detail=detail, field=field)


class Client:
    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or os.environ.get("EVOTA_URL") or "http://127.0.0.1:8000").rstrip("/")
        token = token or os.environ.get("EVOTA_TOKEN")
        if not token:
            raise ApiError("no API token: set EVOTA_TOKEN or pass --token")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach evota at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"title": response.text[:200]}
            raise ApiError.of_problem(response.status_code, body, response.reason_phrase)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    def raw(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The response body as bytes (exports, downloads)."""
        return self._send(method, path, **kwargs).content

    def response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The whole response (headers too), for downloads; ``ApiError`` for 4xx/5xx."""
        return self._send(method, path, **kwargs)
