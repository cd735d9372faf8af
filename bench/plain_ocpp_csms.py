"""Baseline central system for bench/gateway.py: the ``ocpp`` package written plainly.

This is the shape the ``ocpp`` package's documentation and examples show: ``websockets.serve``
with subprotocol ``ocpp1.6``, one ``ocpp.v16.ChargePoint`` subclass per connection with
``@on`` handlers, schema validation left on (the default). It ignores charger auth.

The one deliberate difference from the example: logging is not set to INFO, because the
``ocpp`` package logs every message at INFO and the benchmark would then measure the logger.

With ``--protocol ocpp2.0.1`` it is the same with ``ocpp.v201.ChargePoint`` (the 2.0.1
handlers the benchmark needs: BootNotification, Heartbeat, StatusNotification,
TransactionEvent).

Usage: python bench/plain_ocpp_csms.py --port 9000 [--host 127.0.0.1] [--protocol ocpp1.6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as BaseChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, RegistrationStatus
from ocpp.v201 import ChargePoint as BaseChargePoint201
from ocpp.v201 import call_result as call_result201

log = logging.getLogger("plain_ocpp_csms")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class ChargePoint(BaseChargePoint):
    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **kwargs):
        return call_result.BootNotification(
            current_time=now_iso(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **kwargs):
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str, **kwargs):
        return call_result.StatusNotification()


class ChargePoint201(BaseChargePoint201):
    @on("BootNotification")
    def on_boot_notification(self, charging_station: dict, reason: str, **kwargs):
        return call_result201.BootNotification(
            current_time=now_iso(), interval=300, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **kwargs):
        return call_result201.Heartbeat(current_time=now_iso())

    @on("StatusNotification")
    def on_status_notification(self, **kwargs):
        return call_result201.StatusNotification()

    @on("TransactionEvent")
    def on_transaction_event(self, event_type: str, **kwargs):
        if kwargs.get("id_token"):
            return call_result201.TransactionEvent(id_token_info={"status": "Accepted"})
        return call_result201.TransactionEvent()


async def on_connect(websocket) -> None:
    if not websocket.subprotocol:
        # websockets completes the handshake without a subprotocol when none matches.
        await websocket.close()
        return
    charge_point_id = websocket.request.path.rstrip("/").rsplit("/", 1)[-1]
    kind = ChargePoint201 if websocket.subprotocol == "ocpp2.0.1" else ChargePoint
    cp = kind(charge_point_id, websocket)
    with contextlib.suppress(websockets.exceptions.ConnectionClosed):
        await cp.start()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--protocol", default="ocpp1.6", choices=("ocpp1.6", "ocpp2.0.1"))
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper())

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)

    async with websockets.serve(on_connect, args.host, args.port, subprotocols=[args.protocol]):
        print(f"plain ocpp central system listening on {args.host}:{args.port}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
