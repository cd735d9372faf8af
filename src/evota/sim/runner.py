"""Run a whole simulated fleet in one asyncio loop, and provision it into a CSMS over REST.

One process holds thousands of chargers because a charger is a handful of tasks and a socket,
never a thread. Connects are spread over a ramp-up window so a 2,000-charger start does not
hit the CSMS as one burst.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import structlog

from evota.clock import Clock
from evota.sim.charger import SimConfig, SimulatedCharger
from evota.sim.fleet import ChargerSpec, FleetSpec, SiteSpec, site_document

log = structlog.get_logger("evota.sim")

CONNECT_RATE = 200.0  # chargers per second during the default ramp-up


class ProvisionError(Exception):
    """Provisioning could not complete (bad token, unreachable API, rejected records)."""


@dataclass(slots=True)
class ProvisionReport:
    created: int = 0  # sites + chargers answered 201
    existing: int = 0  # answered 409: already there, which is fine
    failed: list[str] = field(default_factory=list)  # "charger X: HTTP 422 ..." per failure
    # the same per kind ("site", "charger"), so a report can say what it created
    created_by_kind: Counter[str] = field(default_factory=Counter)
    existing_by_kind: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class FleetSummary:
    total: int
    connected: int
    accepted: int
    pending: int  # connected, boot answered Pending
    rejected: int  # connected, boot answered Rejected
    sessions_active: int
    sessions_completed: int
    energy_kwh: float
    messages_sent: int
    messages_received: int
    callerrors: int
    invalid_results: int
    call_timeouts: int
    connect_failures: int
    http_401: int  # chargers whose last refused handshake was 401 (wrong key)
    http_404: int  # ... was 404 (unknown identity)

    def line(self) -> str:
        return (
            f"{self.connected}/{self.total} connected, {self.accepted} accepted, "
            f"{self.sessions_active} charging, {self.sessions_completed} sessions done, "
            f"{self.callerrors} CALLERRORs, {self.connect_failures} failed connects"
        )


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    *,
    poll: float = 0.02,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until true; on timeout raise TimeoutError saying what the state was."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe else ""
            raise TimeoutError(f"condition not met within {timeout:g} s{detail}")
        await asyncio.sleep(poll)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit toward ``wanted`` (one socket per charger); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return int(soft)


class Fleet:
    """Many :class:`SimulatedCharger` in the current event loop; ``async with`` starts/stops it."""

    def __init__(
        self,
        chargers: Sequence[ChargerSpec],
        url: str,
        *,
        config: SimConfig | None = None,
        sites: Sequence[SiteSpec] = (),
        seed: str = "evota-sim",
        ramp_up: float | None = None,
        clock: Clock | None = None,
        tls_url: str | None = None,
    ) -> None:
        """``url`` is the OCPP endpoint without identity, e.g. ``ws://127.0.0.1:9000/ocpp``.

        ``ramp_up`` (real seconds) spreads first connects uniformly; default count/200.
        ``tls_url`` (``wss://``) is where chargers on profile 2 or 3 connect when ``url`` is
        plain (a charger switched to a higher security profile goes there).
        """
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"OCPP URL must start with ws:// or wss:// (got {url!r})")
        if tls_url is not None and not tls_url.startswith("wss://"):
            raise ValueError(f"the TLS URL must start with wss:// (got {tls_url!r})")
        self.url = url
        self.config = config or SimConfig()
        self.sites = tuple(sites)
        self.specs = tuple(chargers)
        window = len(self.specs) / CONNECT_RATE if ramp_up is None else ramp_up
        self.chargers: list[SimulatedCharger] = []
        for spec in self.specs:
            rng = random.Random(f"{seed}:{spec.identity}")
            self.chargers.append(
                SimulatedCharger(
                    spec,
                    url,
                    self.config,
                    initial_delay=rng.uniform(0, window) if window > 0 else 0.0,
                    rng=rng,
                    clock=clock,
                    tls_url=tls_url,
                )
            )
        self.by_id = {c.identity: c for c in self.chargers}
        self._started = False

    @classmethod
    def from_spec(cls, fleet: FleetSpec, url: str, **kwargs: Any) -> Fleet:
        return cls(fleet.chargers, url, sites=fleet.sites, seed=fleet.seed, **kwargs)

    def __len__(self) -> int:
        return len(self.chargers)

    def __iter__(self) -> Iterator[SimulatedCharger]:
        return iter(self.chargers)

    def __getitem__(self, identity: str) -> SimulatedCharger:
        return self.by_id[identity]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        raise_fd_limit(len(self.chargers) + 256)
        for charger in self.chargers:
            charger.start()
        self._started = True

    async def stop(self) -> None:
        """Close every connection (with closing handshakes) and end every task."""
        await asyncio.gather(*(c.stop() for c in self.chargers))
        self._started = False

    def summary(self) -> FleetSummary:
        connected = accepted = pending = rejected = active = done = 0
        sent = received = errors = invalid = timeouts = failures = h401 = h404 = 0
        energy = 0
        for c in self.chargers:
            s = c.stats
            if c.connected:
                connected += 1
                accepted += c.boot_status == "Accepted"
                pending += c.boot_status == "Pending"
                rejected += c.boot_status == "Rejected"
            active += len(c.transactions)
            done += s.transactions_completed
            energy += s.energy_wh
            sent += s.messages_sent
            received += s.messages_received
            errors += len(s.callerrors)
            invalid += s.invalid_results
            timeouts += s.call_timeouts
            failures += s.connect_failures
            if not c.connected:
                h401 += s.last_http_status == 401
                h404 += s.last_http_status == 404
        return FleetSummary(
            total=len(self.chargers),
            connected=connected,
            accepted=accepted,
            pending=pending,
            rejected=rejected,
            sessions_active=active,
            sessions_completed=done,
            energy_kwh=energy / 1000,
            messages_sent=sent,
            messages_received=received,
            callerrors=errors,
            invalid_results=invalid,
            call_timeouts=timeouts,
            connect_failures=failures,
            http_401=h401,
            http_404=h404,
        )

    async def wait_until(
        self, predicate: Callable[[Fleet], bool], timeout: float = 10.0, *, poll: float = 0.02
    ) -> None:
        """Wait for a fleet-wide condition, e.g. ``lambda f: f.summary().accepted == len(f)``."""
        await wait_until(
            lambda: predicate(self), timeout, poll=poll, describe=lambda: self.summary().line()
        )

    async def wait_for_all(
        self,
        predicate: Callable[[SimulatedCharger], bool],
        timeout: float = 10.0,
        *,
        poll: float = 0.02,
    ) -> None:
        """Wait until every charger satisfies ``predicate``, e.g. ``lambda c: c.accepted``."""

        def describe() -> str:
            lagging = [c.identity for c in self.chargers if not predicate(c)]
            return f"{len(lagging)} chargers not there yet, e.g. {lagging[:5]}"

        await wait_until(
            lambda: all(predicate(c) for c in self.chargers), timeout, poll=poll, describe=describe
        )

    # -- provisioning -------------------------------------------------------------------------
    async def provision(
        self,
        api_url: str,
        token: str,
        *,
        concurrency: int = 16,
        timeout: float = 15.0,
        retry_delay: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> ProvisionReport:
        """Create the fleet's sites, then its chargers (with their keys), in the CSMS.

        409 (already exists) counts as success, so provisioning is idempotent. Raises
        :class:`ProvisionError` for a refused token, an unreachable API, or any record the
        API rejected (after the rest were tried).
        """
        base = api_url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        report = ProvisionReport()
        limit = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=timeout, transport=transport
        ) as client:
            fatal: list[str] = []

            async def post(kind: str, key: str, path: str, body: dict[str, Any]) -> None:
                if fatal:
                    return  # no point hammering an API that refused us
                async with limit:
                    try:
                        status, text = await _post(client, path, body, retry_delay)
                    except ProvisionError as exc:
                        fatal.append(str(exc))
                        return
                if status == 201:
                    report.created += 1
                    report.created_by_kind[kind] += 1
                elif status == 409:
                    report.existing += 1
                    report.existing_by_kind[kind] += 1
                elif status in (401, 403):
                    fatal.append(f"the API refused the token (HTTP {status})")
                else:
                    report.failed.append(f"{kind} {key}: HTTP {status} {text[:200]}")

            for kind, path, items in (
                ("site", "/sites", [(s.id, site_document(s)) for s in self.sites]),
                ("charger", "/chargers", [(c.identity, _charger_body(c)) for c in self.specs]),
            ):
                await asyncio.gather(*(post(kind, key, path, body) for key, body in items))
                if fatal:
                    raise ProvisionError(fatal[0])
        if report.failed:
            more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
            raise ProvisionError(f"provisioning failed: {report.failed[0]}{more}")
        log.info("fleet provisioned", created=report.created, existing=report.existing)
        return report


def _charger_body(spec: ChargerSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"id": spec.identity, "auth_key": spec.auth_key}
    if spec.site_id is not None:
        body["site_id"] = spec.site_id
    if spec.tags:
        body["tags"] = list(spec.tags)
    return body


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], delay: float
) -> tuple[int, str]:
    """POST with a few retries (doubling ``delay``) on transport errors, 429 and 5xx."""
    for attempt in range(4):
        try:
            response = await client.post(path, json=body)
        except httpx.TransportError as exc:
            if attempt == 3:
                raise ProvisionError(f"cannot reach the API at {client.base_url}: {exc}") from None
        else:
            if (response.status_code != 429 and response.status_code < 500) or attempt == 3:
                return response.status_code, response.text
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
