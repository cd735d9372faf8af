"""evota.periodic: background work repeated on an interval, a failing run retried."""

from __future__ import annotations

import asyncio

from evota.periodic import Periodic

from .support import until


async def test_runs_repeat_a_failure_does_not_end_them_and_stop_ends_the_task() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the database is down")

    periodic = Periodic("test", work)
    periodic.start(0.01)
    periodic.start(0.01)  # a second start does not start a second task
    await until(lambda: len(calls) >= 3)  # the first run raised, the next ones still came
    assert periodic.running
    await periodic.stop()
    assert not periodic.running
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen


async def test_an_interval_of_zero_never_runs() -> None:
    async def work() -> None:
        raise AssertionError("never called")

    periodic = Periodic("never", work)
    periodic.start(0)
    assert not periodic.running
    await periodic.stop()
