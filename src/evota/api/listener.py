"""The HTTP listener's protocol: uvicorn's h11 protocol with a deadline for request heads.

uvicorn closes idle keep-alive connections but sets no timer before a request head is
complete: a connection that sends nothing, or one header byte every few seconds, stays open
forever, and a few thousand of them exhaust the process's file descriptors, which the OCPP
gateway and the firmware download listener share. Here, as on those listeners, a request
head must be complete within ``HEAD_TIMEOUT`` seconds in total from the connection (or from
the previous response), and at most ``MAX_PENDING`` connections may be waiting for a head:
a new one evicts the oldest, so real requests (whose heads arrive in milliseconds) are
served while junk connections are held. Bodies are bounded by :mod:`evota.api.limits`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEAD_TIMEOUT", "MAX_PENDING", "guarded_h11"]

HEAD_TIMEOUT: Final = 10.0
MAX_PENDING: Final = 512


def guarded_h11(
    head_timeout: float = HEAD_TIMEOUT, max_pending: int = MAX_PENDING
) -> type[H11Protocol]:
    """A protocol class (``uvicorn.Config(http=...)``) with its own set of pending
    connections, so each server (and each test's runtime) counts its own."""
    pending: dict[Any, None] = {}  # insertion order: the oldest first

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # a complete head (or the peer is done)
                self._head_arrived()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_head()  # keep-alive: the next head has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_arrived()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._head_arrived()
            pending[self] = None
            while len(pending) > max_pending:
                oldest = next(iter(pending))
                oldest._head_arrived()
                oldest.transport.close()
            self._head_timer = self.loop.call_later(head_timeout, self._head_too_slow)

        def _head_arrived(self) -> None:
            pending.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            pending.pop(self, None)
            if not self.transport.is_closing():
                self.transport.close()

    GuardedH11Protocol.pending = pending  # type: ignore[attr-defined]
    return GuardedH11Protocol


def pending_connections(protocol: Any) -> int:
    """How many connections of a :func:`guarded_h11` class wait for a request head."""
    return len(protocol.pending)
