"""A node's stop ends even when a library swallows a cancel or a task ignores it.

Two busy full runs hung stopping a node: a background loop whose Redis or database call
took the cancel in kept looping. The loops re-check at the top of every iteration
(``raise_if_cancelled``), and ``stop_tasks`` bounds the wait and says where a task waits.
"""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from evota.cluster.redis import awaiting, raise_if_cancelled, stop_tasks


async def _swallows_a_cancel(started: asyncio.Event, swallow: bool = True) -> None:
    """What a client library can do: take the cancel in and return normally."""
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        if not swallow:
            raise


async def test_a_loop_that_rechecks_ends_when_its_call_swallowed_the_cancel():
    started = asyncio.Event()
    rounds = 0

    async def loop(check: bool) -> None:
        nonlocal rounds
        while True:
            if check:
                raise_if_cancelled()
            rounds += 1
            await _swallows_a_cancel(started, swallow=rounds == 1)

    task = asyncio.create_task(loop(check=True))
    await started.wait()
    await stop_tasks([task], "test", timeout=5)
    assert task.cancelled() and rounds == 1

    # the same loop without the check goes on after its cancel (what hung the stops)
    started.clear()
    rounds = 0
    runaway = asyncio.create_task(loop(check=False))
    await started.wait()
    started.clear()
    runaway.cancel()
    await started.wait()  # a second round began after the cancel
    assert rounds == 2 and not runaway.done()
    runaway.cancel()  # the second round lets a cancel through
    await asyncio.wait([runaway])
    assert runaway.cancelled()


async def test_a_task_that_ignores_its_cancel_is_logged_with_where_it_waits():
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop_tasks([task], "test part", timeout=0.2)  # returns: the stop goes on
    (entry,) = [e for e in logs if e["event"] == "a task did not stop when cancelled"]
    assert entry["part"] == "test part" and entry["task"] == "stubborn"
    assert "stubborn" in entry["awaiting"] and "locks.py" in entry["awaiting"]
    release.set()
    await asyncio.wait([task])


async def test_awaiting_follows_the_chain_to_the_innermost_wait():
    async def inner() -> None:
        await asyncio.sleep(1)

    async def outer() -> None:
        await inner()

    coro = outer()
    try:
        coro.send(None)  # runs to the sleep's future
        chain = awaiting(coro)
        assert [c.rsplit(" ", 1)[-1] for c in chain[:3]] == ["outer", "inner", "sleep"]
        assert chain[-1].startswith("awaits <")  # the future the sleep waits on
    finally:
        coro.close()
