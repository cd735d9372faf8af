"""Messages between nodes are sealed: Redis carries them, it does not vouch for them.

A routed CALL makes the owner node send any OCPP command to a charger, a leader call runs a
runner action under an operator's name, a relayed event moves a firmware job. Without a seal,
whoever can write to Redis could do all of that without an API token. Every such message
carries an HMAC-SHA256 over its canonical JSON with the cluster key (``cluster.key`` in the
data directory, one of the files every node shares: evota.cluster.node.SHARED_FILES), the
time it was sealed, and is refused when forged, older than ``max_age`` or seen before.
Presence notices (who holds a charger, close a replaced connection) are not sealed: a Redis
writer can already deny service by deleting keys, and those notices can do no more.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

KEY_FILE = "cluster.key"
MAC = "mac"
AT = "at"


def _canonical(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)


class Seal:
    def __init__(
        self,
        key: bytes,
        *,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.time,
        remember: int = 100_000,
    ) -> None:
        self._key = key
        self.max_age = max_age
        self._clock = clock
        self._remember = remember
        self._seen: OrderedDict[str, float] = OrderedDict()  # "<t>|<id>" -> expiry
        self.refused = 0

    def _mac(self, msg: dict[str, Any]) -> str:
        return hmac.new(self._key, _canonical(msg), hashlib.sha256).hexdigest()

    def seal(self, msg: dict[str, Any], *, default: Callable[[Any], Any] | None = None) -> bytes:
        """The message as JSON bytes with its time and MAC (``default`` as for orjson)."""
        body = {**msg, AT: self._clock()}
        if default is not None:  # what the receiver will parse is what the MAC covers
            body = orjson.loads(orjson.dumps(body, default=default))
        body[MAC] = self._mac(body)
        return orjson.dumps(body)

    def open(self, data: bytes) -> dict[str, Any] | None:
        """The message if it is genuine, fresh and new; None otherwise (counted)."""
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self.refused += 1
            return None
        mac = msg.pop(MAC, None)
        at = msg.get(AT)
        now = self._clock()
        if (
            not isinstance(mac, str)
            or not hmac.compare_digest(mac, self._mac(msg))
            or not isinstance(at, int | float)
            or abs(now - at) > self.max_age
            or not self._first_time(msg, now)
        ):
            self.refused += 1
            return None
        return msg

    def tag(self, data: bytes) -> bytes:
        """A MAC for bytes that travel without an envelope (a stream entry's fields)."""
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def check(self, data: bytes, tag: object) -> bool:
        good = isinstance(tag, bytes) and hmac.compare_digest(tag, self.tag(data))
        if not good:
            self.refused += 1
        return good

    def _first_time(self, msg: dict[str, Any], now: float) -> bool:
        """A message with an id is taken once within ``max_age`` (a replay is refused)."""
        ident = msg.get("id")
        if ident is None:
            return True
        seen = f"{msg.get('t')}|{ident}"
        while self._seen:  # forget what has expired (oldest first), and beyond the bound
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now and len(self._seen) < self._remember:
                break
            del self._seen[oldest]
        if seen in self._seen:
            return False
        self._seen[seen] = now + 2 * self.max_age
        return True
