"""The token store's shell: the ``id_tokens`` table, its in-memory copy, and the optional
authorization webhook.

Authorize is answered without a database round trip: the process is the single writer of
``id_tokens`` (the API and the CLI, which goes through the API, change tokens here), so
:class:`TokenAuthority` keeps every record in a dict and reloads it after each change.
Tokens the store does not know can be asked of an operator's webhook
(``EVOTA_AUTHORIZATION_WEBHOOK_URL``, docs/id-tokens.md); any failure of it answers Invalid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.clock import Clock
from evota.fleet import tokens
from evota.fleet.tokens import Decision, TokenRecord
from evota.store.models import IdToken

log = structlog.get_logger("evota.tokens")

FIELDS = ("status", "type", "expires_at", "parent_id", "sites")


def record_of(row: Any) -> TokenRecord:
    return TokenRecord(
        id_token=row.id_token,
        status=row.status,
        type=row.type,
        expires_at=row.expires_at,
        parent_id=row.parent_id,
        sites=frozenset(row.sites or ()),
    )


def _webhook_decision(body: Any) -> Decision:
    """The webhook's answer, or Invalid when it is not one (never trust its shape)."""
    if not isinstance(body, dict):
        return tokens.INVALID
    status = body.get("status")
    if status not in (*tokens.STATUSES, tokens.NOT_HERE):
        return tokens.INVALID
    expires_at = None
    if isinstance(body.get("expires_at"), str):
        try:
            expires_at = datetime.fromisoformat(body["expires_at"])
        except ValueError:
            return tokens.INVALID
        if expires_at.tzinfo is None:
            return tokens.INVALID
    parent = body.get("parent_id")
    parent = parent if isinstance(parent, str) and 0 < len(parent) <= 36 else None
    return Decision(str(status), expires_at, parent)


class TokenAuthority:
    """Answers "may this token charge here?" from memory; the webhook for unknown tokens."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        accept_all: bool = False,
        webhook_url: str | None = None,
        webhook_timeout: float = 2.0,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.accept_all = accept_all
        self.webhook_url = webhook_url
        self.webhook_timeout = webhook_timeout
        self.records: dict[str, TokenRecord] = {}
        self._http: httpx.AsyncClient | None = None

    async def reload(self) -> None:
        """Read the whole table again (after every change; a few hundred bytes per token)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(IdToken))).all()
        self.records = {row.id_token: record_of(row) for row in rows}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def decide(
        self, charger_id: str, site_id: str | None, id_token: str, token_type: str | None
    ) -> Decision | Awaitable[Decision]:
        """The answer, at once when the store knows the token (or no webhook is set)."""
        if self.accept_all:
            return tokens.ACCEPTED
        record = self.records.get(id_token)
        if record is None and self.webhook_url:
            return self._ask_webhook(charger_id, site_id, id_token, token_type)
        return tokens.decide(record, site_id, self._clock.now(), token_type)

    async def _ask_webhook(
        self, charger_id: str, site_id: str | None, id_token: str, token_type: str | None
    ) -> Decision:
        assert self.webhook_url
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.webhook_timeout, follow_redirects=False)
        body = {"charger_id": charger_id, "id_token": id_token, "type": token_type, "site": site_id}
        try:
            response = await self._http.post(self.webhook_url, json=body)
            if response.status_code != 200:
                log.warning(
                    "authorization webhook refused",
                    status=response.status_code,
                    charger_id=charger_id,
                )
                return tokens.INVALID
            decision = _webhook_decision(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            # Not the URL: it may carry a secret.
            log.warning(
                "authorization webhook failed", error=type(exc).__name__, charger_id=charger_id
            )
            return tokens.INVALID
        return decision

    def local_list(self, site_id: str | None, max_length: int) -> dict[str, dict[str, Any]]:
        return tokens.local_list(
            self.records.values(), site_id, self._clock.now(), max_length=max_length
        )


# -- the table ------------------------------------------------------------------------------


async def get(engine: AsyncEngine, id_token: str) -> Any | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(IdToken).where(IdToken.id_token == id_token))).first()


async def create(engine: AsyncEngine, now: datetime, values: Mapping[str, Any]) -> None:
    """Insert one token (IntegrityError when it exists)."""
    async with engine.begin() as conn:
        await conn.execute(insert(IdToken).values(**values, created_at=now, updated_at=now))


async def change(
    engine: AsyncEngine, now: datetime, id_token: str, values: Mapping[str, Any]
) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(IdToken).where(IdToken.id_token == id_token).values(**values, updated_at=now)
        )
    return bool(result.rowcount)


async def remove(engine: AsyncEngine, id_token: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(delete(IdToken).where(IdToken.id_token == id_token))
    return bool(result.rowcount)


async def upsert_many(
    engine: AsyncEngine, now: datetime, items: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """Create or replace tokens in one transaction; ``(created, updated)``."""
    if not items:
        return 0, 0
    async with engine.begin() as conn:
        ids = [item["id_token"] for item in items]
        existing: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            existing.update(
                (
                    await conn.execute(select(IdToken.id_token).where(IdToken.id_token.in_(chunk)))
                ).scalars()
            )
        fresh = [
            dict(i, created_at=now, updated_at=now) for i in items if i["id_token"] not in existing
        ]
        if fresh:
            await conn.execute(insert(IdToken), fresh)
        for item in items:
            if item["id_token"] in existing:
                values = {k: v for k, v in item.items() if k != "id_token"}
                await conn.execute(
                    update(IdToken)
                    .where(IdToken.id_token == item["id_token"])
                    .values(**values, updated_at=now)
                )
    return len(fresh), len(items) - len(fresh)


def sites_in(items: Iterable[Mapping[str, Any]]) -> set[str]:
    return {site for item in items for site in item.get("sites") or ()}
