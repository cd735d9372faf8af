"""Account lockout and the per-address login rate limit: pure decisions, property-tested."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from evota.operators import login as lg

T0 = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)
POLICY = lg.LockoutPolicy(max_failures=3, lockout=timedelta(minutes=15))


def test_the_failure_that_reaches_the_limit_locks_and_the_lock_ends():
    s = lg.LoginState()
    s = lg.after_failure(s, T0, POLICY)
    s = lg.after_failure(s, T0, POLICY)
    assert s == lg.LoginState(2, None) and not lg.is_locked(s, T0)
    s = lg.after_failure(s, T0, POLICY)
    assert s == lg.LoginState(0, T0 + timedelta(minutes=15))
    assert lg.is_locked(s, T0 + timedelta(minutes=14, seconds=59))
    assert not lg.is_locked(s, T0 + timedelta(minutes=15))
    # failures while locked change nothing; after the lock the count starts again
    assert lg.after_failure(s, T0 + timedelta(minutes=1), POLICY) == s
    later = T0 + timedelta(minutes=16)
    assert lg.after_failure(s, later, POLICY) == lg.LoginState(1, None)


def test_success_resets_the_count():
    assert lg.after_success(lg.LoginState(2, None)) == lg.LoginState()


# An attempt: minutes since the previous one, and whether the password was right.
attempts = st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=60)


@settings(max_examples=300)
@given(attempts, st.integers(1, 6), st.integers(1, 30))
def test_lockout_matches_a_direct_model(seq, max_failures, lock_minutes):
    """Against a from-scratch model: an attempt is refused iff it falls within
    ``lockout`` of the moment the ``max_failures``-th consecutive counted failure happened;
    refused attempts do not count, a counted success resets the streak."""
    policy = lg.LockoutPolicy(max_failures, timedelta(minutes=lock_minutes))
    state = lg.LoginState()
    now = T0
    streak = 0
    lock_start: datetime | None = None
    for gap, right in seq:
        now += timedelta(minutes=gap)
        model_locked = lock_start is not None and now < lock_start + policy.lockout
        assert lg.is_locked(state, now) == model_locked
        if model_locked:
            continue  # refused before the password is checked
        if right:
            state = lg.after_success(state)
            streak = 0
        else:
            state = lg.after_failure(state, now, policy)
            streak += 1
            if streak == max_failures:
                lock_start, streak = now, 0
        assert state.failed == streak < max_failures


@settings(max_examples=300)
@given(
    st.lists(st.floats(0, 30, allow_nan=False), max_size=80),
    st.integers(1, 8),
    st.floats(1, 60, allow_nan=False),
)
def test_rate_window_admits_at_most_limit_per_window_and_no_fewer(gaps, limit, window):
    times: tuple[float, ...] = ()
    now = 1000.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        ok, times, retry_after = lg.admit(times, now, limit, window)
        in_window = [t for t in admitted if now - t < window]
        # maximal: refused exactly when `limit` admitted attempts are still in the window
        assert ok == (len(in_window) < limit)
        if ok:
            admitted.append(now)
            assert retry_after == 0
        else:
            assert 0 < retry_after <= window
            assert retry_after == max(window - (now - in_window[-limit]), 0.001)
            # waiting as told is enough (give or take float rounding; the API rounds up)
            assert lg.admit(times, now + retry_after + 1e-6, limit, window)[0]
        assert len(times) <= limit
    # never more than `limit` admitted in any window
    for i, t in enumerate(admitted):
        assert len([u for u in admitted[i:] if u - t < window]) <= limit


def test_rate_window_is_exact_at_its_edge():
    """The configured window to the last bit, and an attempt counts while ``now - t <
    window``: the rule does not drift with float rounding or the clock's magnitude."""
    # 0.1 * 3 / 3 rounds above 0.1; the attempts at 0 leave a 0.1 s window at 0.1 exactly.
    assert lg.admit((0.0, 0.0, 0.0), 0.1, 3, 0.1) == (True, (0.1,), 0.0)
    # 1000 + (1 + 2**-52) rounds to 1001, yet at 1001 the attempt is 2**-52 s inside.
    assert lg.admit((1000.0,), 1001.0, 1, 1 + 2**-52) == (False, (1000.0,), 0.001)


def test_throttle_is_per_address_and_bounded():
    throttle = lg.LoginThrottle(limit=2, window=60, max_keys=3)
    assert throttle.check("a", 0) is None
    assert throttle.check("a", 1) is None
    assert throttle.check("a", 2) == 58
    assert throttle.check("b", 2) is None  # another address has its own window
    assert throttle.check("a", 60.5) is None  # the first attempt left the window
    for key in ("c", "d", "e"):
        throttle.check(key, 61)
    assert len(throttle) == 3
