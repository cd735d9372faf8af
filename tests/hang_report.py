"""Where a hung test waits: the stacks of its asyncio tasks, written before the timeout.

pytest-timeout fails a hung test from inside the event loop's ``select``, which says nothing
of what the test was waiting for. A few seconds before the timeout this plugin writes every
pending asyncio task's stack to stderr (in the failed test's report), so a hang seen once on
a busy run can be found at its cause.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from typing import Any

import pytest

from evota.cluster.redis import awaiting

EARLY = 5.0  # seconds before the timeout


def pending_tasks() -> list[asyncio.Task[Any]]:
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]


def dump(nodeid: str) -> None:
    out = sys.__stderr__
    if out is None:
        return
    lines = [f"=== {nodeid}: about to time out; pending asyncio tasks ==="]
    for task in pending_tasks():
        lines.append(f"--- {task.get_name()}: {task.get_coro()!r}")
        lines.extend(f"    {line}" for line in awaiting(task.get_coro()))
    # a fixture's teardown is an async generator the task awaits through asend(), which
    # hides the chain: every suspended async generator's own chain
    for gen in gc.get_objects():
        if isinstance(gen, types.AsyncGeneratorType) and gen.ag_await is not None:
            lines.append(f"--- async generator {gen.ag_code.co_qualname}")
            lines.extend(f"    {line}" for line in awaiting(gen))
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        lines.append(f"--- thread {names.get(ident, ident)}")
        lines.extend(
            f"    {f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-8:]
        )
    out.write("\n".join(lines) + "\n")
    out.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    timeout = None
    if marker is not None:
        timeout = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    if timeout is None:
        timeout = item.config.getini("timeout") or 0
    timeout = float(timeout)
    timer = None
    if timeout > EARLY:
        timer = threading.Timer(timeout - EARLY, dump, (item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
