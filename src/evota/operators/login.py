"""Login throttling decisions: account lockout and the per-address rate limit. Pure.

Two brakes on password guessing. The lockout is per account and survives restarts (its
state lives in the ``users`` row): after ``max_failures`` consecutive failures the account
refuses every attempt, even the right password, until the lockout ends; a success resets
the count. The rate limit is per client address, in memory on one node (a cluster keeps the
same windows in Redis, :mod:`evota.cluster.limits`): a sliding window (:mod:`evota.pacing`)
of ``limit`` attempts per ``window`` seconds, checked before any password is hashed, so a
flood costs no Argon2 time. Callers pass the time in; nothing here reads a clock or touches
storage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from evota.pacing import Pace


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int
    lockout: timedelta


@dataclass(frozen=True, slots=True)
class LoginState:
    """An account's failure count and lockout, as stored on the user."""

    failed: int = 0
    locked_until: datetime | None = None


def is_locked(state: LoginState, now: datetime) -> bool:
    return state.locked_until is not None and now < state.locked_until


def after_failure(state: LoginState, now: datetime, policy: LockoutPolicy) -> LoginState:
    """The state after a failed attempt; the failure that reaches the limit locks.

    An attempt while locked changes nothing (it is refused before any check). Once a lockout
    has ended the count starts again from zero, so every lockout costs a guesser
    ``max_failures`` attempts.
    """
    if is_locked(state, now):
        return state
    failed = state.failed + 1
    if failed >= policy.max_failures:
        return LoginState(0, now + policy.lockout)
    return LoginState(failed, None)


def after_success(_state: LoginState) -> LoginState:
    return LoginState(0, None)


def admit(
    times: tuple[float, ...], now: float, limit: int, window: float = 60.0
) -> tuple[bool, tuple[float, ...], float]:
    """Sliding-window decision (:mod:`evota.pacing`): (admitted, the new window, seconds to
    wait if refused).

    ``times`` are the admitted attempts so far, oldest first. Refused attempts are not
    added, so a client that keeps hammering gets ``limit`` attempts per window, no fewer.
    The pace sees each attempt's offset from ``now`` and ``now`` as 0: an attempt counts
    while ``now - t < window`` (one rounding, whatever the clock's magnitude), and the next
    free moment is the wait itself.
    """
    pace = Pace.per_window(limit, window)
    offsets = [t - now for t in times]
    inside = set(pace.recent(offsets, 0.0))
    recent = tuple(t for t, offset in zip(times, offsets, strict=True) if offset in inside)
    wait = pace.next_free(offsets, 0.0)
    if wait is not None:
        return False, recent, max(wait, 0.001)
    return True, (*recent, now)[-limit:], 0.0


class LoginThrottle:
    """The rate limit's state: one window per client address, bounded in memory.

    When more than ``max_keys`` addresses are tracked, the least recently seen are dropped
    (an address that vanished from the table starts with a fresh window, which only errs
    towards letting someone in; the account lockout still holds).
    """

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    def check(self, key: str, now: float) -> float | None:
        """Record an attempt from ``key``; None if admitted, else seconds to wait."""
        ok, times, retry_after = admit(self._windows.get(key, ()), now, self.limit, self.window)
        self._windows[key] = times
        self._windows.move_to_end(key)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return None if ok else retry_after

    def blocked(self, key: str, now: float) -> float | None:
        """Seconds ``key`` must wait before its next attempt would be admitted, or None;
        records nothing (for callers that count only failures, such as charger keys)."""
        ok, _, retry_after = admit(self._windows.get(key, ()), now, self.limit, self.window)
        return None if ok else retry_after

    def __len__(self) -> int:
        return len(self._windows)
