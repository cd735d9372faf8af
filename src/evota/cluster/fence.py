"""Fenced writes: a deposed runner leader's transactions fail instead of landing.

Every takeover increments ``cluster_leader.token`` (evota.cluster.leader); the node's term is
the token it took over with. A leader can be deposed without knowing it yet (its lock session
cut by a partition, a long pause, SIGSTOP then SIGCONT): until its next session check its
runners would go on writing next to the new leader's. So in cluster mode the runners write
through :func:`fenced`, an engine whose every commit first runs, in the same transaction,

    SELECT token FROM cluster_leader WHERE id = 1 FOR SHARE

and compares it with this node's term (:func:`refusal`, pure). A mismatch raises
:class:`Deposed` and the transaction rolls back. Why it holds: the takeover's
``UPDATE … token = token + 1`` needs the row's exclusive lock, so it waits for fenced commits
that already passed the check, and every check after it sees the new token. The check is
made just before COMMIT, not at the first statement, so the share lock is held for one round
trip and a takeover never waits for a long runner transaction. The same statement sets
``idle_in_transaction_session_timeout`` for this transaction, so a leader that stalls between
the check and its COMMIT cannot hold the takeover off for longer than ``IDLE_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

IDLE_TIMEOUT: Final = "5s"
CHECK: Final = (
    "SELECT token, set_config('idle_in_transaction_session_timeout', "
    f"'{IDLE_TIMEOUT}', true) FROM cluster_leader WHERE id = 1 FOR SHARE"
)
_TERM: Final = "evota_fence_term"  # the term a transaction began in (Connection.info)


class Deposed(Exception):
    """This node no longer leads: its runner's transaction was rolled back, nothing landed."""


def refusal(began: int, term: int, current: int | None) -> str | None:
    """Why a commit must be refused (None: it may land).

    ``began``: this node's term when the transaction began; ``term``: its term now;
    ``current``: ``cluster_leader.token`` read under the share lock (None: no row). A
    transaction lands only if it began and ends in one term and that term is the current one.
    """
    if term <= 0:
        return "this node does not lead"
    if began != term:
        return f"the transaction began in term {began}, this node's term is now {term}"
    if current != term:
        return f"this node's term is {term}, the cluster's is {current}"
    return None


def fenced(
    engine: AsyncEngine,
    term: Callable[[], int],
    deposed: Callable[[str], None] | None = None,
) -> AsyncEngine:
    """``engine`` (sharing its pool) with every commit fenced by ``term()``, this node's term.

    ``deposed`` is told why a commit was refused (the leadership checks its session at once
    and steps down, stopping the runners). PostgreSQL only: the single node is never fenced.
    """
    copy = engine.execution_options()  # events on the copy are its own; the pool is shared

    def begin(conn: Connection) -> None:
        conn.info[_TERM] = term()

    def commit(conn: Connection) -> None:
        began = conn.info.pop(_TERM, 0)
        now = term()
        try:
            current = conn.exec_driver_sql(CHECK).scalar() if now > 0 and began == now else None
        except BaseException:
            _roll_back(conn)
            raise
        why = refusal(began, now, None if current is None else int(current))
        if why is not None:
            _roll_back(conn)
            if deposed is not None:
                deposed(why)
            raise Deposed(f"runner write refused: {why}")

    def rollback(conn: Connection) -> None:
        # Also called while SQLAlchemy closes a connection whose statement was cancelled:
        # an invalidated connection raises on ``info``, and an error here would replace the
        # cancel and keep the cancelled runner's loop going (its stop hung). The invalidated
        # connection's ``info`` goes with it; ``begin`` sets the term again anyway.
        with contextlib.suppress(Exception):
            conn.info.pop(_TERM, None)

    sync: Any = copy.sync_engine
    event.listen(sync, "begin", begin)
    event.listen(sync, "commit", commit)
    event.listen(sync, "rollback", rollback)
    return copy


def _roll_back(conn: Connection) -> None:
    """Roll the refused transaction back on the connection itself: SQLAlchemy deactivates a
    transaction whose commit raised and then returns the connection to the pool without its
    reset, which would leave the writes (and the share lock) open on a pooled connection."""
    try:
        conn.engine.dialect.do_rollback(conn.connection)
    except Exception:  # a broken connection: the pool's pre-ping discards it
        conn.invalidate()
