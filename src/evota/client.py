"""A small REST client the CLI uses to talk to a running evota server."""

from __future__ import annotations

import os
from typing import Any

import httpx


class ApiError(Exception):
    """One line for the user: the server's problem title, detail and field."""


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
            parts = [str(body.get("title", response.reason_phrase))]
            if body.get("detail"):
                parts.append(str(body["detail"]))
            raise ApiError(f"HTTP {response.status_code}: " + ": ".join(parts))
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
