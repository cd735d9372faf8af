"""What unauthenticated peers may cost: the pre-auth connection pool and the failed-key throttle.

Plain data structures with the time passed in; the gateway does the closing and the alerting.

**Pre-auth pool.** A socket that has not completed the upgrade with valid credentials holds a
file descriptor and websockets' parser state. The pool caps them overall and per source
(an IPv4 address, an IPv6 /64). When a cap is passed, the *oldest* pre-auth connection (of
that source, then overall) is dropped to make room if it has been waiting at least
``min_age`` seconds: a real charger's handshake takes milliseconds, so sockets held open
cannot lock it out. If even the oldest is younger, the newcomer is refused instead (503), so
a reconnect storm of real chargers never drops handshakes that are about to complete; they
retry with their backoff. Junk from one source only ever evicts its own kind, because the
per-source cap is below the global one.

**Failed keys.** Failed authentications (unknown identity, wrong key) are counted per charger
identity and per source in the sliding windows of :mod:`evota.operators.login`; while either
is full the handshake is answered 429 before any database lookup or key check. The failure
that fills a window is reported once per quiet period (for the ``charger_auth_failures``
alert), so a long attack is one alert per hour and subject, not one per minute.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from evota.operators.login import LoginThrottle

T = TypeVar("T", bound=Hashable)


def source_of(host: str) -> str:
    """The key limits count a peer by: its IPv4 address, or the /64 of an IPv6 address (one
    subscriber usually holds a whole /64, so per-address limits there would be no limit)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``fd00::/8``); raises ValueError
    naming the bad one."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def is_trusted(host: str, proxies: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in proxies)


def client_source(peer_host: str, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The source the limits count a charger by. Behind a trusted proxy (a TLS terminator for
    security profile 2) every charger arrives from the proxy's address, so its limits would
    be the whole fleet's: there the right-most ``X-Forwarded-For`` address that a trusted
    proxy did not add is the charger's. From anyone else the header is ignored, so a client
    cannot choose the address it is counted by."""
    if not forwarded_for or not is_trusted(peer_host, proxies):
        return source_of(peer_host)
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the chain: count by the proxy itself
        if not is_trusted(hop, proxies):
            return source_of(hop)
    return source_of(peer_host)


class PreAuthPool(Generic[T]):
    """Connections not yet upgraded and authenticated, oldest first, overall and per source."""

    def __init__(self, max_total: int, max_per_source: int, min_age: float = 2.0) -> None:
        if not 1 <= max_per_source <= max_total:
            raise ValueError("need 1 <= max_per_source <= max_total")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.min_age = min_age
        self._all: dict[T, tuple[str, float]] = {}  # item -> (source, opened at)
        self._by_source: dict[str, dict[T, None]] = {}

    def add(self, item: T, source: str, now: float, per_source: bool = True) -> list[T]:
        """Track ``item``; returns the connections to drop so both caps hold: older ones, or
        ``item`` itself (then last) when those over the cap are all younger than ``min_age``.
        ``per_source`` False (a trusted proxy, which carries many chargers) applies only the
        total cap."""
        self._all[item] = (source, now)
        group = self._by_source.setdefault(source, {})
        group[item] = None
        victims: list[T] = []
        caps: list[tuple[Mapping[T, object], int]] = [(self._all, self.max_total)]
        if per_source:
            caps.insert(0, (group, self.max_per_source))
        for members, cap in caps:
            while len(members) > cap:
                oldest = next(iter(members))
                if now - self._all[oldest][1] < self.min_age:
                    self.discard(item)
                    return [*victims, item]
                self.discard(oldest)
                victims.append(oldest)
        return victims

    def discard(self, item: T) -> None:
        entry = self._all.pop(item, None)
        if entry is None:
            return
        source = entry[0]
        group = self._by_source[source]
        del group[item]
        if not group:
            del self._by_source[source]

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, item: object) -> bool:
        return item in self._all

    def count(self, source: str) -> int:
        return len(self._by_source.get(source, ()))


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A failure that filled a window: what the alert names."""

    subject: str  # the charger identity, or ``client:<source>``
    failures: int
    window: float


class SharedFailures(Protocol):
    """The failed-key throttle kept outside the process (in a cluster:
    :class:`evota.cluster.limits.SharedAuthFailures`), the same rules as
    :class:`AuthFailures` with the clock its own."""

    async def blocked(self, identity: str, source: str) -> float | None: ...

    async def failed(self, identity: str, source: str) -> list[Exhausted]: ...


class AuthFailures:
    """Failed charger authentications per identity and per source (sliding windows)."""

    def __init__(
        self,
        per_identity: int,
        per_source: int,
        window: float,
        quiet: float = 3600.0,
        max_keys: int = 10_000,
    ) -> None:
        self.window = window
        self.quiet = quiet
        self.max_keys = max_keys
        self.identities = LoginThrottle(per_identity, window, max_keys)
        self.sources = LoginThrottle(per_source, window, max_keys)
        self._reported: OrderedDict[str, float] = OrderedDict()  # subject -> quiet until

    def blocked(self, identity: str, source: str, now: float) -> float | None:
        """Seconds to wait if the identity or the source has used up its failures, else None."""
        waits = [
            w
            for w in (self.identities.blocked(identity, now), self.sources.blocked(source, now))
            if w is not None
        ]
        return max(waits) if waits else None

    def failed(self, identity: str, source: str, now: float) -> list[Exhausted]:
        """Count a failure; the windows it filled that are not in a quiet period (what the
        caller alerts on)."""
        filled = []
        for throttle, key, subject in (
            (self.identities, identity, identity),
            (self.sources, source, f"client:{source}"),
        ):
            if throttle.check(key, now) is None and throttle.blocked(key, now) is not None:
                if self._reported.get(subject, now) > now:
                    continue
                self._reported[subject] = now + self.quiet
                self._reported.move_to_end(subject)
                while len(self._reported) > self.max_keys:
                    self._reported.popitem(last=False)
                filled.append(Exhausted(subject, throttle.limit, self.window))
        return filled
