"""Vendor release feeds: stored feed URLs, and the check that imports new versions as drafts.

A check fetches the feed (a small JSON document, :mod:`evota.firmware.feed_format`) under
the same SSRF rules as an import, picks at most ``max_new`` versions the repository lacks,
and imports each through :func:`evota.firmware.importer.import_firmware`: the sha256 the
feed gives must match, the signature is verified against the vendor's trusted roots, and
the image lands as a **draft** (an operator releases it). Each created or refused entry is
an audit entry with the feed as the actor. An entry refused for its content (signature,
digest, size) is remembered with its sha256 and not fetched again until the feed changes
it (or a check with ``retry``); a network failure is retried at the next check.
:class:`FeedWatcher` runs the checks periodically and one at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.audit.log import Actor, AuditLog
from evota.firmware import feed_format, import_policy, importer, intake
from evota.firmware import repository as repo
from evota.firmware.feed_format import FeedError, Release
from evota.firmware.importer import FetchError, FetchPolicy, FetchProblem, Resolver
from evota.firmware.storage import FirmwareStore
from evota.periodic import Periodic
from evota.store.models import Firmware, FirmwareFeed

__all__ = ["CheckResult", "FeedRecord", "FeedWatcher", "add_feed", "delete_feed", "list_feeds"]

log = structlog.get_logger(__name__)

MAX_FEEDS: Final = 100
_MAX_SIGNATURE_BYTES: Final = 8 * 1024
_MAX_REFUSED: Final = 500  # remembered refusals per feed (oldest forgotten first)
# Failures that are the entry's own (its bytes, its signature): not worth fetching again.
_CONTENT: Final = frozenset({FetchProblem.SHA256, FetchProblem.TOO_LARGE, FetchProblem.ENCODING})


@dataclass(frozen=True, slots=True)
class FeedRecord:
    id: int
    vendor: str
    url: str
    created_by: str
    created_at: dt.datetime
    checked_at: dt.datetime | None
    last_result: dict[str, Any]


@dataclass
class CheckResult:
    """What one check did; stored as the feed's ``last_result``."""

    releases: int = 0  # entries in the feed
    created: list[dict[str, str]] = dataclasses.field(default_factory=list)
    refused: list[dict[str, str]] = dataclasses.field(default_factory=list)
    failed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    error: dict[str, str] | None = None  # the feed itself could not be read

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _record(row: Any) -> FeedRecord:
    return FeedRecord(
        id=row.id,
        vendor=row.vendor,
        url=row.url,
        created_by=row.created_by,
        created_at=row.created_at,
        checked_at=row.checked_at,
        last_result=dict(row.last_result or {}),
    )


async def list_feeds(engine: AsyncEngine) -> list[FeedRecord]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(FirmwareFeed).order_by(FirmwareFeed.id))).all()
    return [_record(r) for r in rows]


async def get_feed(engine: AsyncEngine, feed_id: int) -> FeedRecord | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(FirmwareFeed).where(FirmwareFeed.id == feed_id))).first()
    return _record(row) if row is not None else None


async def add_feed(
    engine: AsyncEngine, vendor: str, url: str, by: str, now: dt.datetime, *, allow_http: bool
) -> FeedRecord:
    """Store a feed; ``InvalidInput`` (``url``) for a URL no check could fetch, ``Conflict``
    for the same vendor and URL twice or more than :data:`MAX_FEEDS` feeds."""
    try:
        import_policy.target(url, allow_http)
    except import_policy.PolicyError as exc:
        raise repo.InvalidInput(exc.reason, "url") from None
    async with engine.begin() as conn:
        count = (await conn.execute(select(func.count()).select_from(FirmwareFeed))).scalar_one()
        if count >= MAX_FEEDS:
            raise repo.Conflict(f"at most {MAX_FEEDS} feeds; remove one first", "url")
        same = (
            await conn.execute(
                select(FirmwareFeed.id).where(
                    func.lower(FirmwareFeed.vendor) == vendor.lower(), FirmwareFeed.url == url
                )
            )
        ).first()
        if same is not None:
            raise repo.Conflict(f"this feed exists for {vendor} (id {same[0]})", "url")
        feed_id = (
            await conn.execute(
                insert(FirmwareFeed)
                .values(
                    vendor=vendor,
                    url=url,
                    created_by=by,
                    created_at=now,
                    checked_at=None,
                    last_result={},
                    refused={},
                )
                .returning(FirmwareFeed.id)
            )
        ).scalar_one()
    return FeedRecord(feed_id, vendor, url, by, now, None, {})


async def delete_feed(engine: AsyncEngine, feed_id: int) -> bool:
    """Stop watching a feed (images it created stay); True if it existed."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(FirmwareFeed).where(FirmwareFeed.id == feed_id))
    return bool(result.rowcount)


async def _existing_versions(engine: AsyncEngine, vendor: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Firmware.version).where(func.lower(Firmware.vendor) == vendor.lower())
        )
        return set(rows.scalars())


def _signature_text(data: bytes) -> str:
    """A detached signature file: Base64 text, or the raw DER it encodes."""
    try:
        text = "".join(data.decode("ascii").split())
        base64.b64decode(text, validate=True)
        return text
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return base64.b64encode(data).decode("ascii")


class FeedWatcher:
    """Checks feeds now (the API) and every ``interval`` (the runtime), one at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: FirmwareStore,
        audit: AuditLog,
        now: Callable[[], dt.datetime],
        policy: FetchPolicy,
        *,
        max_new: int,
        max_feed_bytes: int,
        resolve: Resolver | None = None,
        slots: importer.ImportSlots | None = None,  # cluster: imports counted in Redis
    ) -> None:
        self.slots = slots
        self.engine = engine
        self.store = store
        self.audit = audit
        self.now = now
        self.policy = policy
        self.max_new = max_new
        self.max_feed_bytes = max_feed_bytes
        self.resolve = resolve
        self._lock = asyncio.Lock()
        self._periodic = Periodic("firmware-feeds", self.check_all)

    # -- background ---------------------------------------------------------------------------
    def start(self, interval_seconds: float) -> None:
        """Repeat every ``interval_seconds`` (the first run one interval after start)."""
        self._periodic.start(interval_seconds)

    async def stop(self) -> None:
        await self._periodic.stop()

    async def check_all(self) -> dict[int, CheckResult]:
        results: dict[int, CheckResult] = {}
        for feed in await list_feeds(self.engine):
            results[feed.id] = await self.check(feed.id)
        return results

    # -- one check ----------------------------------------------------------------------------
    async def check(self, feed_id: int, *, retry: bool = False) -> CheckResult:
        """Read the feed and import its new versions; ``repo.NotFound`` for no such feed.

        ``retry`` forgets the entries refused before (e.g. after adding the vendor's root).
        """
        async with self._lock:
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(select(FirmwareFeed).where(FirmwareFeed.id == feed_id))
                ).first()
            if row is None:
                raise repo.NotFound(f"no feed with id {feed_id}", "id")
            refused: dict[str, str] = {} if retry else dict(row.refused or {})
            result = await self._check(row.id, row.vendor, row.url, refused)
            while len(refused) > _MAX_REFUSED:
                refused.pop(next(iter(refused)))
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(FirmwareFeed)
                    .where(FirmwareFeed.id == feed_id)
                    .values(checked_at=self.now(), last_result=result.as_dict(), refused=refused)
                )
            return result

    async def _check(
        self, feed_id: int, vendor: str, url: str, refused: dict[str, str]
    ) -> CheckResult:
        result = CheckResult()
        actor = Actor(f"feed:{feed_id}", ("feed",))
        small = dataclasses.replace(self.policy, max_bytes=self.max_feed_bytes)
        try:
            body = await importer.fetch_bytes(url, small, resolve=self.resolve)
            releases = feed_format.parse_feed(orjson.loads(body), vendor)
        except FetchError as exc:
            result.error = {"field": "url", "detail": exc.detail}
        except orjson.JSONDecodeError as exc:
            result.error = {"field": "(feed)", "detail": f"not JSON: {exc}"}
        except FeedError as exc:
            result.error = {"field": exc.field, "detail": exc.message}
        if result.error is not None:
            await self.audit.record(
                actor, "firmware.feed_check", "failed", target=f"feed:{feed_id}",
                detail={"url": import_policy.record_url(url), **result.error},
            )  # fmt: skip
            return result
        result.releases = len(releases)
        existing = await _existing_versions(self.engine, vendor)
        for release in feed_format.new_releases(releases, existing, refused, self.max_new):
            await self._import(actor, feed_id, vendor, release, refused, result)
        return result

    async def _import(
        self,
        actor: Actor,
        feed_id: int,
        vendor: str,
        release: Release,
        refused: dict[str, str],
        result: CheckResult,
    ) -> None:
        entry = {"version": release.version, "sha256": release.sha256}
        try:
            signature = release.signature
            if release.signature_url is not None:
                small = dataclasses.replace(self.policy, max_bytes=_MAX_SIGNATURE_BYTES)
                raw = await importer.fetch_bytes(release.signature_url, small, resolve=self.resolve)
                signature = _signature_text(raw)
            submission = intake.Submission(
                vendor=vendor,
                version=release.version,
                models=release.models,
                hardware_revisions=release.hardware_revisions,
                signature=signature,
                signing_certificate=release.signing_certificate,
                release_notes=release.release_notes,
            )
            record = await importer.import_firmware(
                self.engine,
                self.store,
                submission,
                release.url,
                self.policy,
                self.now,
                by=actor.name,
                expected_sha256=release.sha256,
                resolve=self.resolve,
                slots=self.slots,
            )
        except FetchError as exc:
            detail = {**entry, "field": exc.field, "detail": exc.detail}
            if exc.problem in _CONTENT:
                refused[release.version] = release.sha256
                result.refused.append(detail)
                outcome = "refused"
            else:
                result.failed.append(detail)
                outcome = "failed"
        except intake.IntakeError as exc:
            detail = {**entry, "field": exc.field, "detail": exc.detail}
            if exc.refusal not in (intake.Refusal.EXISTS, intake.Refusal.RACED):
                refused[release.version] = release.sha256
            result.refused.append(detail)
            outcome = "refused"
        except repo.RepositoryError as exc:
            detail = {**entry, "field": exc.field or "", "detail": exc.detail}
            result.refused.append(detail)
            outcome = "refused"
        else:
            detail = {**entry, "firmware_id": record.id}
            result.created.append(detail)
            outcome = "created"
        await self.audit.record(
            actor,
            "firmware.feed_import",
            outcome,
            target=f"firmware:{detail['firmware_id']}" if outcome == "created" else None,
            detail={
                "feed": feed_id,
                "vendor": vendor,
                "url": import_policy.record_url(release.url),
                **detail,
            },
        )
