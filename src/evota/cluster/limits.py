"""Limits that hold across the cluster: the same rules as on one node, kept in Redis.

On one node the limits live in the process (:class:`evota.operators.login.LoginThrottle`,
:class:`evota.gateway.limits.AuthFailures`, the download server's counting caps). With
several nodes behind a load balancer each would allow its limit *per node*, so a guesser
spreading attempts over N nodes would get N times the attempts. In cluster mode the same
rules run in Redis, each decision one Lua script (atomic: no two nodes admit the same last
slot), every key with a TTL so nothing grows forever:

* **sliding windows** (``evota:login:<address>``, ``evota:auth:id:<identity>``,
  ``evota:auth:src:<source>``): a sorted set of admitted attempt times, trimmed and decided
  as :func:`evota.operators.login.admit` does (a property test holds the two to the same
  answers); the key expires one window after its last attempt;
* **download slots** (``evota:downloads:all``, ``evota:downloads:site:<site>``): a sorted
  set of *leases* scored by their expiry, renewed by the node that holds them every third
  of :data:`LEASE_SECONDS`; a node that dies mid-download stops renewing and its slots
  lapse within one lease, without anybody releasing them;
* **firmware imports at once** (``evota:imports``): leases as for downloads, renewed by a
  task per running import;
* **the last signing per charger** (``evota:sign:<charger>``, and ``evota:sign:refused:
  <charger>`` for the audited refusal): the time of the last SignCertificate accepted,
  set only if absent or older than the interval (SET NX with the nodes' clock deciding),
  with the interval as TTL.

Times are the nodes' wall clocks (``now`` callables, NTP-synchronised in any cluster): a
window of a minute does not notice milliseconds of skew, and tests can move one clock for
every node.

**When Redis is unreachable** (refused, timed out): the security limits (login attempts per
address, failed charger keys) fall back to this node's own in-process windows, the exact
single-node behaviour: never open, at worst N times the limit over N nodes for the outage,
and the account lockout, kept in PostgreSQL, still holds cluster-wide. Refusing every login
and every charger handshake instead would lock operators out of the console and keep a
reconnecting fleet off the air exactly while something is broken. Download slots fail
closed: a new download is answered 503 with ``Retry-After`` (the charger retries), because
the caps protect sites' uplinks and a node cannot know what the others are sending;
downloads already running go on. The SignCertificate interval falls back to this node's
own memory like the security limits: the interval guards the CA against a flooding charger,
it does not decide who may be signed (the authenticated connection and the CSR's checks do,
without Redis), and refusing every signing would let certificates expire during an outage;
at worst a charger is signed once per node over the outage, each signing audited. Firmware
imports fail closed (a 503 with ``Retry-After``): an import is never urgent, the operator
retries and a release feed is checked again at its next interval, while N nodes each
fetching their own cap would be N times the bound on fetches into the shared store. After a
failure Redis is not asked again for :data:`RETRY_SECONDS`, so a handshake storm during an
outage does not queue on timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Final

import structlog
from redis import BlockingConnectionPool
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from evota.cluster.redis import connect, key, raise_if_cancelled, stop_tasks
from evota.firmware.importer import FetchError, FetchProblem
from evota.gateway.limits import AuthFailures, Exhausted
from evota.operators.login import LoginThrottle

log = structlog.get_logger(__name__)

__all__ = [
    "LEASE_SECONDS",
    "RETRY_SECONDS",
    "SharedAuthFailures",
    "SharedDownloadCaps",
    "SharedImportSlots",
    "SharedLimits",
    "SharedLoginThrottle",
    "SharedSignings",
    "SlidingWindows",
]

LEASE_SECONDS: Final = 30.0
"""A download slot's lease: how long the slot of a dead node stays taken, at most."""
RETRY_SECONDS: Final = 1.0
"""After Redis failed, decide locally (or refuse downloads) this long before asking again."""
UNREACHABLE: Final = "redis"
"""The cap name a download refused because Redis is unreachable reports."""

# A sliding window (evota.operators.login.admit): drop what left the window, refuse when
# ``limit`` attempts are inside (answering the limit-th latest time, from which the caller
# computes the wait), else record (when asked) and keep the latest ``limit``. Times travel as
# strings: Lua's number formatting keeps 14 digits, too few for a timestamp in microseconds.
_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local limit = tonumber(ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local kth = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
  return {0, kth[2], n}
end
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(limit + 1))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  n = n + 1
end
return {1, '', n}
"""

# A download slot: drop lapsed leases, refuse when the global (then the site's) set is
# full, else add the lease to both, scored by its expiry.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 'global' end
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'site' end
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return ''
"""


# The last time something happened to a charger (a signing, an audited refusal): answer
# the time when it is within the interval (nothing written), else record ``now`` when asked,
# with the interval as TTL so the key goes by itself. The nodes' clock decides, as for the
# windows; Redis's TTL only collects the key.
_SINCE = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(ARGV[1]) - tonumber(last) < tonumber(ARGV[2]) then return last end
if ARGV[4] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) end
return false
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000) + 1)


class _Breaker:
    """Whether to ask Redis now: not for ``retry`` seconds after a failure. Logs each
    change (down, back) once, not once per request."""

    def __init__(self, what: str, retry: float = RETRY_SECONDS) -> None:
        self.what = what
        self.retry = retry
        self._down_until: float | None = None

    def closed(self) -> bool:
        return self._down_until is None or time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning(
                "redis unreachable; limits decided on this node",
                limits=self.what,
                error=type(exc).__name__,
            )
        self._down_until = time.monotonic() + self.retry

    def ok(self) -> None:
        if self._down_until is not None:
            log.info("redis reachable again; limits shared", limits=self.what)
            self._down_until = None


class SlidingWindows:
    """Sliding windows of ``limit`` attempts per ``window`` seconds in Redis, one per key
    (the in-process :class:`LoginThrottle`'s rule, cluster-wide). Raises RedisError; the
    callers below decide what an unreachable Redis means."""

    def __init__(self, redis: Redis, prefix: str, limit: int, window: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limit = limit
        self.window = window
        self._script = redis.register_script(_WINDOW)
        self._ids = itertools.count()
        self._tag = secrets.token_hex(4)  # members are unique across nodes

    async def _run(self, name: str, now: float, record: bool) -> tuple[float | None, int]:
        admitted, kth, count = await self._script(
            keys=[key(self.prefix, name)],
            args=[
                repr(now),
                repr(now - self.window),
                self.limit,
                _ms(self.window),
                "1" if record else "0",
                f"{self._tag}.{next(self._ids)}",
            ],
        )
        if admitted:
            return None, int(count)
        return max((float(kth) - now) + self.window, 0.001), int(count)

    async def check(self, name: str, now: float) -> float | None:
        """Record an attempt; None if admitted, else seconds to wait (nothing recorded)."""
        return (await self._run(name, now, record=True))[0]

    async def blocked(self, name: str, now: float) -> float | None:
        """Seconds to wait before the next attempt would be admitted, or None; records
        nothing."""
        return (await self._run(name, now, record=False))[0]

    async def fill(self, name: str, now: float) -> tuple[bool, bool]:
        """Record a failure: (recorded, the window is now full)."""
        wait, count = await self._run(name, now, record=True)
        return wait is None, wait is None and count >= self.limit


class SharedLoginThrottle:
    """Login attempts per client address, cluster-wide; this node's own window while Redis
    is unreachable (see the module docstring)."""

    def __init__(self, redis: Redis, limit: int, now: Callable[[], float]) -> None:
        self.limit = limit
        self.windows = SlidingWindows(redis, "login", limit, 60.0)
        self.local = LoginThrottle(limit, 60.0)
        self.now = now
        self._breaker = _Breaker("login")

    async def check(self, address: str) -> float | None:
        now = self.now()
        if self._breaker.closed():
            try:
                wait = await self.windows.check(address, now)
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.ok()
                return wait
        return self.local.check(address, now)


class SharedAuthFailures:
    """Failed charger authentications per identity and per source, cluster-wide, with the
    alert's quiet period shared too (one alert per subject and hour for the cluster). The
    in-process :class:`AuthFailures` while Redis is unreachable."""

    def __init__(
        self,
        redis: Redis,
        per_identity: int,
        per_source: int,
        window: float,
        now: Callable[[], float],
        quiet: float = 3600.0,
    ) -> None:
        self.redis = redis
        self.window = window
        self.quiet = quiet
        self.now = now
        self.identities = SlidingWindows(redis, "auth:id", per_identity, window)
        self.sources = SlidingWindows(redis, "auth:src", per_source, window)
        self.local = AuthFailures(per_identity, per_source, window, quiet)
        self._breaker = _Breaker("charger authentication")

    async def blocked(self, identity: str, source: str) -> float | None:
        """Seconds to wait if the identity or the source has used up its failures."""
        now = self.now()
        if self._breaker.closed():
            try:
                waits = [
                    await self.identities.blocked(identity, now),
                    await self.sources.blocked(source, now),
                ]
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.ok()
                found = [w for w in waits if w is not None]
                return max(found) if found else None
        return self.local.blocked(identity, source, now)

    async def failed(self, identity: str, source: str) -> list[Exhausted]:
        """Count a failure; the windows it filled outside their quiet period."""
        now = self.now()
        if self._breaker.closed():
            try:
                filled = []
                for windows, name, subject in (
                    (self.identities, identity, identity),
                    (self.sources, source, f"client:{source}"),
                ):
                    _, full = await windows.fill(name, now)
                    if full and await self.redis.set(
                        key("auth:reported", subject), b"1", nx=True, px=_ms(self.quiet)
                    ):
                        filled.append(Exhausted(subject, windows.limit, self.window))
            except (RedisError, OSError) as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.ok()
                return filled
        return self.local.failed(identity, source, now)


class SharedDownloadCaps:
    """The download server's global and per-site caps as leases in Redis.

    The same interface as the server's in-process caps (``acquire(site)`` -> None or the
    full cap's name, ``release(site)``, ``active``), called from its threads with the
    synchronous Redis client: a blocked call costs one download thread at most the client's
    timeout, never the event loop. Leases this node holds are interchangeable per site, so
    ``release(site)`` frees any one of them. A thread renews them all every third of the
    lease; :meth:`close` stops it (a killed node simply stops renewing).
    """

    def __init__(
        self,
        redis: SyncRedis,
        max_concurrent: int,
        max_per_site: int,
        now: Callable[[], float] = time.time,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.redis = redis
        self.max = max_concurrent
        self.max_site = max_per_site
        self.now = now
        self.lease = lease
        self._acquire = redis.register_script(_ACQUIRE)
        self._lock = threading.Lock()
        self._held: defaultdict[str | None, list[str]] = defaultdict(list)
        self._tag = secrets.token_hex(6)
        self._ids = itertools.count()
        self._breaker = _Breaker("downloads")
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="download-leases")
        self._renewer.daemon = True
        self._renewer.start()

    @property
    def active(self) -> int:
        """Slots this node holds (its downloads sending a body)."""
        with self._lock:
            return sum(len(ids) for ids in self._held.values())

    @staticmethod
    def _keys(site: str | None) -> list[str]:
        keys = [key("downloads", "all")]
        if site is not None:
            keys.append(key("downloads", "site", site))
        return keys

    def acquire(self, site: str | None) -> str | None:
        """None if a slot was taken, else which cap is full ("global", "site", or
        :data:`UNREACHABLE` while Redis does not answer)."""
        if not self._breaker.closed():
            return UNREACHABLE
        lease = f"{self._tag}.{next(self._ids)}"
        now = self.now()
        try:
            full = self._acquire(
                keys=self._keys(site),
                args=[
                    repr(now),
                    repr(now + self.lease),
                    self.max,
                    self.max_site,
                    lease,
                    _ms(self.lease),
                ],
            )
        except (RedisError, OSError) as exc:
            self._breaker.failed(exc)
            return UNREACHABLE
        self._breaker.ok()
        if full:
            return bytes(full).decode() if isinstance(full, bytes) else str(full)
        with self._lock:
            self._held[site].append(lease)
        return None

    def release(self, site: str | None) -> None:
        with self._lock:
            ids = self._held.get(site)
            if not ids:
                return
            lease = ids.pop()
            if not ids:
                del self._held[site]
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                for name in self._keys(site):
                    pipe.zrem(name, lease)
                pipe.execute()
        except (RedisError, OSError) as exc:  # it lapses within one lease
            log.warning("download slot not released; it lapses", error=type(exc).__name__)

    def renew(self) -> None:
        """Push the expiry of every lease this node holds one lease ahead (only leases still
        there: one that lapsed meanwhile may have been given to another node)."""
        with self._lock:
            held = [(site, lease) for site, ids in self._held.items() for lease in ids]
        if not held:
            return
        expires = self.now() + self.lease
        with self.redis.pipeline(transaction=True) as pipe:
            touched: set[str] = set()
            for site, lease in held:
                for name in self._keys(site):
                    pipe.zadd(name, {lease: expires}, xx=True)
                    touched.add(name)
            for name in touched:
                pipe.pexpire(name, _ms(self.lease))
            pipe.execute()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.renew()
            except (RedisError, OSError) as exc:
                log.warning("download leases not renewed", error=type(exc).__name__)
            except Exception:  # never let the renewer die silently
                log.exception("download lease renewal failed")

    def close(self) -> None:
        """Stop renewing and release what is still held (a clean stop)."""
        self._stop.set()
        self._renewer.join(timeout=5)
        with self._lock:
            held = [(site, lease) for site, ids in self._held.items() for lease in ids]
            self._held.clear()
        if not held:
            return
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                for site, lease in held:
                    for name in self._keys(site):
                        pipe.zrem(name, lease)
                pipe.execute()
        except (RedisError, OSError):
            pass  # they lapse within one lease


class SharedImportSlots:
    """Firmware imports at once (``EVOTA_FIRMWARE_IMPORT_MAX_CONCURRENT``) for the cluster:
    one lease per running import in ``evota:imports``, renewed by a task of the import every
    third of the lease, so a node that dies mid-import frees its slot within one lease.
    :meth:`hold` is :class:`evota.firmware.importer.ImportSlots`; Redis unreachable fails
    closed (see the module docstring)."""

    def __init__(self, redis: Redis, now: Callable[[], float], lease: float = LEASE_SECONDS):
        self.redis = redis
        self.now = now
        self.lease = lease
        self.key = key("imports")
        self._acquire = redis.register_script(_ACQUIRE)
        self._tag = secrets.token_hex(6)
        self._ids = itertools.count()
        self._breaker = _Breaker("firmware imports")
        self.held: set[str] = set()  # this node's leases (its running imports)

    async def acquire(self, limit: int) -> str:
        """Take a slot: its lease. FetchError BUSY when ``limit`` imports run in the
        cluster, UNAVAILABLE while Redis does not answer."""
        if not self._breaker.closed():
            raise _import_unavailable()
        lease = f"{self._tag}.{next(self._ids)}"
        now = self.now()
        try:
            full = await self._acquire(
                keys=[self.key],
                args=[repr(now), repr(now + self.lease), limit, 0, lease, _ms(self.lease)],
            )
        except (RedisError, OSError) as exc:
            self._breaker.failed(exc)
            raise _import_unavailable() from None
        self._breaker.ok()
        if full:
            raise FetchError(
                FetchProblem.BUSY,
                f"{limit} imports are running in the cluster (the limit); "
                "try again when one has finished",
            )
        self.held.add(lease)
        return lease

    async def release(self, lease: str) -> None:
        self.held.discard(lease)
        try:
            await self.redis.zrem(self.key, lease)
        except (RedisError, OSError) as exc:  # it lapses within one lease
            log.warning("import slot not released; it lapses", error=type(exc).__name__)

    async def renew(self, lease: str) -> bool:
        """Push the lease one lease ahead; False if it lapsed meanwhile (not re-added: its
        slot may have gone to another import)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {lease: self.now() + self.lease}, xx=True)
            pipe.zscore(self.key, lease)
            pipe.pexpire(self.key, _ms(self.lease))
            _, score, _ = await pipe.execute()
        return score is not None

    async def _keep(self, lease: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await self.renew(lease):
                    log.warning("import slot lapsed while the import runs", lease=lease)
                    return
            except (RedisError, OSError) as exc:
                raise_if_cancelled()
                log.warning("import slot not renewed", error=type(exc).__name__)
            raise_if_cancelled()

    @contextlib.asynccontextmanager
    async def hold(self, limit: int) -> AsyncIterator[None]:
        """A slot while the block runs (renewed meanwhile, released after)."""
        lease = await self.acquire(limit)
        keeper = asyncio.create_task(self._keep(lease), name="import-lease")
        try:
            yield
        finally:
            await stop_tasks([keeper], "import lease")
            await self.release(lease)


def _import_unavailable() -> FetchError:
    return FetchError(
        FetchProblem.UNAVAILABLE,
        "imports cannot be counted across the cluster now (Redis unreachable); try again shortly",
    )


class SharedSignings:
    """The SignCertificate interval per charger for the cluster, and the one audited refusal
    per charger and interval (:class:`evota.control.certificates.SignIntervals`). Each
    answer is True (admitted; recorded when asked), False (within the interval: refused) or
    None (Redis unreachable: the caller decides with this node's own memory)."""

    def __init__(self, redis: Redis, interval: float, now: Callable[[], float]) -> None:
        self.redis = redis
        self.interval = interval
        self.now = now
        self._since = redis.register_script(_SINCE)
        self._breaker = _Breaker("certificate signing")

    async def _ask(self, name: str, record: bool) -> bool | None:
        if not self._breaker.closed():
            return None
        try:
            last = await self._since(
                keys=[name],
                args=[repr(self.now()), repr(self.interval), _ms(self.interval), int(record)],
            )
        except (RedisError, OSError) as exc:
            self._breaker.failed(exc)
            return None
        self._breaker.ok()
        return last is None

    async def may_sign(self, charger_id: str) -> bool | None:
        """Whether no signing for the charger is within the interval (records nothing)."""
        return await self._ask(key("sign", charger_id), record=False)

    async def signing(self, charger_id: str) -> bool | None:
        """Record a signing unless one is within the interval (atomic: of two nodes
        asking at once one gets True)."""
        return await self._ask(key("sign", charger_id), record=True)

    async def refusal_audited(self, charger_id: str) -> bool | None:
        """Record an audited refusal unless one is within the interval."""
        return await self._ask(key("sign", "refused", charger_id), record=True)

    async def lift(self, charger_id: str) -> None:
        """A renewal asked by evota: the charger's next CSR is not held back, on any node."""
        try:
            await self.redis.delete(key("sign", charger_id))
        except (RedisError, OSError) as exc:
            log.warning("signing interval not lifted in redis", error=type(exc).__name__)


def sync_client(url: str, *, timeout: float = 2.0) -> SyncRedis:
    """The synchronous client for the download threads, with the same bounded timeouts as
    :func:`evota.cluster.redis.connect`. A blocking pool: a wave of download threads waits
    briefly for a connection instead of failing (which would read as Redis unreachable)."""
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry_on_timeout=False,
        max_connections=64,
        timeout=timeout,
    )
    return SyncRedis(connection_pool=pool)


class SharedLimits:
    """Every cluster-wide limit of one node, on one Redis (built by the runtime in cluster
    mode; single-node mode keeps the in-process limits and builds none of this)."""

    def __init__(
        self,
        url: str,
        *,
        login_per_minute: int,
        auth_per_identity: int,
        auth_per_source: int,
        auth_window: float,
        download_max: int,
        download_max_per_site: int,
        now: Callable[[], float],
        lease: float = LEASE_SECONDS,
        sign_interval: float = 600.0,
    ) -> None:
        self.redis = connect(url)
        self.login = SharedLoginThrottle(self.redis, login_per_minute, now)
        self.auth_failures = SharedAuthFailures(
            self.redis, auth_per_identity, auth_per_source, auth_window, now
        )
        self.downloads = SharedDownloadCaps(
            sync_client(url), download_max, download_max_per_site, now, lease
        )
        self.imports = SharedImportSlots(self.redis, now, lease)
        self.signings = SharedSignings(self.redis, sign_interval, now)

    async def close(self) -> None:
        await asyncio.to_thread(self.downloads.close)
        self.downloads.redis.close()
        await self.redis.aclose()
